"""The promotion rule (components/registry.py) on versions' evidence: tags with their run's metrics."""

from __future__ import annotations

from components.config import PromotionRule
from components.registry import VALID_DATA_TAG, decide_promotion, scale_metrics

RULE = PromotionRule(min_gain=0.0, tolerance=0.02)
SYNTHETIC = {"data.dataset": "rafdb", VALID_DATA_TAG: "a1" * 32}
FERPLUS = {"data.dataset": "ferplus", VALID_DATA_TAG: "f2" * 32}


def tags(data: dict[str, str] = SYNTHETIC, **acc: float) -> dict[str, str]:
    """A version's tags: validation accuracy per scale, validated on `data` (default: one synthetic split)."""
    out = {f"valid_acc_{k}": f"{v:.6f}" for k, v in acc.items()}
    out["scales"] = ",".join(acc)
    return out | data


def test_first_version_with_complete_metrics_is_promoted():
    promoted, reason = decide_promotion(tags(x2=0.5, x4=0.4, x8=0.2), None, RULE)
    assert promoted and "no champion" in reason


def test_missing_or_broken_metrics_are_never_promoted():
    partial = tags(x2=0.5, x4=0.4, x8=0.2)
    del partial["valid_acc_x8"]
    assert decide_promotion(partial, None, RULE) == (False, "missing validation metrics for ['x8']: not promoted")
    broken = tags(x2=0.5, x4=0.4, x8=0.2) | {"valid_acc_x4": "nan"}
    promoted, reason = decide_promotion(broken, None, RULE)
    assert not promoted and "x4" in reason
    assert not decide_promotion({}, None, RULE)[0]


def test_better_mean_with_no_large_drop_is_promoted():
    promoted, reason = decide_promotion(tags(x2=0.52, x4=0.45, x8=0.21), tags(x2=0.53, x4=0.40, x8=0.20), RULE)
    assert promoted, reason  # x2 drops 0.01 < tolerance, mean rises


def test_a_scale_worse_than_the_tolerance_blocks_promotion():
    promoted, reason = decide_promotion(tags(x2=0.40, x4=0.60, x8=0.40), tags(x2=0.50, x4=0.40, x8=0.20), RULE)
    assert not promoted and "x2 -0.1000" in reason


def test_equal_or_lower_mean_is_not_promoted_and_min_gain_applies():
    champion = tags(x2=0.5, x4=0.4, x8=0.2)
    assert not decide_promotion(champion, champion, RULE)[0]
    slightly_better = tags(x2=0.51, x4=0.41, x8=0.21)
    assert decide_promotion(slightly_better, champion, RULE)[0]
    assert not decide_promotion(slightly_better, champion, PromotionRule(min_gain=0.05, tolerance=0.02))[0]


def test_comparison_uses_the_scales_both_versions_report():
    promoted, reason = decide_promotion(tags(x2=0.6, x4=0.5, x8=0.3), tags(x2=0.5, x4=0.4), RULE)
    assert promoted and "x2,x4" in reason
    assert not decide_promotion(tags(x3=0.6), tags(x2=0.5), RULE)[0]


def test_scale_metrics_ignores_mean_and_other_tags():
    got = scale_metrics({"valid_acc_x2": "0.5", "valid_acc_mean": "0.4", "test_acc_x2": "0.9", "param.k": "2"})
    assert got == {"x2": 0.5}


def test_a_version_validated_on_other_data_is_never_compared_with_the_champion():
    champion = tags(x2=0.50, x4=0.40, x8=0.20)  # synthetic default
    ferplus = tags(FERPLUS, x2=0.75, x4=0.60, x8=0.45)  # far "better", but on other faces
    promoted, reason = decide_promotion(ferplus, champion, RULE)
    assert not promoted and "other data" in reason and "ferplus" in reason and "rafdb" in reason
    worse_ferplus = tags(FERPLUS, x2=0.30, x4=0.20, x8=0.10)  # nor is a worse one judged against it
    assert "other data" in decide_promotion(worse_ferplus, champion, RULE)[1]
    # a champion registered before versions recorded their validation data is not comparable either
    legacy = {k: v for k, v in champion.items() if k != VALID_DATA_TAG}
    assert "unrecorded" in decide_promotion(tags(x2=0.9, x4=0.9, x8=0.9), legacy, RULE)[1]
    # the first version of a dataset (its own registered model) needs no champion to compare with
    assert decide_promotion(ferplus, None, RULE)[0]


def test_same_data_better_is_promoted_and_worse_is_not():
    champion = tags(FERPLUS, x2=0.70, x4=0.55, x8=0.40)
    assert decide_promotion(tags(FERPLUS, x2=0.71, x4=0.57, x8=0.42), champion, RULE)[0]
    promoted, reason = decide_promotion(tags(FERPLUS, x2=0.69, x4=0.54, x8=0.40), champion, RULE)
    assert not promoted and "does not beat it" in reason


def test_a_versions_evidence_is_its_tags_with_its_runs_metrics_over_them(tmp_path, monkeypatch):
    """version_evidence, in a real sqlite store: the registration run's valid_acc_* metrics and `scales`
    param over the version's tags (a version without a run has its tags only); a store error is raised,
    never taken for missing numbers."""
    import mlflow
    import pytest
    from mlflow.exceptions import MlflowException

    from components.registry import version_evidence

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_registered_model("m")
    run = client.create_run("0", run_name="register-m")
    client.log_metric(run.info.run_id, "valid_acc_x2", 0.75)
    client.log_metric(run.info.run_id, "train_loss", 0.1)
    client.log_param(run.info.run_id, "scales", "x2")
    by_hand = client.create_model_version("m", "file:///a", tags=tags(x2=0.5))
    registered = client.create_model_version("m", "file:///b", run_id=run.info.run_id,
                                             tags=SYNTHETIC | {"valid_acc_x2": "0.1"})
    assert version_evidence(client, by_hand) == tags(x2=0.5)
    evidence = version_evidence(client, registered)
    assert scale_metrics(evidence) == {"x2": 0.75} and evidence["scales"] == "x2" and "train_loss" not in evidence
    assert evidence[VALID_DATA_TAG] == SYNTHETIC[VALID_DATA_TAG]
    # its run gone from the store (`mlflow gc`): the tags are all there is
    elsewhere = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'other.db'}")
    assert version_evidence(elsewhere, registered) == dict(registered.tags)
    # a store that does not answer: its error, not a rejection for "missing validation metrics"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with pytest.raises(MlflowException) as info:
        version_evidence(mlflow.MlflowClient("http://127.0.0.1:9"), registered)
    assert info.value.error_code != "RESOURCE_DOES_NOT_EXIST"
