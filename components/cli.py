"""`fsrfer <stage>`: the entry point dvc.yaml (and the Prefect flows, through DVC) call.

Each sub-command loads its stage's section of params.yaml into the stage's typed config,
runs the stage function and prints the summary it returns as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from components import config
from components.config import PromoteConfig, describe_params, load_stage_config, parse_overrides, shared_sections
from components.data.synthetic import SyntheticConfig, write_synthetic_rafdb
from components.io import BadInput, atomic_write_text
from components.registry import promote
from components.serving.predict import predict
from components.stages import (
    compare,
    evaluate,
    features,
    gme_teacher,
    gme_train,
    isr_fer,
    multiscale_cnn,
    prepare,
    register,
    register_gmenet,
    teacher,
    train_fsr,
    tune,
)


def _cmd_synth(args: argparse.Namespace) -> dict:
    cfg = SyntheticConfig(train_per_class=args.train_per_class, test_per_class=args.test_per_class, seed=args.seed)
    return {"out": args.out, "counts": write_synthetic_rafdb(args.out, cfg)}


def _cmd_predict(args: argparse.Namespace) -> dict:
    return predict(args.inputs, args.out, model=args.model, alias=args.alias, min_face_size=args.min_face_size,
                   upsample=args.upsample, every=args.every)


def _cmd_table(args: argparse.Namespace) -> str:
    from pathlib import Path

    from components.metrics import format_table

    path = Path(args.metrics)
    if not path.is_file():
        raise BadInput(f"{path}: no accuracy table; run the pipeline (the compare stage writes it, evaluate "
                       "metrics/evaluate.json)")
    result = json.loads(path.read_text())
    return f"Accuracy (%) per scale, {path} (x1 = HR faces; mean LR = over the LR scales):\n\n" + format_table(
        result.get("table", result))


def _cmd_promote(args: argparse.Namespace) -> dict:
    from dataclasses import replace


    cfg = load_stage_config(PromoteConfig, "promote", args.params)
    overrides = {k: v for k, v in (("model_name", args.model), ("version", args.version)) if v}
    return promote(replace(cfg, **overrides))


@dataclass(frozen=True)
class Stage:
    """One DVC stage: its params section, typed config, function, help text and extra configs."""

    section: str
    config: type
    run: Callable[..., dict]
    help: str
    extra: dict = field(default_factory=dict)


def _stage(stage: Stage):
    """A sub-command that loads params.yaml[stage.section] into stage.config and calls stage.run.

    stage.extra: keyword -> (config class, section) of further configs the stage is handed
    (the tune stage gets train_fsr's config as the base of its trials).
    """

    def run(args: argparse.Namespace) -> dict:
        overrides = parse_overrides(args.set)
        configs = {stage.section: stage.config} | {sec: cls for cls, sec in stage.extra.values()}
        used = set(configs) | {name for cls in configs.values() for name in shared_sections(cls)}
        if set(overrides) - used:
            raise BadInput(f"--set: `fsrfer {stage.section}` reads params sections {sorted(used)}, "
                           f"not {sorted(set(overrides) - used)}")
        kwargs = {name: load_stage_config(cls, sec, args.params, overrides) for name, (cls, sec) in stage.extra.items()}
        return stage.run(load_stage_config(stage.config, stage.section, args.params, overrides), **kwargs)

    return run


# The DVC stages, in pipeline order (dvc.yaml); one module each, named after the stage.
STAGES = {stage.section: stage for stage in [
    Stage("prepare", config.PrepareConfig, prepare.prepare, "align, degrade at every scale and pack the dataset"),
    Stage("teacher", config.TeacherConfig, teacher.train_teacher,
          "train the frozen FER model (CovPoolFER) on the HR training split"),
    Stage("multiscale_cnn", config.MultiscaleCNNConfig, multiscale_cnn.train_multiscale_cnn,
          "the teacher's network fine-tuned on HR and every LR scale (FSR-FER's frozen model, a yardstick)"),
    Stage("features", config.FeaturesConfig, features.cache_features,
          "cache the frozen extractor's features of HR and every LR scale"),
    Stage("tune", config.FSRTuneConfig, tune.tune_fsr, "Ray Tune search over sigma, r, k, p (opt-in: tune.enabled)",
          {"base": (config.FSRConfig, "train_fsr")}),
    Stage("train_fsr", config.FSRConfig, train_fsr.train_fsr, "train the FSR-FER GAN on Ray Train (several workers)"),
    Stage("evaluate", config.EvaluateConfig, evaluate.evaluate, "per-scale accuracy table, plots and confusion matrices"),
    Stage("register", config.RegisterConfig, register.register,
          "log FSR-FER as an MLflow pyfunc and register a new version as `challenger`"),
    Stage("gme_teacher", config.GMETrainConfig, gme_teacher.train_gme_teacher, "train GME-Net's HR teacher on Ray Train"),
    Stage("gme_train", config.GMETrainConfig, gme_train.train_gmenet,
          "train the GME-Net LR student (CE + attention-similarity distillation) on Ray Train"),
    Stage("isr_fer", config.ISRConfig, isr_fer.train_isr,
          "yardstick: an image super-resolution network (L1) whose output the teacher classifies"),
    Stage("compare", config.CompareConfig, compare.compare,
          "the evaluate table with GME-Net's and the yardsticks' columns, and parameters/FLOPs of every path"),
    Stage("register_gmenet", config.RegisterGMEConfig, register_gmenet.register_gmenet,
          "log GME-Net as an MLflow pyfunc and register a new version of `gmenet` as `challenger`"),
]}


def stage_description(spec: Stage) -> str:
    """What `fsrfer <stage> --help` says the stage does: the first paragraph of its module's docstring."""
    import inspect

    doc = inspect.getmodule(spec.run).__doc__ or spec.help
    return doc.strip().split("\n\n")[0]


def stage_params(spec: Stage) -> str:
    """The params the stage reads (generated from its config), defaults of the config: params.yaml's values win."""
    parts = [describe_params(spec.config, spec.section)]
    parts += [f"read as {kw}: " + describe_params(cls, sec) for kw, (cls, sec) in spec.extra.items()]
    return "\n".join(parts) + "\n\nValues above are the config's defaults; params.yaml's (and --set's) replace them."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fsrfer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write the embedded synthetic face-expression set (RAF-DB layout)")
    synth.add_argument("--out", default="data/raw/synthetic")
    synth.add_argument("--train-per-class", type=int, default=160)
    synth.add_argument("--test-per-class", type=int, default=40)
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(run=_cmd_synth)

    for spec in STAGES.values():
        stage = sub.add_parser(spec.section, help=f"{spec.help} (params.yaml: {spec.section})",
                               description=stage_description(spec), epilog=stage_params(spec),
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        stage.add_argument("--params", default="params.yaml")
        stage.add_argument("--summary", help="also write the stage's summary (JSON) to this file")
        stage.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                           help="override a params value for this run only (repeatable; e.g. tune.enabled=true). "
                                "Outside DVC: for runs that `dvc repro` must reproduce, edit params.yaml")
        stage.set_defaults(run=_stage(spec))
    table = sub.add_parser("table", help="print the accuracy table (methods x scales, every split) of a run")
    table.add_argument("--metrics", default="metrics/compare.json",
                       help="the compare stage's table (every method) or the evaluate stage's (metrics/evaluate.json)")
    table.set_defaults(run=_cmd_table)
    promote = sub.add_parser("promote", help="move alias `champion` to the challenger if it beats the champion "
                                              "(rule: components/registry.py; params.yaml: promote)")
    promote.add_argument("--params", default="params.yaml")
    promote.add_argument("--summary", help="also write the decision (JSON) to this file")
    promote.add_argument("--model", help="registered model name (default: params.yaml promote.model_name)")
    promote.add_argument("--version", help="version to consider (default: the one with alias challenger)")
    promote.set_defaults(run=_cmd_promote)

    predicting = sub.add_parser("predict", help="find every face in photos, folders or videos and classify it with a "
                                          "registered model (annotated images, faces.csv/json, summary.json)")
    predicting.add_argument("inputs", nargs="+", metavar="PHOTO|FOLDER|VIDEO")
    predicting.add_argument("--out", required=True, help="folder for annotated/, faces.csv, faces.json, summary.json")
    predicting.add_argument("--model", default="fsrfer", help="registered model name (fsrfer, gmenet, ...)")
    predicting.add_argument("--alias", default="champion")
    predicting.add_argument("--min-face-size", type=int, default=12, help="smallest face MTCNN looks for, px (>= 12)")
    predicting.add_argument("--upsample", type=float, default=1.0,
                     help="detect on the image enlarged by this factor (finds faces below 12 px; slower)")
    predicting.add_argument("--every", type=float, default=1.0, help="video: seconds between sampled frames")
    predicting.set_defaults(run=_cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        summary = args.run(args)
    except BadInput as err:
        print(f"fsrfer {args.command}: error: {err}", file=sys.stderr)
        return 2
    text = summary if isinstance(summary, str) else json.dumps(summary, indent=2, default=str)
    print(text)
    if getattr(args, "summary", None):
        atomic_write_text(args.summary, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
