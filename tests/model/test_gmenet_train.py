"""GME-Net on Ray Train with 2 workers on the tiny synthetic run: the HR teacher, then the LR
student distilled from it (the gme_teacher and gme_train stages, as `dvc repro` runs them).
The student beats chance at x8 (8-pixel faces, where the CovPoolFER teacher and the GME
teacher on bicubic input are at chance), on valid + test pooled (196 faces), by chance + 5
points: a margin that held for seeds 0-2 of this exact setting (the measured figures, and
the 100 px variant: benchmarks/README.md, "x8 at the synthetic default's face size")."""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from components.config import GMETrainConfig
from components.data.store import PreparedStore, ScaledFaces
from components.distributed import WorkerContext
from components.io import BadInput
from components.losses import attention_similarity_loss
from components.models.covpool import load_covpool
from components.models.gmenet import GMENet, load_gmenet
from components.models.isr import load_isr, super_resolve
from components.runtime import images_to_tensor, predict_proba
from components.stages.gme_teacher import train_gme_teacher
from components.stages.gme_train import train_gmenet
from components.training.gme import DistillationTask, accuracy_per_scale
from tests.conftest import LINEAGE_TAGS, store_with_train_votes
from tests.model.interrupt import cli_env, kill_mid_run_and_rerun, write_params

CHANCE = 1 / 7
MARGIN = 0.05
TINY_GME = dict(stem_channels=8, local_channels=(8, 16, 24), global_channels=(8, 16, 24), fusion_dim=32,
                batch_size=32, lr=3e-3, num_workers=2, cpus_per_worker=0.5, experiment="test-gmenet")


@pytest.fixture(scope="module")
def gme_teacher_run(tiny_run, ray_session, tmp_path_factory):
    """The HR teacher (gme_teacher stage); (folder, summary, the student's config) for the students trained from it."""
    root = tmp_path_factory.mktemp("gme")
    base = GMETrainConfig(prepared=str(tiny_run.prepared), storage=str(root / "ray"), **TINY_GME)
    teacher_cfg = replace(base, out=str(root / "gme_teacher.pt"), iterations=200, checkpoint_every=100,
                          eval_every=100, run_name="gme_teacher")
    student_cfg = replace(base, teacher=teacher_cfg.out, out=str(root / "gmenet.pt"), iterations=300,
                          checkpoint_every=150, eval_every=150, run_name="gme_train")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        teacher = train_gme_teacher(teacher_cfg)
    return root, teacher, student_cfg


@pytest.fixture(scope="module")
def gme_runs(gme_teacher_run):
    root, teacher, student_cfg = gme_teacher_run
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        student = train_gmenet(student_cfg)
    return root, teacher, student, student_cfg


def test_teacher_and_student_run_on_two_workers_and_report(gme_runs):
    root, teacher, student, _ = gme_runs
    for summary, iterations in ((teacher, 200), (student, 300)):
        assert summary["iterations"] == iterations and summary["resumed_from"] == 0
        assert len(summary["worker_nodes"].split(",")) == 2  # two Ray Train workers
        assert summary["replica_divergence"] == 0.0  # both replicas equal at the last step: gradients all-reduced
        assert summary["params"] > 0 and summary["flops"] > 0
    assert {"valid_acc_x1", "valid_acc_x2", "valid_acc_x8"} <= set(teacher)
    assert {"valid_acc_x2", "valid_acc_x4", "valid_acc_x8", "valid_acc_mean"} <= set(student)
    assert "valid_acc_x1" not in student  # the student is an LR model
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("test-gmenet").experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert {"l_ce", "valid_acc_x1"} <= set(by_name["gme_teacher"].data.metrics)
    assert {"l_ce", "l_at", "valid_acc_x8", "flops"} <= set(by_name["gme_train"].data.metrics)
    assert len(client.get_metric_history(by_name["gme_train"].info.run_id, "l_at")) == 300  # every step, rank 0


def test_a_run_prints_a_progress_line_every_twentieth_of_its_iterations(gme_teacher_run, capfd):
    """What a person watching the stage (terminal, DVC, the Prefect flow log) sees while it trains."""
    root, _, student_cfg = gme_teacher_run
    cfg = replace(student_cfg, iterations=20, checkpoint_every=20, eval_every=10, out=str(root / "progress.pt"),
                  run_name="progress")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        train_gmenet(cfg, runner="local")
    lines = [line for line in capfd.readouterr().out.splitlines() if line.startswith("progress iteration ")]
    assert [int(re.match(r"progress iteration (\d+)/20 \(\d+%\), [\d.]+ it/s: ", line)[1]) for line in lines] == \
        list(range(1, 21))
    assert all("l_ce " in line and "l_at " in line for line in lines)
    assert [line for line in lines if "valid_acc_mean " in line] == [lines[9], lines[19]]  # at each validation


def test_student_beats_chance_at_x8(gme_runs, tiny_run):
    root, _, _, cfg = gme_runs
    model = load_gmenet(root / "gmenet.pt")
    correct = total = 0
    for split in ("valid", "test"):
        data = ScaledFaces(cfg.prepared, split, ["x8"])
        acc = accuracy_per_scale(model, data, torch.device("cpu"))["x8"]
        correct += round(acc * len(data.labels))
        total += len(data.labels)
    assert correct / total > CHANCE + MARGIN, correct / total


@pytest.fixture(scope="module")
def distillation_pair(gme_teacher_run):
    """Two students of the module's teacher, trained by the stage in this process (runner "local") for
    DISTIL_ITERATIONS from the same seed, batches and initial weights: lambda_at = 5 and lambda_at = 0
    (CE only), so lambda is all that differs between the two. {lambda: model path}."""
    root, _, student_cfg = gme_teacher_run
    paths = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        for lam in (5.0, 0.0):
            cfg = replace(student_cfg, lambda_at=lam, iterations=DISTIL_ITERATIONS, checkpoint_every=DISTIL_ITERATIONS,
                          eval_every=DISTIL_ITERATIONS, out=str(root / f"pair_l{lam:g}.pt"), run_name=f"pair_l{lam:g}")
            assert train_gmenet(cfg, runner="local")["iterations"] == DISTIL_ITERATIONS
            paths[lam] = Path(cfg.out)
    return paths


def map_cosine(student: GMENet, teacher: GMENet, data: ScaledFaces, key: str) -> float:
    """Mean over the attention maps (channel and spatial, every block) of the mean over the faces of
    cos(vec(student map on the `key` LR face), vec(teacher map on the matching HR face)): the quantity A-SKD
    raises (1 - attention_similarity_loss / number of maps)."""
    with torch.no_grad():
        _, maps_s = student(images_to_tensor(data.faces[key]), with_attention=True)
        _, maps_t = teacher(images_to_tensor(data.hr), with_attention=True)
    cosines = [F.cosine_similarity(a_s.flatten(1), a_t.flatten(1), dim=1).mean().item()
               for block_s, block_t in zip(maps_s, maps_t, strict=True) for a_s, a_t in zip(block_s, block_t, strict=True)]
    assert len(cosines) == 2 * len(student.cfg.local_channels)  # a channel and a spatial map per attention block
    return float(np.mean(cosines))


# Measured on this config (benchmarks/gme_distillation.py: teacher of seeds 0-2, students of 100 iterations in one
# process), on the 56 valid faces, mean student-teacher map cosine of lambda=5 minus that of lambda=0: seed 0 x2 0.66,
# x4 0.63, x8 0.60 (benchmarks/README.md, "What A-SKD does to the student's maps", for seeds 1 and 2); the margin is
# well inside the smallest gap.
DISTIL_ITERATIONS = 100
MAP_COSINE_MARGIN = 0.3


def test_distillation_brings_the_students_maps_to_the_teachers_at_every_scale(gme_teacher_run, distillation_pair):
    root, _, cfg = gme_teacher_run
    teacher = load_gmenet(root / "gme_teacher.pt")
    distilled, plain = load_gmenet(distillation_pair[5.0]), load_gmenet(distillation_pair[0.0])
    keys = PreparedStore(cfg.prepared).scale_keys
    assert keys == ["x2", "x4", "x8"]
    data = ScaledFaces(cfg.prepared, "valid", keys)
    measured = {k: (map_cosine(distilled, teacher, data, k), map_cosine(plain, teacher, data, k)) for k in keys}
    print("valid map cosine to the teacher, lambda=5 vs lambda=0:",
          {k: f"{a:.3f} vs {b:.3f}" for k, (a, b) in measured.items()})
    for key, (with_at, without_at) in measured.items():
        assert with_at > without_at + MAP_COSINE_MARGIN, (key, measured)


def test_distillation_is_what_the_student_learned_from(gme_runs, distillation_pair):
    root, _, _, _ = gme_runs
    blob = torch.load(root / "gmenet.pt", weights_only=True)
    assert blob["extra"]["train_config"]["lambda_at"] == 5.0 and blob["extra"]["train_config"]["teacher"]
    student, teacher = load_gmenet(root / "gmenet.pt"), load_gmenet(root / "gme_teacher.pt")
    assert student.cfg == teacher.cfg
    assert not np.allclose(student.head[-1].weight.numpy(), teacher.head[-1].weight.numpy())
    # lambda reaches the weights: the CE-only twin (same seed, batches and start) ends elsewhere
    distilled, plain = (load_gmenet(distillation_pair[lam]) for lam in (5.0, 0.0))
    assert torch.load(distillation_pair[0.0], weights_only=True)["extra"]["train_config"]["lambda_at"] == 0.0
    assert not torch.equal(distilled.head[-1].weight, plain.head[-1].weight)
    # and lowers the A-SKD term it weighs, on the training batches (logged by both, every step)
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("test-gmenet").experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    last_l_at = {}
    for name in ("pair_l5", "pair_l0"):
        history = sorted(client.get_metric_history(by_name[name].info.run_id, "l_at"), key=lambda m: m.step)
        assert len(history) == DISTIL_ITERATIONS
        last_l_at[name] = float(np.mean([m.value for m in history[-50:]]))
    assert last_l_at["pair_l5"] < last_l_at["pair_l0"], last_l_at


def test_bad_configs_are_refused(tiny_run, tmp_path):
    with pytest.raises(BadInput, match="no GME-Net teacher file"):
        train_gmenet(GMETrainConfig(prepared=str(tiny_run.prepared), teacher=str(tmp_path / "missing.pt")))
    with pytest.raises(BadInput, match="must be empty"):
        train_gme_teacher(GMETrainConfig(teacher="models/gme_teacher.pt"))
    with pytest.raises(BadInput, match="lambda_at"):
        GMETrainConfig(lambda_at=-1)
    with pytest.raises(BadInput, match="targets"):
        GMETrainConfig(targets="soft")
    with pytest.raises(BadInput, match="balance_power"):
        GMETrainConfig(balance_power=-1)


def _one_worker(cfg: GMETrainConfig, folder: Path, **kw) -> GMETrainConfig:
    return replace(cfg, num_workers=1, cpus_per_worker=1.0, storage=str(folder / "ray"), **kw)


def test_vote_targets_teach_the_votes_not_the_majority_label(gme_teacher_run, tiny_run, tmp_path, monkeypatch):
    """Train votes that all name the next class over: a GME teacher trained on them (`targets: votes`) predicts
    that class on valid + test, where the same teacher on hard labels (the fixture's) predicts the label."""
    root, hard_teacher, student_cfg = gme_teacher_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    shifted = store_with_train_votes(tiny_run.prepared, tmp_path / "shifted",
                                     lambda labels, k: np.eye(k, dtype=np.float32)[(labels + 1) % k])
    cfg = _one_worker(student_cfg, tmp_path, prepared=str(shifted), teacher="", targets="votes", iterations=200,
                      checkpoint_every=200, eval_every=200, out=str(tmp_path / "votes.pt"), run_name="gme_teacher")
    train_gme_teacher(cfg, runner="local")
    model, k = load_gmenet(cfg.out), len(PreparedStore(shifted).classes)
    hard = load_gmenet(Path(hard_teacher["out"]))
    agree = {"votes": {"label": [], "next": []}, "hard": {"label": [], "next": []}}
    for split in ("valid", "test"):
        data = ScaledFaces(str(shifted), split, ["x1"])
        for name, net in (("votes", model), ("hard", hard)):
            pred = predict_proba(net, data.faces["x1"], torch.device("cpu")).argmax(1)
            agree[name]["label"] += list(pred == data.labels)
            agree[name]["next"] += list(pred == (data.labels + 1) % k)
    rate = {name: {t: float(np.mean(v)) for t, v in d.items()} for name, d in agree.items()}
    assert rate["votes"]["next"] > max(2 * CHANCE, rate["votes"]["label"] + 0.2), rate
    assert rate["hard"]["label"] > rate["hard"]["next"] + 0.2, rate


def test_kd_weight_one_teaches_the_kd_teachers_predictions_not_the_votes(gme_teacher_run, tiny_run, tmp_path,
                                                                        monkeypatch):
    """`kd_weight: 1`: the CE target is the CovPoolFER kd_teacher's probabilities on the HR face, so a GME teacher
    trained on votes that all name the next class over predicts what the kd_teacher predicts; with `kd_weight: 0`
    the same run follows the votes (the test above)."""
    _, _, student_cfg = gme_teacher_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    shifted = store_with_train_votes(tiny_run.prepared, tmp_path / "shifted",
                                     lambda labels, k: np.eye(k, dtype=np.float32)[(labels + 1) % k])
    kd_teacher = load_covpool(tiny_run.teacher)
    data = [ScaledFaces(str(shifted), split, ["x1"]) for split in ("valid", "test")]
    kd_pred = np.concatenate([predict_proba(kd_teacher, d.faces["x1"]).argmax(1) for d in data])
    labels, k = np.concatenate([d.labels for d in data]), len(PreparedStore(shifted).classes)
    assert (kd_pred != (labels + 1) % k).mean() > 0.7, "the kd teacher should rarely name the votes' class"

    def agreement(kd_weight: float) -> dict[str, float]:
        cfg = _one_worker(student_cfg, tmp_path, prepared=str(shifted), teacher="", targets="votes", iterations=200,
                          checkpoint_every=200, eval_every=200, out=str(tmp_path / f"kd{kd_weight}.pt"),
                          run_name="gme_teacher", kd_teacher=str(tiny_run.teacher), kd_weight=kd_weight)
        train_gme_teacher(cfg, runner="local")
        pred = np.concatenate([predict_proba(load_gmenet(cfg.out), d.faces["x1"]).argmax(1) for d in data])
        return {"kd_teacher": float((pred == kd_pred).mean()), "votes": float((pred == (labels + 1) % k).mean())}

    with_kd, without = agreement(1.0), agreement(0.0)
    assert with_kd["kd_teacher"] > max(2 * CHANCE, without["kd_teacher"] + 0.2), (with_kd, without)
    assert with_kd["votes"] < without["votes"] - 0.3, (with_kd, without)
    with pytest.raises(BadInput, match="no CovPoolFER file to distil from"):
        train_gmenet(replace(student_cfg, kd_teacher=str(tmp_path / "missing.pt"), kd_weight=0.5))
    with pytest.raises(BadInput, match="kd_teacher is empty"):
        replace(student_cfg, kd_weight=0.5)
    with pytest.raises(BadInput, match=r"kd_weight must be in \[0, 1\]"):
        replace(student_cfg, kd_teacher=str(tiny_run.teacher), kd_weight=1.5)


def test_kd_input_lr_teaches_the_kd_teachers_reading_of_the_students_own_lr_face(gme_teacher_run, tiny_run, tmp_path,
                                                                                monkeypatch):
    """`kd_input: lr` (kd_weight 1, votes that all name the wrong class): the student learns what the kd_teacher
    says about the LR face at each scale, not about the HR face. At x8 the HR CovPoolFER teacher reads the 8-pixel
    faces very differently from the HR ones, so there the lr student agrees with its x8 reading and the hr student
    does not. Bad values of kd_input are refused by name."""
    _, _, student_cfg = gme_teacher_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    shifted = store_with_train_votes(tiny_run.prepared, tmp_path / "shifted",
                                     lambda labels, k: np.eye(k, dtype=np.float32)[(labels + 1) % k])
    kd_teacher = load_covpool(tiny_run.teacher)
    data = [ScaledFaces(str(shifted), split, ["x1", "x8"]) for split in ("valid", "test")]
    kd_pred = {key: np.concatenate([predict_proba(kd_teacher, d.faces[key]).argmax(1) for d in data])
               for key in ("x1", "x8")}
    assert (kd_pred["x1"] != kd_pred["x8"]).mean() > 0.5, "the kd teacher should read x8 faces unlike HR ones"

    def agreement(kd_input: str) -> dict[str, float]:
        cfg = _one_worker(student_cfg, tmp_path, prepared=str(shifted), targets="votes", out=str(tmp_path / f"{kd_input}.pt"),
                          kd_teacher=str(tiny_run.teacher), kd_weight=1.0, kd_input=kd_input)
        train_gmenet(cfg, runner="local")
        pred = np.concatenate([predict_proba(load_gmenet(cfg.out), d.faces["x8"]).argmax(1) for d in data])
        # the student on x8 faces against the kd teacher's reading of the same x8 faces and of their HR versions
        return {"x8_reading": float((pred == kd_pred["x8"]).mean()), "hr_reading": float((pred == kd_pred["x1"]).mean())}

    lr, hr = agreement("lr"), agreement("hr")
    assert lr["x8_reading"] > max(2 * CHANCE, hr["x8_reading"] + 0.2), (lr, hr)
    assert hr["hr_reading"] > lr["hr_reading"], (lr, hr)
    with pytest.raises(BadInput, match="gmenet.kd_input: 'mid'"):
        replace(student_cfg, kd_input="mid")


def test_the_students_step_reads_the_teachers_maps_of_the_matching_hr_face(gme_teacher_run):
    """The teacher's attention maps are computed once before training (teacher_attention); a student step's A-SKD
    term must be what the frozen teacher's own pass on the step's HR faces, mirrored where the LR face is, gives."""
    _, _, student_cfg = gme_teacher_run
    ctx = WorkerContext(rank=0, world_size=1, device=torch.device("cpu"), report=lambda *a: None,
                        restore=lambda: None, wrap=lambda m: m)
    task = DistillationTask(replace(student_cfg, num_workers=1), ctx)
    before = copy.deepcopy(task.model)
    teacher = load_gmenet(student_cfg.teacher)
    for seed in range(3):
        before.load_state_dict(task.model.state_dict())
        l_at = task.step(seed, np.random.default_rng(seed))["l_at"]
        rng = np.random.default_rng(seed)  # the step's draw: rows, scales, mirrors
        rows = rng.integers(0, len(task.train.labels), student_cfg.batch_size)
        scale_of = rng.integers(0, len(task.keys), student_cfg.batch_size)
        flip = rng.random(student_cfg.batch_size) < 0.5
        assert 0 < flip.sum() < len(flip)
        faces = np.stack([task.train.faces[task.keys[s]][r] for s, r in zip(scale_of, rows)])
        hr = task.train.hr[rows].copy()
        faces[flip], hr[flip] = faces[flip][:, :, ::-1], hr[flip][:, :, ::-1]
        with torch.no_grad():
            _, maps = before(images_to_tensor(faces), with_attention=True)
            _, teacher_maps = teacher(images_to_tensor(hr), with_attention=True)
        assert l_at == pytest.approx(float(attention_similarity_loss(maps, teacher_maps)), rel=1e-5)


def test_init_from_teacher_starts_the_student_from_its_hr_teacher(gme_runs, tmp_path, monkeypatch):
    """`init_from_teacher`: the student's first step starts from the teacher's weights (lr 1e-9 leaves them
    there); without it, from a random network. A teacher stage has no teacher to start from."""
    _, _, _, cfg = gme_runs
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    teacher = dict(load_gmenet(cfg.teacher).named_parameters())

    def distance_after_one_step(init_from_teacher: bool) -> float:
        out = tmp_path / f"student_{init_from_teacher}.pt"
        train_gmenet(_one_worker(cfg, tmp_path, init_from_teacher=init_from_teacher, out=str(out), iterations=1,
                                 lr=1e-9, checkpoint_every=1, eval_every=1), runner="local")
        student = dict(load_gmenet(out).named_parameters())
        return max(float((student[n] - teacher[n]).abs().max()) for n in teacher)

    assert distance_after_one_step(True) < 1e-6
    assert distance_after_one_step(False) > 1e-2
    with pytest.raises(BadInput, match="init_from_teacher: no teacher"):
        replace(cfg, teacher="", init_from_teacher=True)


def test_a_teacher_of_another_design_is_refused(gme_runs, tiny_run, tmp_path):
    root, _, _, cfg = gme_runs
    with pytest.raises(BadInput, match="design differs"):
        train_gmenet(replace(cfg, fusion_dim=64, out=str(tmp_path / "x.pt")))


def test_compare_adds_the_gmenet_and_yardstick_columns_and_the_cost_of_each_path(gme_runs, yardsticks, tiny_run,
                                                                                     tmp_path):
    import json

    from components.config import CompareConfig
    from components.stages.compare import compare

    root, _, _, cfg = gme_runs
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        result = compare(CompareConfig(prepared=str(tiny_run.prepared), evaluate=str(tiny_run.root / "metrics.json"),
                                       teacher=str(tiny_run.teacher), fsr="", gmenet=str(root / "gmenet.pt"),
                                       multiscale_cnn=str(yardsticks.multiscale_cnn), isr=str(yardsticks.isr),
                                       metrics=str(tmp_path / "compare.json"), plots=str(tmp_path / "plots"),
                                       summary=str(tmp_path / "summary")))
    finally:
        mp.undo()
    evaluated = json.loads((tiny_run.root / "metrics.json").read_text())
    written = json.loads((tmp_path / "compare.json").read_text())
    assert written == json.loads(json.dumps(result))
    for split in ("valid", "test"):
        methods = written["table"][split]
        assert set(methods) == {"bicubic", "gmenet", "multiscale_cnn", "isr_fer"}
        assert methods["bicubic"] == evaluated[split]["bicubic"]
        for method in ("gmenet", "multiscale_cnn", "isr_fer"):
            assert list(methods[method]) == ["x1", "x2", "x4", "x8"]
        # the column is the student's accuracy on the prepared faces of that scale
        data = ScaledFaces(cfg.prepared, split, ["x1", "x8"])
        direct = accuracy_per_scale(load_gmenet(root / "gmenet.pt"), data, torch.device("cpu"))["x8"]
        assert methods["gmenet"]["x8"]["accuracy"] == pytest.approx(direct)
        # the multi-scale CNN on the upscaled faces; image SR then the teacher (at x1 the teacher on HR: bicubic's x1)
        multiscale, teacher = load_covpool(yardsticks.multiscale_cnn), load_covpool(tiny_run.teacher)
        hits = predict_proba(multiscale, data.faces["x8"]).argmax(1) == data.labels
        assert methods["multiscale_cnn"]["x8"]["accuracy"] == pytest.approx(hits.mean())
        sr = super_resolve(load_isr(yardsticks.isr), data.faces["x8"])
        assert methods["isr_fer"]["x8"]["accuracy"] == pytest.approx((predict_proba(teacher, sr).argmax(1)
                                                                      == data.labels).mean())
        assert methods["isr_fer"]["x1"]["accuracy"] == pytest.approx(methods["bicubic"]["x1"]["accuracy"], abs=0.02)
    cost = written["cost"]
    assert set(cost) == {"bicubic", "gmenet", "multiscale_cnn", "isr_fer"}
    assert cost["gmenet"]["params"] == sum(p.numel() for p in load_gmenet(root / "gmenet.pt").parameters())
    isr_params = sum(p.numel() for p in load_isr(yardsticks.isr).parameters())
    assert cost["isr_fer"]["params"] == cost["bicubic"]["params"] + isr_params
    assert cost["isr_fer"]["flops"] > cost["bicubic"]["flops"]
    assert all(c["flops"] > 0 and c["params"] > 0 for c in cost.values())
    assert (tmp_path / "plots" / "accuracy_vs_scale.png").stat().st_size > 0
    for split, methods in written["table"].items():
        # the plot data: numeric scale, a column per method; the summary: mean over the LR scales per method
        lines = (tmp_path / "plots" / f"accuracy_{split}.csv").read_text().splitlines()
        assert lines[0] == "scale,bicubic,gmenet,multiscale_cnn,isr_fer" and [row.split(",")[0] for row in lines[1:]] == \
            ["1", "2", "4", "8"]
        assert float(lines[-1].split(",")[2]) == pytest.approx(methods["gmenet"]["x8"]["accuracy"], abs=5e-5)
        summary = json.loads((tmp_path / "summary" / f"{split}.json").read_text())["mean_accuracy_lr_scales"]
        assert list(summary) == ["bicubic", "gmenet", "multiscale_cnn", "isr_fer"]
        assert summary["gmenet"] == pytest.approx(np.mean([methods["gmenet"][k]["accuracy"] for k in ("x2", "x4", "x8")]),
                                                  abs=5e-5)
    # MLflow: each method's accuracy as a curve over step = scale, the table, and only the intended files
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("fsrfer-default").experiment_id],
                             "attributes.run_name = 'compare'")[0]
    curve = client.get_metric_history(run.info.run_id, "valid.gmenet.accuracy")
    assert [(m.step, m.value) for m in sorted(curve, key=lambda m: m.step)] == \
        [(int(k[1:]), written["table"]["valid"]["gmenet"][k]["accuracy"]) for k in ("x1", "x2", "x4", "x8")]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "compare.json", "valid.json", "test.json", "accuracy_valid.csv", "accuracy_test.csv", "accuracy_vs_scale.png",
        "accuracy_table.json"}


def test_gmenet_registers_serves_any_face_and_is_gated_like_fsrfer(gme_runs, yardsticks, tiny_run, tmp_path):
    import cv2
    import pandas as pd

    from components.config import CompareConfig, PromoteConfig, RegisterGMEConfig
    from components.registry import promote
    from components.stages.compare import compare
    from components.stages.register_gmenet import register_gmenet

    root, _, _, _ = gme_runs
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    try:
        compare(CompareConfig(prepared=str(tiny_run.prepared), evaluate=str(tiny_run.root / "metrics.json"),
                              teacher=str(tiny_run.teacher), fsr="", gmenet=str(root / "gmenet.pt"),
                              multiscale_cnn=str(yardsticks.multiscale_cnn), isr=str(yardsticks.isr),
                              metrics=str(tmp_path / "compare.json"), plots=str(tmp_path / "plots"),
                              summary=str(tmp_path / "summary")))
        cfg = RegisterGMEConfig(prepared=str(tiny_run.prepared), gmenet=str(root / "gmenet.pt"),
                                metrics=str(tmp_path / "compare.json"), out=str(tmp_path / "gmenet.json"),
                                experiment="test-register")
        record = register_gmenet(cfg)
        decision = promote(PromoteConfig(model_name="gmenet"))
    finally:
        mp.undo()
    assert record["model_name"] == "gmenet" and record["version"] == 1
    client = mlflow.MlflowClient(uri)
    version = client.get_model_version_by_alias("gmenet", "champion")  # the first version with complete metrics
    assert decision["promoted"] is True and int(version.version) == 1
    # the version's tags are identity and lineage; its numbers and params are on its registration run
    assert {"data_sha256", "model_sha256", "data.valid_sha256", "git_commit"} <= set(version.tags) <= LINEAGE_TAGS
    run = client.get_run(version.run_id)
    assert {"valid_acc_x2", "valid_acc_x8", "valid_acc_mean", "test_acc_x8", "bicubic_valid_acc_x8"} <= set(run.data.metrics)
    assert {"cost.flops", "train.lambda_at", "scales"} <= set(run.data.params)
    model = mlflow.pyfunc.load_model(client.get_model_version_download_uri("gmenet", "1"))
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, (11, 9), dtype=np.uint8), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
             rng.integers(0, 256, (20, 20, 4), dtype=np.uint8)]
    frame = pd.DataFrame({"image": [cv2.imencode(".png", f)[1].tobytes() for f in faces] + [b"\x89PNG broken"]})
    out = model.predict(frame)
    classes = [c for c in out.columns if c not in ("label", "error")]
    assert len(classes) == 7
    np.testing.assert_allclose(out[classes].to_numpy()[:3].sum(1), 1.0, atol=1e-6)
    assert list(out["error"][:3]) == ["", "", ""] and "row 3" in out["error"][3]
    # the served path is the evaluated one: an 8x LR face of the prepared store, resized back, through GME-Net
    data = ScaledFaces(str(tiny_run.prepared), "test", ["x8"], rows=np.arange(4))
    lr = np.asarray(PreparedStore(tiny_run.prepared).array("test", "x8")[:4])
    served = model.predict(pd.DataFrame({"image": [cv2.imencode(".png", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1]
                                                   .tobytes() for f in lr]}))[classes].to_numpy()
    with torch.no_grad():
        direct = torch.softmax(load_gmenet(root / "gmenet.pt")(images_to_tensor(data.faces["x8"])), 1)
    np.testing.assert_allclose(served, direct.numpy(), atol=1e-5)
    # the same pyfunc serves scenes: every face found, cut as the training faces were, through the same path
    from components.serving.scene import SceneFaces
    from tests.model.test_scenes import compose_scene, png

    scene, _ = compose_scene(tiny_run.root / "raw")
    rows = model.predict(pd.DataFrame({"image": [png(scene)]}), params={"detect": True, "upsample": 2.0})
    crops = SceneFaces("warp", 64, 12, upsample=2.0)(scene)
    assert len(rows) == len(crops) >= 2 and (rows["error"] == "").all()
    single = model.predict(pd.DataFrame({"image": [png(c.face) for c in crops]}))
    np.testing.assert_allclose(rows[classes].to_numpy(), single[classes].to_numpy(), atol=1e-6)


def test_a_run_resumed_from_its_checkpoint_ends_where_an_uninterrupted_one_does(gme_runs, tiny_run, tmp_path):
    """The same checkpoint/resume contract as FSR-FER (tests/model/test_train_fsr.py), on the GME loop."""
    import shutil
    from dataclasses import asdict
    from pathlib import Path

    from components.distributed import WorkerContext
    from components.training.gme import gme_train_loop

    root, _, _, cfg = gme_runs
    loop_cfg = replace(cfg, iterations=12, checkpoint_every=6, eval_every=6)

    def run(restore_from: Path | None) -> list[Path]:
        saved = []

        def report(metrics, folder):
            if folder is not None:
                saved.append(Path(shutil.copytree(folder, tmp_path / f"ckpt{len(list(tmp_path.iterdir()))}")))

        ctx = WorkerContext(rank=0, world_size=1, device=torch.device("cpu"), report=report,
                            restore=lambda: restore_from, wrap=lambda m: m)
        gme_train_loop({"gme": asdict(loop_cfg)}, ctx)
        return saved

    full = run(None)
    resumed = run(full[0])  # as if killed after the first checkpoint (iteration 6)
    a, b = (torch.load(p / "state.pt", weights_only=True) for p in (full[-1], resumed[-1]))
    assert a["iteration"] == b["iteration"] == 12 and len(resumed) == 1
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)


RESUME_ITERATIONS = 40
RESUME_EVERY = 10  # as tests/model/test_train_fsr.py


def test_a_killed_student_run_resumes_from_its_checkpoint(gme_teacher_run, tmp_path):
    """`fsrfer gme_train` SIGKILLed whole (driver, Ray, both workers) once Ray has recorded a checkpoint;
    the same command again resumes from it and ends with the uninterrupted run's iteration count and
    weights, bit for bit (as FSR-FER's tests/model/test_train_fsr.py)."""

    _, _, student_cfg = gme_teacher_run
    cfg = replace(student_cfg, iterations=RESUME_ITERATIONS, checkpoint_every=RESUME_EVERY, eval_every=RESUME_ITERATIONS,
                  experiment="test-gmenet-resume", run_name="gme_resume")
    with pytest.MonkeyPatch.context() as mp:  # the uninterrupted run, in this process on the module's Ray
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'straight.db'}")
        straight = train_gmenet(replace(cfg, out=str(tmp_path / "straight.pt"), storage=str(tmp_path / "straight")))
    assert straight["iterations"] == RESUME_ITERATIONS and straight["resumed_from"] == 0

    env = cli_env(tmp_path)
    params = tmp_path / "killed.yaml"
    write_params(params, "gme_train", replace(cfg, out=str(tmp_path / "killed.pt"), storage=str(tmp_path / "ray")))
    summary = kill_mid_run_and_rerun("gme_train", params, tmp_path / "ray", tmp_path / "killed.pt", env)
    assert RESUME_EVERY <= summary["resumed_from"] < RESUME_ITERATIONS, "the restarted run did not resume from a checkpoint"
    assert summary["iterations"] == straight["iterations"] == RESUME_ITERATIONS
    a, b = load_gmenet(tmp_path / "straight.pt").state_dict(), load_gmenet(tmp_path / "killed.pt").state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs from the uninterrupted run's"
