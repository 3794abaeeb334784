"""Put compare tables from runs that differ only in their training seed side by side.

    python benchmarks/seed_spread.py [--out F] seed0=metrics/compare.json seed1=../fsrfer-seed1/metrics/compare.json ...

Each file is a compare table ({"table": ...}) or an evaluate table. Writes --out (default
benchmarks/results/default_seed_spread.json): per split, method and scale the accuracy of each
run, their mean and their spread (max - min, in points), and prints the spreads as a table.
benchmarks/seed_spread.sh and teacher_seed_spread.sh make the runs.
"""

import json
import sys
from pathlib import Path

from components.io import atomic_write_text

OUT = Path(__file__).parent / "results" / "default_seed_spread.json"


def spread(tables: dict[str, dict]) -> dict:
    """{split: {method: {scale: {"runs": {name: acc %}, "mean": %, "spread": points}}}} over
    the cells every table has."""
    tables = {name: t.get("table", t) for name, t in tables.items()}
    first = next(iter(tables.values()))
    out: dict = {}
    for split, methods in first.items():
        for method, scales in methods.items():
            for scale in scales:
                runs = {}
                for name, table in tables.items():
                    cell = table.get(split, {}).get(method, {}).get(scale)
                    if cell is not None:
                        runs[name] = round(100 * cell["accuracy"], 1)
                if len(runs) == len(tables):
                    values = list(runs.values())
                    out.setdefault(split, {}).setdefault(method, {})[scale] = {
                        "runs": runs, "mean": round(sum(values) / len(values), 1),
                        "spread": round(max(values) - min(values), 1)}
    return out


def main(argv: list[str]) -> None:
    out = OUT
    if argv[:1] == ["--out"]:
        out, argv = Path(argv[1]), argv[2:]
    tables = {}
    for arg in argv:
        name, _, path = arg.partition("=")
        if not path:
            raise SystemExit(f"seed_spread: expected name=path, got {arg!r}")
        tables[name] = json.loads(Path(path).read_text())
    result = spread(tables)
    atomic_write_text(out, json.dumps({"runs": list(tables), "table": result}, indent=1) + "\n")
    for split, methods in result.items():
        scales = list(next(iter(methods.values())))
        print(f"{split}: spread over {len(tables)} seeds (max - min, points)")
        print(f"  {'method':<16}" + "".join(f"{s:>7}" for s in scales) + "   largest")
        for method, cells in methods.items():
            row = [cells[s]["spread"] for s in scales]
            print(f"  {method:<16}" + "".join(f"{v:>7.1f}" for v in row) + f"{max(row):>10.1f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
