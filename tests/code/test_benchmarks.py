"""The one benchmark command (benchmarks/quick.py): it runs the benchmarks it is asked for as
processes of their own, reads the figures they print, writes them all to --out, and says which
it skipped and why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quick_benchmarks_print_and_write_their_figures(tmp_path):
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "benchmarks/quick.py", "--only", "synth", "gme_step", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert list(results) == ["synth", "gme_step"]
    assert all(r["status"] == "ok" for r in results.values()), results
    synth, gme = results["synth"]["figures"], results["gme_step"]["figures"]
    assert synth["same_bytes"] is True and synth["ratio_per_cpu_vs_one"] > 0
    assert gme["synthetic_test.as_built.seconds_per_step"] > 0 and gme["ferplus_profile.bf16.speedup"] > 0
    # the printed table shows the same figures, one line per benchmark
    lines = done.stdout.splitlines()
    assert lines[0].startswith("synth") and f"same_bytes {synth['same_bytes']}" in lines[0]
    assert lines[1].startswith("gme_step") and f"speedup {gme['synthetic_test.channels_last.speedup']}" in lines[1]


def test_a_benchmark_without_its_inputs_is_skipped_and_says_what_it_needs(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import quick
    finally:
        sys.path.pop(0)
    assert quick.missing_inputs((str(tmp_path / "absent"),)) == [str(tmp_path / "absent")]
    quick.BENCHMARKS["needs_absent"] = (["bench_synth.py"], (str(tmp_path / "absent"),), ())
    try:
        row = quick.run("needs_absent", timeout=10)
    finally:
        del quick.BENCHMARKS["needs_absent"]
    assert row == {"status": "skipped", "why": f"needs {tmp_path / 'absent'}"}


def test_the_seed_spread_of_tables_worked_by_hand():
    """benchmarks/seed_spread.py: per cell the runs' accuracies in %, their mean and max - min; a cell one
    run lacks is left out rather than spread over fewer runs."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import seed_spread
    finally:
        sys.path.pop(0)

    def table(bicubic_x2: float, fsrfer_x2: float | None) -> dict:
        valid = {"bicubic": {"x2": {"accuracy": bicubic_x2}}}
        if fsrfer_x2 is not None:
            valid["fsrfer"] = {"x2": {"accuracy": fsrfer_x2}}
        return {"table": {"valid": valid}}

    got = seed_spread.spread({"seed0": table(0.50, 0.61), "seed1": table(0.53, 0.58), "seed2": table(0.47, 0.60)})
    assert got["valid"]["bicubic"]["x2"] == {"runs": {"seed0": 50.0, "seed1": 53.0, "seed2": 47.0}, "mean": 50.0,
                                             "spread": 6.0}
    assert got["valid"]["fsrfer"]["x2"]["spread"] == 3.0 and got["valid"]["fsrfer"]["x2"]["mean"] == 59.7
    assert "fsrfer" not in seed_spread.spread({"seed0": table(0.5, 0.6), "seed1": table(0.5, None)})["valid"]
