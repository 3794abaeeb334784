"""Shared fixtures. `tiny_run`: a tiny run of the real chain (synthetic data -> prepare -> teacher -> features -> evaluate),
shared by the model-tier tests: small numbers, the same code paths as the pipeline."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from components.config import EvaluateConfig, FeaturesConfig, PrepareConfig, TeacherConfig
from components.data.store import PreparedStore, SplitArrays, write_store
from components.data.synthetic import SyntheticConfig, write_synthetic_rafdb
from components.stages.evaluate import evaluate
from components.stages.features import cache_features
from components.stages.prepare import prepare
from components.stages.teacher import train_teacher

TINY_TEACHER = dict(conv_channels=(16, 32, 48, 48, 64, 64), pool_after=(0, 1, 3), bimap_dim=24,
                    fc_dims=(128, 64), epochs=12, batch_size=32, lr=2e-3, augment=False, experiment="test-teacher")
# what a registered version's tags may be (components/registry.py): identity and lineage, nothing else
LINEAGE_TAGS = {"data.dataset", "data.train_sha256", "data.valid_sha256", "data_sha256", "teacher_sha256",
                "generator_sha256", "model_sha256", "git_commit", "dvc_lock_sha256", "pipeline_run", "run_ref",
                "run_commit", "promotion_decision", "promotion_reason", "promotion_compared_to"}
TINY_ISR = dict(channels=16, blocks=1, patch=32, iterations=600, batch_size=16, lr=2e-3, experiment="test-yardsticks")


def store_with_train_votes(prepared: Path, out: Path, train_votes=None, with_valid: bool = True) -> Path:
    """A copy of a prepared store with train_votes(labels, K) -> (N, K) as the train split's votes (None: one-hot
    labels; the other splits one-hot), without its valid split if with_valid is False."""
    src = PreparedStore(prepared)
    splits = {}
    for split in src.splits:
        if split == "valid" and not with_valid:
            continue
        labels = np.asarray(src.array(split, "labels"))
        votes = np.eye(len(src.classes), dtype=np.float32)[labels]
        if train_votes is not None and split == "train":
            votes = np.asarray(train_votes(labels, len(src.classes)), dtype=np.float32)
        splits[split] = SplitArrays(hr=np.asarray(src.array(split, "hr")),
                                    lr={k: np.asarray(src.array(split, k)) for k in src.scale_keys},
                                    labels=labels, votes=votes)
    meta = dict(src.meta, counts={s: n for s, n in src.meta["counts"].items() if s in splits})
    write_store(out, splits, [row for row in src.manifest() if row["split"] in splits], [], meta)
    return out


@dataclass
class TinyRun:
    root: Path
    prepared: Path
    teacher: Path
    features: Path
    teacher_summary: dict
    features_summary: dict
    table: dict


@pytest.fixture(scope="session")
def synthetic_default(tmp_path_factory) -> Path:
    """The embedded default dataset, written once per session by the README's command (`fsrfer synth`)."""
    out = tmp_path_factory.mktemp("synthetic_default") / "synthetic"
    done = subprocess.run(["fsrfer", "synth", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    root = tmp_path_factory.mktemp("tiny_run")
    old_uri = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    try:
        write_synthetic_rafdb(root / "raw", SyntheticConfig(train_per_class=80, test_per_class=20, seed=0))
        prepare(PrepareConfig(root=str(root / "raw"), out=str(root / "prepared"), hr_size=64, scales=(2, 4, 8)))
        teacher = train_teacher(TeacherConfig(prepared=str(root / "prepared"), out=str(root / "teacher.pt"), **TINY_TEACHER),
                                progress=False)
        feats = cache_features(FeaturesConfig(prepared=str(root / "prepared"), teacher=str(root / "teacher.pt"),
                                              out=str(root / "features")), progress=False)
        table = evaluate(EvaluateConfig(features=str(root / "features"), metrics=str(root / "metrics.json"),
                                        plots=str(root / "plots"), experiment="test-evaluate", fsr=""))
    finally:
        if old_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_uri
    return TinyRun(root, root / "prepared", root / "teacher.pt", root / "features", teacher, feats, table)


@dataclass
class Yardsticks:
    multiscale_cnn: Path
    isr: Path
    multiscale_summary: dict
    isr_summary: dict


@pytest.fixture(scope="session")
def yardsticks(tiny_run) -> Yardsticks:
    """The compare table's two yardsticks trained by their stages on the tiny run: the multi-scale CNN
    (the tiny teacher's network and recipe on x1 and every scale) and the image-SR network."""
    from components.config import ISRConfig, MultiscaleCNNConfig
    from components.stages.isr_fer import train_isr
    from components.stages.multiscale_cnn import train_multiscale_cnn

    root = tiny_run.root
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    try:
        ms = train_multiscale_cnn(MultiscaleCNNConfig(prepared=str(tiny_run.prepared), out=str(root / "multiscale_cnn.pt"),
                                                      init=str(tiny_run.teacher),  # fine-tuned, as the profiles do
                                                      **TINY_TEACHER | {"epochs": 20, "experiment": "test-yardsticks"}),
                                  progress=False)
        isr = train_isr(ISRConfig(prepared=str(tiny_run.prepared), out=str(root / "isr.pt"), **TINY_ISR), progress=False)
    finally:
        mp.undo()
    return Yardsticks(root / "multiscale_cnn.pt", root / "isr.pt", ms, isr)


@dataclass
class Registered:
    uri: str  # the sqlite registry holding fsrfer v1 @champion
    root: Path
    table: dict  # the evaluate table (with G) it was registered from
    raw: Path  # the synthetic dataset the tiny run was prepared from


@pytest.fixture(scope="session")
def registered_fsrfer(tiny_run, tmp_path_factory) -> Registered:
    """The tiny run's teacher with a G of 300 steps, trained, evaluated and registered by the real
    stages as `fsrfer` v1, promoted to champion, in a registry of its own."""
    from components.config import FSRConfig, PromoteConfig, RegisterConfig
    from components.registry import promote
    from components.stages.register import register
    from components.stages.train_fsr import train_fsr

    root = tmp_path_factory.mktemp("registered")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    its = 300
    cfg = FSRConfig(features=str(tiny_run.features), teacher=str(tiny_run.teacher), out=str(root / "fsr.pt"), channels=8,
                    growth=8, blocks=1, dense_residual=True, loss_norm="mean", w_gan=0.1, w_percep=10.0, w_feat=0.01, lr=1e-3,
                    iterations=its, milestones=(200,), batch_size=16, seed=0, checkpoint_every=its, eval_every=its,
                    experiment="test-train")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    try:
        train_fsr(cfg, runner="local")  # the stage in this process: a G that pays at some scales of the tiny run
        table = evaluate(EvaluateConfig(features=str(tiny_run.features), teacher=str(tiny_run.teacher), fsr=cfg.out,
                                        metrics=str(root / "evaluate.json"), plots=str(root / "plots"),
                                        experiment="test-evaluate"))
        register(RegisterConfig(prepared=str(tiny_run.prepared), features=str(tiny_run.features),
                                teacher=str(tiny_run.teacher), fsr=cfg.out, metrics=str(root / "evaluate.json"),
                                out=str(root / "fsrfer.json"), experiment="test-register"))
        promote(PromoteConfig(model_name="fsrfer"))
    finally:
        mp.undo()
    return Registered(uri, root, table, tiny_run.root / "raw")


# Tiers: `pytest -m "not slow"` is the fast one (code, data and the quick model tests on `tiny_run`);
# slow is all of tests/e2e/ and any test that needs one of these fixtures, directly or through another:
SLOW_FIXTURES = {
    "ray_session",       # here: a local Ray; its users train on Ray Train (test_train_fsr, test_gmenet_train)
    "straight_run",      # test_train_fsr.py: the uninterrupted 2-worker Ray Train run the resume tests match
    "search",            # test_tune.py: the 4-trial Ray Tune search
    "gme_runs",          # test_gmenet_train.py: GME-Net teacher + student on Ray Train
    "default_size_run",  # test_fsr_behaviour.py: the 100 px default data, a 30-epoch teacher (then an 800-step G)
    "registered_fsrfer",  # here: a 300-step G on the tiny run, evaluated, registered and promoted (scenes, HTTP)
}
E2E = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if E2E in item.path.parents or SLOW_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


# Every folder short_tmpdir() made this session: removed by pytest_sessionfinish, once the fixtures (and the Ray
# processes and subprocesses they started) are gone, for callers whose folder outlives their function.
SHORT_TMPDIRS: list[str] = []


def short_tmpdir() -> str:
    """Ray's socket paths must stay under 107 bytes: pytest's tmp_path is too deep. The folder is
    removed at the end of the session (pytest_sessionfinish), or earlier by its user."""
    path = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    SHORT_TMPDIRS.append(path)
    return path


def pytest_sessionfinish(session, exitstatus):
    while SHORT_TMPDIRS:
        shutil.rmtree(SHORT_TMPDIRS.pop(), ignore_errors=True)


@contextlib.contextmanager
def ray_tmpdir() -> Iterator[str]:
    """RAY_TMPDIR set to a fresh short_tmpdir() inside the block; on leaving it, RAY_TMPDIR is what it
    was before (or unset again) and the folder is removed (stop the Ray that uses it first)."""
    path = short_tmpdir()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("RAY_TMPDIR", path)
            yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray on 2 CPUs for one test module (Train runs started in-process join it), its
    RAY_TMPDIR restored and its temp folder removed once its processes have exited."""
    import ray

    from components.distributed import init_ray

    with ray_tmpdir():
        init_ray(num_cpus=2)
        try:
            yield
        finally:
            ray.shutdown(wait_for_processes=True)
