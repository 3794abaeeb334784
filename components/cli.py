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


def _cmd_prepare(args: argparse.Namespace) -> dict:
    from components.config import PrepareConfig, load_stage_config
    from components.stages.prepare import prepare

    return prepare(load_stage_config(PrepareConfig, "prepare", args.params))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fsrfer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write the embedded synthetic face-expression set (RAF-DB layout)")
    synth.add_argument("--out", default="data/raw/synthetic")
    synth.add_argument("--train-per-class", type=int, default=160)
    synth.add_argument("--test-per-class", type=int, default=40)
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(run=_cmd_synth)

    prep = sub.add_parser("prepare", help="align, degrade at every scale and pack the dataset (params: prepare)")
    prep.add_argument("--params", default="params.yaml")
    prep.set_defaults(run=_cmd_prepare)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        summary = args.run(args)
    except BadInput as err:
        print(f"fsrfer {args.command}: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
