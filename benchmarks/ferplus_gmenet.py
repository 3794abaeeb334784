"""GME-Net on real FER+ (issue: GME-Net): the gme_teacher and gme_train stages as the
pipeline runs them (Ray Train, here 1 worker on 1 CPU), on the prepared FER+ store of a
checkout where `dvc repro prepare` ran with profiles/ferplus.yaml (48x48 grey, 8 classes,
x2..x8). Prints the per-scale FER+ valid accuracy of the teacher (HR and bicubic-upscaled
LR input) and the student, their parameters and FLOPs; writes benchmarks/.cache/ferplus_gmenet[_<tag>]_its<student its>.json
(a later teacher with the same options replaces the cached one, which `teacher its 0` reuses).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ferplus_gmenet.py <FER+ checkout> <teacher its> <student its>

The ablation of the attention-similarity loss: a student with lambda_at = 0 (cross-entropy
only) against the same frozen teacher (teacher its 0 reuses benchmarks/.cache/ferplus_gme_teacher.pt):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ferplus_gmenet.py <FER+ checkout> 0 3000 0

key=value arguments after the counts override both networks' config (teacher.key=value or
student.key=value one of them):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ferplus_gmenet.py <FER+ checkout> 2000 3000 \\
        targets=votes balance_power=0 student.init_from_teacher=true

Distillation from the CovPoolFER teacher on the HR face (kd_weight, both networks):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ferplus_gmenet.py <FER+ checkout> 2000 3000 \\
        targets=votes balance_power=0 student.init_from_teacher=true kd_teacher=<FER+ checkout>/models/teacher.pt kd_weight=0.5

The student distilled from the multi-scale CNN on its own LR face instead (kd_input: lr; the teacher as above,
`teacher its 0` reuses it):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ferplus_gmenet.py <FER+ checkout> 0 6000 \\
        targets=votes balance_power=0 student.init_from_teacher=true kd_teacher=<FER+ checkout>/models/teacher.pt kd_weight=0.5 \\
        student.kd_teacher=<FER+ checkout>/models/multiscale_cnn.pt student.kd_input=lr
"""
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="raygf", dir="/tmp"))
cache = Path("benchmarks/.cache").resolve()
cache.mkdir(parents=True, exist_ok=True)
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{cache / 'ferplus_gmenet_mlflow.db'}")

from components.config import GMETrainConfig, load_yaml
from components.stages.gme_teacher import train_gme_teacher
from components.stages.gme_train import train_gmenet

root, teacher_its, student_its = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
args = sys.argv[4:]
lambda_at = float(args.pop(0)) if args and "=" not in args[0] else 5.0
# key=value (both networks), teacher.key=value or student.key=value: YAML 1.2 values over the config below
sets = {"teacher": {}, "student": {}}
for arg in args:
    key, value = arg.split("=", 1)
    who, _, field = key.rpartition(".")
    for part in ([who] if who else ["teacher", "student"]):
        sets[part][field] = load_yaml(value, arg)
sets = {who: {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()} for who, d in sets.items()}
tag = (("" if lambda_at == 5.0 else f"_lambda{lambda_at:g}") + "".join(f"_{a}" for a in args)).replace("/", "_")
tag += f"_its{student_its}"
teacher_tag = "".join(f"_{a}" for a in args if not a.startswith("student.")).replace("/", "_")
base = GMETrainConfig(prepared=f"{root}/data/prepared", storage=str(cache / "ray_ferplus_gmenet"), stem_channels=16,
                      local_channels=(16, 32, 64), global_channels=(16, 32, 64), fusion_dim=128, batch_size=64,
                      lr=2e-3, num_workers=1, cpus_per_worker=1.0, experiment="ferplus-gmenet")
out = {"overrides": args}
start = time.time()
teacher_path = cache / f"ferplus_gme_teacher{teacher_tag}.pt"
if teacher_its:
    teacher = replace(base, out=str(teacher_path), iterations=teacher_its, checkpoint_every=teacher_its // 4,
                      eval_every=teacher_its // 4, run_name="gme_teacher", **sets["teacher"])
    out["teacher"] = train_gme_teacher(teacher) | {"seconds": round(time.time() - start)}
    print(json.dumps(out["teacher"], indent=1), flush=True)
elif not teacher_path.is_file():
    sys.exit(f"{teacher_path}: no cached teacher to reuse; run with teacher its > 0 first")
start = time.time()
student = replace(base, teacher=str(teacher_path), out=str(cache / f"ferplus_gmenet{tag}.pt"), iterations=student_its,
                  lambda_at=lambda_at, checkpoint_every=student_its // 4, eval_every=student_its // 4,
                  run_name=f"gme_train{tag}"[:60], **sets["student"])
out["student"] = train_gmenet(student) | {"seconds": round(time.time() - start)}
print(json.dumps(out["student"], indent=1), flush=True)
(cache / f"ferplus_gmenet{tag}.json").write_text(json.dumps(out, indent=1))
