"""The MLflow model registry: new versions enter as `challenger`; a gated rule moves `champion`.

Every registered version carries its validation metrics as version tags
(`valid_acc_x2` ... one per LR scale, `valid_acc_mean` over them), plus data and code
identity (`data_sha256`, `teacher_sha256`, `dvc_lock_sha256`, `git_commit`) and the
training params (`param.<name>`).

Promotion rule (`decide_promotion`): a challenger becomes champion when
  1. every LR scale's validation accuracy is recorded on it (never promote on missing
     metrics), and
  2. there is no champion yet, or, over the scales both versions report,
     mean(challenger) > mean(champion) + min_gain and no scale is worse than the
     champion's by more than `tolerance`.
The decision and its reason are written as version tags (`promotion_decision`,
`promotion_reason`, `promotion_compared_to`) whether or not it promotes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from components.data.records import BadInput

CHALLENGER = "challenger"
CHAMPION = "champion"
METRIC_PREFIX = "valid_acc_"


@dataclass(frozen=True)
class PromotionRule:
    min_gain: float = 0.0  # mean accuracy over LR scales must beat the champion's by more than this
    tolerance: float = 0.02  # no single scale may drop more than this below the champion's


@dataclass(frozen=True)
class PromoteConfig:
    model_name: str = "fsrfer"
    version: str = ""  # "" = the version holding the `challenger` alias
    min_gain: float = 0.0
    tolerance: float = 0.02

    @property
    def rule(self) -> PromotionRule:
        return PromotionRule(self.min_gain, self.tolerance)


def scale_metrics(tags: dict[str, str]) -> dict[str, float]:
    """{'x2': acc, ...} from a version's tags (finite numbers only; `valid_acc_mean` excluded)."""
    out = {}
    for key, value in tags.items():
        if not key.startswith(METRIC_PREFIX) or key == f"{METRIC_PREFIX}mean":
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        if math.isfinite(number):
            out[key[len(METRIC_PREFIX):]] = number
    return out


def decide_promotion(challenger_tags: dict[str, str], champion_tags: dict[str, str] | None,
                     rule: PromotionRule) -> tuple[bool, str]:
    """(promote?, reason) by the rule in this module's docstring."""
    expected = [s for s in challenger_tags.get("scales", "").split(",") if s]
    challenger = scale_metrics(challenger_tags)
    missing = [s for s in expected if s not in challenger] if expected else []
    if not challenger or missing:
        return False, f"missing validation metrics for {missing or 'every scale'}: not promoted"
    if champion_tags is None:
        return True, "no champion yet; all validation metrics present"
    champion = scale_metrics(champion_tags)
    common = sorted(set(challenger) & set(champion), key=lambda s: float(s.lstrip("x")))
    if not common:
        return False, "no scale in common with the champion's metrics: not comparable, not promoted"
    mean_new = sum(challenger[s] for s in common) / len(common)
    mean_old = sum(champion[s] for s in common) / len(common)
    drops = {s: champion[s] - challenger[s] for s in common if champion[s] - challenger[s] > rule.tolerance}
    summary = f"mean valid accuracy over {','.join(common)}: {mean_new:.4f} vs champion {mean_old:.4f}"
    if drops:
        worst = ", ".join(f"{s} -{d:.4f}" for s, d in drops.items())
        return False, f"{summary}; scales worse by more than {rule.tolerance}: {worst}"
    if mean_new <= mean_old + rule.min_gain:
        return False, f"{summary}; does not beat it by more than {rule.min_gain}"
    return True, f"{summary}; no scale worse by more than {rule.tolerance}"


def _alias_version(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def promote(cfg: PromoteConfig) -> dict:
    """Apply the rule to a version of `cfg.model_name` (default: the challenger); tag the decision."""
    import mlflow

    from components.tracking import tracking_uri

    client = mlflow.MlflowClient(tracking_uri())
    if cfg.version:
        candidate = client.get_model_version(cfg.model_name, cfg.version)
    else:
        candidate = _alias_version(client, cfg.model_name, CHALLENGER)
        if candidate is None:
            raise BadInput(f"registered model {cfg.model_name!r} has no version with alias {CHALLENGER!r}")
    champion = _alias_version(client, cfg.model_name, CHAMPION)
    if champion is not None and str(champion.version) == str(candidate.version):
        return {"model": cfg.model_name, "version": int(candidate.version), "promoted": False,
                "reason": "already champion", "champion": int(champion.version)}
    promoted, reason = decide_promotion(candidate.tags, champion.tags if champion else None, cfg.rule)
    tags = {"promotion_decision": "promoted" if promoted else "rejected", "promotion_reason": reason,
            "promotion_compared_to": str(champion.version) if champion else "none"}
    for key, value in tags.items():
        client.set_model_version_tag(cfg.model_name, candidate.version, key, value)
    if promoted:
        client.set_registered_model_alias(cfg.model_name, CHAMPION, candidate.version)
    # versions are ints in the record whatever the store (the REST client returns strings)
    return {"model": cfg.model_name, "version": int(candidate.version), "promoted": promoted, "reason": reason,
            "champion": int(candidate.version) if promoted else (int(champion.version) if champion else None)}
