"""Every speed benchmark at a quick size, in one command, with the ratios benchmarks/README.md records.

Each benchmark runs as a process of its own, one thread (OMP_NUM_THREADS=1, as the recorded
results), at a size that takes seconds to a minute instead of minutes; this script reads the
JSON each one prints and shows its figures in one table. The quick sizes give noisier ratios
than the recorded runs (fewer steps and images); they tell whether a change moved a ratio, and
the full command (README) measures by how much.

    .venv/bin/python benchmarks/quick.py [--only synth teacher_step gme_step ...] [--out results.json]

A benchmark whose inputs are missing is reported as skipped, with what it needs: FER+ under
../shared/data/ferplus (prepare), the main job's outputs (teacher, features, fsr: data/prepared,
models/teacher.pt, data/features).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FERPLUS = REPO.parent / "shared" / "data" / "ferplus"
MAIN_JOB = ("data/prepared/meta.json", "models/teacher.pt", "data/features")

# name: (script and quick arguments, inputs it needs (paths under the repo, or FER+), figures to show)
BENCHMARKS: dict[str, tuple[list[str], tuple[str, ...], tuple[str, ...]]] = {
    "synth": (["bench_synth.py", "--train-per-class", "20", "--test-per-class", "5"], (),
              ("ratio_per_cpu_vs_one", "same_bytes")),
    "prepare": (["bench_prepare.py", "--images", "2000", "--align-images", "100"], ("ferplus",),
                ("degrade_matlab_all_scales_img_per_s", "degrade_ratio_matlab_over_cv2", "align_img_per_s")),
    "teacher": (["bench_teacher.py", "--params", "params.yaml", "--steps", "5"], MAIN_JOB[:1], ("samples_per_s",)),
    "features": (["bench_features.py"], MAIN_JOB[:2], ("ratio_cache_over_bare",)),
    "fsr": (["bench_fsr.py", "--params", "params.yaml", "--iterations", "30"], MAIN_JOB,
            ("plain_pytorch_it_per_s", "ray_1_over_plain", "ray_2_over_1_samples_per_s")),
    "serving": (["bench_serving.py", "--faces", "64"], MAIN_JOB[:2],
                ("paths.bicubic.faces_per_s_batch_64", "paths.fsrfer.ratio_batch_64_over_bicubic",
                 "paths.gmenet.ratio_batch_64_over_bicubic", "paths.isr_fer.ratio_batch_64_over_bicubic")),
    "gan_step": (["bench_gan_step.py", "--steps", "5", "--profile-steps", "2"], MAIN_JOB[1:],
                 ("seconds_per_step", "layout.speedup_channels_last", "share.convolution", "share.data")),
    "teacher_step": (["bench_teacher_step.py", "--steps", "3"], (),
                     ("default_profile.two_eighs.seconds_per_step", "ferplus_profile.two_eighs.seconds_per_step",
                      "ferplus_profile.two_eighs.eig_share", "ferplus_profile.speedup",
                      "ferplus_profile.speedup_bf16", "cpu_native_bf16")),
    "gme_step": (["bench_gme_step.py", "--steps", "4"], (),
                 ("synthetic_test.as_built.seconds_per_step", "synthetic_test.channels_last.speedup",
                  "ferplus_profile.as_built.seconds_per_step", "ferplus_profile.channels_last.speedup",
                  "ferplus_profile.bf16.speedup", "ferplus_profile.teacher_maps_cached.speedup")),
}


def missing_inputs(needs: tuple[str, ...]) -> list[str]:
    paths = [FERPLUS / "FER2013Train" if need == "ferplus" else REPO / need for need in needs]
    return [str(p) for p in paths if not p.exists()]


def last_json(stdout: str) -> dict:
    """The last JSON object a benchmark printed (each ends with json.dumps(..., indent=2))."""
    lines = stdout.splitlines()
    for start in range(len(lines) - 1, -1, -1):
        if lines[start] == "{":
            return json.loads("\n".join(lines[start:]))
    raise ValueError("no JSON object in the benchmark's output")


def figure(result: dict, dotted: str):
    value = result
    for part in dotted.split("."):
        value = value[part]
    return value


def run(name: str, timeout: float) -> dict:
    args, needs, figures = BENCHMARKS[name]
    absent = missing_inputs(needs)
    if absent:
        return {"status": "skipped", "why": f"needs {', '.join(absent)}"}
    env = dict(os.environ, OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0")
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, str(REPO / "benchmarks" / args[0]), *args[1:]], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "why": f"timed out after {timeout:.0f} s"}
    seconds = round(time.perf_counter() - start, 1)
    if done.returncode != 0:
        return {"status": "failed", "why": f"exit {done.returncode}: {done.stderr.strip()[-500:]}", "seconds": seconds}
    try:
        result = last_json(done.stdout)
        return {"status": "ok", "seconds": seconds, "figures": {f: figure(result, f) for f in figures},
                "result": result}
    except (ValueError, KeyError) as err:
        return {"status": "failed", "why": f"unreadable output ({err}): {done.stdout[-500:]}", "seconds": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run these benchmarks only")
    parser.add_argument("--out", help="also write every benchmark's full JSON here")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per benchmark")
    args = parser.parse_args()
    results = {}
    for name in args.only or BENCHMARKS:
        results[name] = run(name, args.timeout)
        row = results[name]
        shown = ", ".join(f"{k} {v}" for k, v in row.get("figures", {}).items()) or row.get("why", "")
        print(f"{name:9s} {row['status']:8s} {row.get('seconds', ''):>7}  {shown}", flush=True)
    if args.out:
        from components.io import atomic_write_text

        atomic_write_text(args.out, json.dumps(results, indent=2))
    return 1 if any(r["status"] == "failed" for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
