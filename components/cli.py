"""`fsrfer <stage>`: the entry point dvc.yaml (and the Prefect flows, through DVC) call.

Each sub-command loads its stage's section of params.yaml into the stage's typed config,
runs the stage function and prints the summary it returns as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from components.data.records import BadInput


def _cmd_synth(args: argparse.Namespace) -> dict:
    from components.data.synthetic import SyntheticConfig, write_synthetic_rafdb

    cfg = SyntheticConfig(train_per_class=args.train_per_class, test_per_class=args.test_per_class, seed=args.seed)
    return {"out": args.out, "counts": write_synthetic_rafdb(args.out, cfg)}


def _stage(module: str, config: str, function: str, section: str, extra: dict | None = None):
    """A sub-command that loads params.yaml[section] into `config` and calls `function`.

    extra: keyword -> (module, config class, section) of further configs the stage is handed
    (the tune stage gets train_fsr's config as the base of its trials).
    """

    def run(args: argparse.Namespace) -> dict:
        import importlib

        from components.config import load_stage_config, parse_overrides

        overrides = parse_overrides(args.set)
        used = {section} | {spec[2] for spec in (extra or {}).values()}
        if set(overrides) - used:
            raise BadInput(f"--set: `fsrfer {section}` reads params sections {sorted(used)}, "
                           f"not {sorted(set(overrides) - used)}")

        def load(mod_name: str, cls: str, sec: str):
            return load_stage_config(getattr(importlib.import_module(mod_name), cls), sec, args.params,
                                     overrides.get(sec))

        kwargs = {name: load(*spec) for name, spec in (extra or {}).items()}
        return getattr(importlib.import_module(module), function)(load(module, config, section), **kwargs)

    return run


def _cmd_promote(args: argparse.Namespace) -> dict:
    from dataclasses import replace

    from components.config import load_stage_config
    from components.registry import PromoteConfig, promote

    cfg = load_stage_config(PromoteConfig, "promote", args.params)
    overrides = {k: v for k, v in (("model_name", args.model), ("version", args.version)) if v}
    return promote(replace(cfg, **overrides))


# stage name -> (module, config class, stage function, help[, extra configs]): the DVC stages, in pipeline order
STAGES = {
    "prepare": ("components.stages.prepare", "PrepareConfig", "prepare",
                "align, degrade at every scale and pack the dataset"),
    "teacher": ("components.stages.teacher", "TeacherConfig", "train_teacher",
                "train the frozen FER model (CovPoolFER) on the HR training split"),
    "features": ("components.stages.features", "FeaturesConfig", "cache_features",
                 "cache the frozen extractor's features of HR and every LR scale"),
    "tune": ("components.stages.tune", "FSRTuneConfig", "tune_fsr",
             "Ray Tune search over sigma, r, k, p (opt-in: tune.enabled)",
             {"base": ("components.stages.train_fsr", "FSRConfig", "train_fsr")}),
    "train_fsr": ("components.stages.train_fsr", "FSRConfig", "train_fsr",
                  "train the FSR-FER GAN on Ray Train (several workers)"),
    "evaluate": ("components.stages.evaluate", "EvaluateConfig", "evaluate",
                 "per-scale accuracy table, plots and confusion matrices"),
    "register": ("components.stages.register", "RegisterConfig", "register",
                 "log FSR-FER as an MLflow pyfunc and register a new version as `challenger`"),
    "gme_teacher": ("components.stages.gmenet", "GMETrainConfig", "train_gme_teacher",
                    "train GME-Net's HR teacher on Ray Train"),
    "gme_train": ("components.stages.gmenet", "GMETrainConfig", "train_gmenet",
                  "train the GME-Net LR student (CE + attention-similarity distillation) on Ray Train"),
    "compare": ("components.stages.compare", "CompareConfig", "compare",
                "the evaluate table with GME-Net's column, and parameters/FLOPs of every path"),
    "register_gmenet": ("components.stages.register", "RegisterGMEConfig", "register_gmenet",
                        "log GME-Net as an MLflow pyfunc and register a new version of `gmenet` as `challenger`"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fsrfer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write the embedded synthetic face-expression set (RAF-DB layout)")
    synth.add_argument("--out", default="data/raw/synthetic")
    synth.add_argument("--train-per-class", type=int, default=160)
    synth.add_argument("--test-per-class", type=int, default=40)
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(run=_cmd_synth)

    for name, (module, config, function, help_text, *extra) in STAGES.items():
        stage = sub.add_parser(name, help=f"{help_text} (params.yaml: {name})")
        stage.add_argument("--params", default="params.yaml")
        stage.add_argument("--summary", help="also write the stage's summary (JSON) to this file")
        stage.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                           help="override a params value for this run only (repeatable; e.g. tune.enabled=true). "
                                "Outside DVC: for runs that `dvc repro` must reproduce, edit params.yaml")
        stage.set_defaults(run=_stage(module, config, function, name, *extra))
    promote = sub.add_parser("promote", help="move alias `champion` to the challenger if it beats the champion "
                                              "(rule: components/registry.py; params.yaml: promote)")
    promote.add_argument("--params", default="params.yaml")
    promote.add_argument("--summary", help="also write the decision (JSON) to this file")
    promote.add_argument("--model", help="registered model name (default: params.yaml promote.model_name)")
    promote.add_argument("--version", help="version to consider (default: the one with alias challenger)")
    promote.set_defaults(run=_cmd_promote)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        summary = args.run(args)
    except BadInput as err:
        print(f"fsrfer {args.command}: error: {err}", file=sys.stderr)
        return 2
    text = json.dumps(summary, indent=2, default=str)
    print(text)
    if getattr(args, "summary", None):
        from components.data.store import atomic_write_text

        atomic_write_text(args.summary, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
