"""Every stage's typed config, read from params.yaml (one section per stage, in pipeline order).

Stages never read params.yaml themselves: the CLI (or a flow, through DVC) loads the section into
the stage's dataclass with `load_stage_config` and hands it over. Settings several stages share
are written once, in their own section, and inherited by the configs that read them: [ray]
(RayConfig: Ray Train resources of train_fsr, gme_teacher, gme_train), [gme_net]
(GMENetConfig: GME-Net's design, for its HR teacher and LR student) and [mlflow] (TrackingConfig:
the one experiment every stage of a dataset's pipeline logs its run to). Unknown keys, a shared key
repeated in a stage section, and bad values raise BadInput naming the parameter.

params.yaml is read as YAML 1.2 (`load_yaml`: `1e-3` is a number, `yes` a string) and each
section is validated by pydantic against the dataclass's field types (strict: no string is
taken for a number, no number for a string; `Literal` fields name their choices); ranges and
relations between fields are each dataclass's `__post_init__`.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from components.io import BadInput

Dataset = Literal["rafdb", "ferplus", "fer2013", "folders", "expw"]
DATASETS = typing.get_args(Dataset)


@dataclass(frozen=True)
class PrepareConfig:
    """The `prepare` stage: raw dataset -> aligned HR faces + every LR scale, packed per split.

    dataset: one of DATASETS; root: its folder (or the CSV for fer2013).
    aligned: True to pass already-aligned faces through (RAF-DB Image/aligned, FER+, FER2013);
      False to detect faces and warp them onto the 5-point template.
    hr_size: side of the HR face in pixels (100 RAF-DB style, 48 for FER+); channels 1 or 3.
    scales: LR factors (>= 1, fractional allowed); valid_fraction: share of train carved out
      (stratified, seeded) when the dataset has no validation split.
    classes: class names for the image-folder layout (other layouts know their own).
    """

    dataset: Dataset = "rafdb"
    root: str = "data/raw/synthetic"
    out: str = "data/prepared"
    aligned: bool = True
    hr_size: int = 100
    channels: Literal[1, 3] = 3
    scales: tuple[float, ...] = (2, 3, 4, 5, 6, 7, 8)
    valid_fraction: float = 0.1
    seed: int = 0
    classes: tuple[str, ...] = ()
    min_face_size: int = 20
    min_confidence: float = 0.9
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise BadInput(f"prepare.dataset: unknown dataset {self.dataset!r} (known: {', '.join(DATASETS)})")
        if self.channels not in (1, 3):
            raise BadInput(f"prepare.channels: must be 1 or 3, got {self.channels}")
        if not self.scales:
            raise BadInput("prepare.scales: at least one scale factor is needed")
        for s in self.scales:
            if not isinstance(s, (int, float)) or s < 1:
                raise BadInput(f"prepare.scales: scale factors must be numbers >= 1, got {s!r}")
        if self.hr_size < 8 or any(self.hr_size / s < 2 for s in self.scales):
            raise BadInput(f"prepare.hr_size: {self.hr_size} leaves fewer than 2 LR pixels at scale {max(self.scales)}")
        if not 0 <= self.valid_fraction < 1:
            raise BadInput(f"prepare.valid_fraction: must be in [0, 1), got {self.valid_fraction}")
        if self.dataset == "folders" and not self.classes:
            raise BadInput("prepare.classes: the image-folder layout needs the class names")


Balance = Literal["weighted_loss", "sampler", "none"]
Targets = Literal["hard", "votes"]
Schedule = Literal["cosine", "onecycle"]
Precision = Literal["auto", "fp32", "bf16"]
FeatureDtype = Literal["float32", "float16"]
BALANCE_MODES, TARGETS, SCHEDULES = typing.get_args(Balance), typing.get_args(Targets), typing.get_args(Schedule)
PRECISIONS = typing.get_args(Precision)
DTYPES = {"float32": np.float32, "float16": np.float16}
SEARCHED = ("sigma", "r", "k", "p")


@dataclass(frozen=True)
class RayConfig:
    """params.yaml [ray]: the Ray Train resources every training stage shares (train_fsr, gme_teacher,
    gme_train; tune's trials take their own, [tune]). Stage configs inherit these fields; the CLI
    fills them from [ray], and a stage section may not repeat them."""

    num_workers: int = 2  # Ray Train workers (gloo on CPU, NCCL when every worker has a GPU)
    cpus_per_worker: float = 1.0
    max_failures: int = 2  # dead workers replaced, training resumed from the last checkpoint
    storage: str = "data/ray_results"  # checkpoints; on a cluster: storage every node mounts

    def __post_init__(self) -> None:
        if self.num_workers < 1 or self.cpus_per_worker <= 0 or self.max_failures < 0:
            raise BadInput("ray.num_workers >= 1, ray.cpus_per_worker > 0 and ray.max_failures >= 0 are required; got "
                           f"{self.num_workers}, {self.cpus_per_worker}, {self.max_failures}")


@dataclass(frozen=True)
class GMENetConfig:
    """params.yaml [gme_net]: GME-Net's design (components/models/gmenet.py), written once for the HR
    teacher and the LR student (A-SKD compares the maps of the same blocks)."""

    stem_channels: int = 32
    local_channels: tuple[int, ...] = (32, 64, 128)
    global_channels: tuple[int, ...] = (32, 64, 128)
    dilations: tuple[int, ...] = (1, 2, 3)
    reduction: int = 4
    spatial_kernel: int = 7
    fusion_dim: int = 256
    dropout: float = 0.3
    test_flip: bool = False  # eval mode: logits averaged over the face and its mirror (selection, evaluation, serving)


@dataclass(frozen=True)
class TrackingConfig:
    """params.yaml [mlflow]: where every stage that logs to MLflow puts its run. One experiment per
    dataset (a profile names its own); the stages' runs in it are told apart by run name and tied to
    the pipeline run they ran in by the `pipeline_run` tag (components/tracking.py)."""

    experiment: str = "fsrfer-default"  # the MLflow experiment every stage's run goes to


SHARED_SECTIONS = {"ray": RayConfig, "gme_net": GMENetConfig, "mlflow": TrackingConfig}


@dataclass(frozen=True)
class TeacherConfig(TrackingConfig):
    section: typing.ClassVar[str] = "teacher"  # the params.yaml section errors name
    prepared: str = "data/prepared"
    out: str = "models/teacher.pt"
    conv_channels: tuple[int, ...] = (64, 96, 128, 128, 256, 256)
    pool_after: tuple[int, ...] = (0, 1, 3)
    bimap_dim: int = 128
    fc_dims: tuple[int, int] = (2000, 128)
    dropout: float = 0.5
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    balance: Balance = "weighted_loss"
    balance_power: float = 0.5  # class weight ~ (1 / frequency)^power; 1 = full inverse frequency
    augment: bool = True
    erase_p: float = 0.0  # random erasing probability per face (after augmentation)
    targets: Targets = "hard"
    label_smoothing: float = 0.0
    schedule: Schedule = "cosine"  # cosine: per epoch; onecycle: per step, warm-up then cosine
    warmup: float = 0.3  # onecycle: share of the steps spent warming up to lr
    seed: int = 0
    device: str = "auto"
    precision: Precision = "fp32"  # training arithmetic: bf16 autocast, fp32, or auto (bf16 where native)
    test_flip: bool = False  # eval mode (selection, features, evaluation, serving): F = mean of face's and mirror's LogEig

    def __post_init__(self) -> None:
        sec = self.section
        if self.precision not in PRECISIONS:
            raise BadInput(f"{sec}.precision: {self.precision!r} is not one of {PRECISIONS}")
        if self.balance not in BALANCE_MODES:
            raise BadInput(f"{sec}.balance: {self.balance!r} is not one of {BALANCE_MODES}")
        if self.targets not in TARGETS:
            raise BadInput(f"{sec}.targets: {self.targets!r} is not one of {TARGETS}")
        if self.schedule not in SCHEDULES:
            raise BadInput(f"{sec}.schedule: {self.schedule!r} is not one of {SCHEDULES}")
        if not 0 <= self.label_smoothing < 1 or not 0 <= self.erase_p <= 1 or not 0 < self.warmup < 1:
            raise BadInput(f"{sec}.label_smoothing must be in [0, 1), {sec}.erase_p in [0, 1], {sec}.warmup in (0, 1); "
                           f"got {self.label_smoothing}, {self.erase_p}, {self.warmup}")
        for name in ("epochs", "batch_size", "lr"):
            if getattr(self, name) <= 0:
                raise BadInput(f"{sec}.{name}: must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class FeaturesConfig:
    prepared: str = "data/prepared"
    teacher: str = "models/teacher.pt"
    out: str = "data/features"
    dtype: FeatureDtype = "float32"
    batch_size: int = 128
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise BadInput(f"features.dtype: {self.dtype!r} is not one of {sorted(DTYPES)}")
        if self.batch_size < 1:
            raise BadInput(f"features.batch_size: must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class FSRTuneConfig(TrackingConfig):
    enabled: bool = False
    out: str = "models/tuned_fsr.json"
    # search ranges (uniform); the paper's values: sigma 1.5, r 1, k 2, p 6
    sigma: tuple[float, float] = (1.1, 2.0)
    r: tuple[float, float] = (0.5, 2.0)
    k: tuple[float, float] = (0.5, 4.0)
    p: tuple[float, float] = (2.0, 8.0)
    num_samples: int = 8
    max_concurrent_trials: int = 1  # on a cluster: as many as fit; no code change
    iterations: int = 600  # per trial, at most
    report_every: int = 100  # iterations between reports (ASHA's time unit is one report)
    grace_period: int = 2  # reports before ASHA may stop a trial
    reduction_factor: int = 2
    # resources per trial: Ray Train workers, CPUs each, GPUs each (> 0: NCCL on GPUs)
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    driver_cpus: float = 0.5  # the trial's driver (it only waits on its TorchTrainer)
    seed: int = 0
    run_name: str = "tune_fsr"

    def __post_init__(self) -> None:
        for name in SEARCHED:
            low, high = getattr(self, name)
            if not low < high:
                raise BadInput(f"tune.{name}: range must be [low, high] with low < high, got {[low, high]}")
        if self.sigma[0] <= 1:
            raise BadInput(f"tune.sigma: lower bound must be > 1 (w = (sigma - p)^r > 0), got {self.sigma[0]}")
        if min(self.k[0], self.p[0], self.r[0]) <= 0:
            raise BadInput("tune.k, tune.p and tune.r ranges must be positive")
        if self.num_samples < 1 or self.report_every < 1 or self.iterations < self.report_every:
            raise BadInput("tune.num_samples >= 1 and tune.iterations >= tune.report_every >= 1 are required; got "
                           f"{self.num_samples}, {self.iterations}, {self.report_every}")


@dataclass(frozen=True)
class FSRConfig(RayConfig, TrackingConfig):
    features: str = "data/features"
    teacher: str = "models/teacher.pt"
    out: str = "models/fsr.pt"
    # G (reference code: 32 channels, growth 16, 6 RRDBs) and D (8 base channels, FC 100)
    channels: int = 32
    growth: int = 16
    blocks: int = 6
    batch_norm: bool = False
    dense_residual: bool = False  # not in the paper: a dense residual over the matrix (components/models/rrdb.py)
    d_base_channels: int = 8
    # losses (paper eq. 10 weights 1/1/1; reference code 1/10/0.01)
    loss_norm: Literal["sum", "mean"] = "sum"  # sum: eq. 9's squared L2 norms over dims; mean: averaged (weights x 1/128, 1/d^2)
    w_gan: float = 1.0
    w_percep: float = 1.0
    w_feat: float = 1.0
    w_ce: float = 0.0  # not in the paper: CE of C(F_sr) on the face's label, weighted by w (docs/methods.md); 0 = paper
    k: float = 2.0
    p: float = 6.0
    sigma: float = 1.5
    r: float = 1.0
    detach_weights: bool = True  # reference code lets gradients flow through w (False)
    # optimisation (paper: lr 2e-4 halved at 20k, 50k, 100k, 200k)
    lr: float = 2e-4
    milestones: tuple[int, ...] = (20000, 50000, 100000, 200000)
    iterations: int = 300000
    pretrain_iterations: int = 0  # G with the feature L2 loss only, before the GAN
    batch_size: int = 32
    seed: int = 0
    # Ray Train (the shared resources are RayConfig's, params.yaml [ray])
    checkpoint_every: int = 1000
    eval_every: int = 1000
    run_name: str = "train_fsr"
    tuned: str = ""  # the tune stage's result: its best sigma, r, k, p replace the values above

    def __post_init__(self) -> None:
        if self.sigma <= 1:
            raise BadInput(f"fsr.sigma: must be > 1 so that w = (sigma - p)^r stays positive, got {self.sigma}")
        if self.k <= 0 or self.p <= 0:
            raise BadInput(f"fsr.k and fsr.p must be positive, got k={self.k}, p={self.p}")
        if self.loss_norm not in ("mean", "sum"):
            raise BadInput(f"train_fsr.loss_norm: must be 'mean' or 'sum', got {self.loss_norm!r}")
        weights = {"w_gan": self.w_gan, "w_percep": self.w_percep, "w_feat": self.w_feat, "w_ce": self.w_ce}
        if min(weights.values()) < 0 or max(weights.values()) == 0:
            raise BadInput(f"train_fsr loss weights must be >= 0 and not all 0; got {weights}")
        RayConfig.__post_init__(self)
        if self.iterations < 1 or self.batch_size < 2:
            raise BadInput(f"train_fsr.iterations >= 1 and train_fsr.batch_size >= 2 are required; got {self.iterations}, "
                           f"{self.batch_size}")
        if self.checkpoint_every < 1 or self.eval_every < 1:
            raise BadInput(f"train_fsr.checkpoint_every and train_fsr.eval_every must be >= 1; got {self.checkpoint_every}, "
                           f"{self.eval_every}")


@dataclass(frozen=True)
class EvaluateConfig(TrackingConfig):
    features: str = "data/features"
    teacher: str = "models/teacher.pt"  # the frozen FER model: the feature cache's extractor and G's classifier
    fsr: str = "models/fsr.pt"  # "" leaves the FSR-FER column out
    hr_teacher: str = ""  # a CovPoolFER trained on HR faces, a path FSR-FER may serve at a scale; "" leaves it out
    prepared: str = "data/prepared"  # the faces hr_teacher classifies (the store the feature cache was made from)
    metrics: str = "metrics/evaluate.json"
    plots: str = "plots"
    splits: tuple[str, ...] = ("valid", "test")


@dataclass(frozen=True)
class RegisterConfig(TrackingConfig):
    prepared: str = "data/prepared"
    features: str = "data/features"
    teacher: str = "models/teacher.pt"
    fsr: str = "models/fsr.pt"
    hr_teacher: str = ""  # bundled when the evaluate table's valid split chose it at some scale (evaluate.hr_teacher)
    metrics: str = "metrics/evaluate.json"
    out: str = "registry/fsrfer.json"
    model_name: str = "fsrfer"


@dataclass(frozen=True)
class GMETrainConfig(GMENetConfig, RayConfig, TrackingConfig):
    prepared: str = "data/prepared"
    teacher: str = ""  # "" trains the HR teacher; else the frozen teacher the LR student distils from
    out: str = "models/gmenet.pt"
    # training
    lambda_at: float = 5.0  # A-SKD weight (paper of A-SKD: 5)
    iterations: int = 6000
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    balance_power: float = 0.5  # class-weighted CE, (1 / frequency)^power; 0: unweighted
    targets: Targets = "hard"  # "votes": the store's per-face vote distribution as a soft CE target (FER+)
    init_from_teacher: bool = False  # the student starts from its HR teacher's weights (else from random ones)
    # not in the GME-Net paper: knowledge distillation from a CovPoolFER model (the pipeline's teacher) on the
    # HR face; the CE target becomes (1 - kd_weight) * label + kd_weight * that model's class probabilities
    kd_teacher: str = ""  # a CovPoolFER file; used when kd_weight > 0
    kd_weight: float = 0.0
    kd_input: str = "hr"  # the face kd_teacher reads: "hr" (the HR face) or "lr" (the student's own LR face at its
    #                       scale: for a kd_teacher trained on LR faces, such as the multi-scale CNN)
    flip: bool = True
    seed: int = 0
    # Ray Train
    checkpoint_every: int = 500
    eval_every: int = 500
    run_name: str = "gme_train"

    def __post_init__(self) -> None:
        RayConfig.__post_init__(self)
        if self.iterations < 1 or self.batch_size < 2 or self.lr <= 0:
            raise BadInput(f"gmenet: iterations >= 1, batch_size >= 2 and lr > 0 are required; got {self.iterations}, "
                           f"{self.batch_size}, {self.lr}")
        if self.checkpoint_every < 1 or self.eval_every < 1:
            raise BadInput(f"gmenet: checkpoint_every and eval_every must be >= 1; got {self.checkpoint_every}, "
                           f"{self.eval_every}")
        if self.lambda_at < 0:
            raise BadInput(f"gmenet.lambda_at must be >= 0, got {self.lambda_at}")
        if self.balance_power < 0:
            raise BadInput(f"gmenet.balance_power must be >= 0, got {self.balance_power}")
        if self.targets not in TARGETS:
            raise BadInput(f"gmenet.targets: {self.targets!r} is not one of {TARGETS}")
        if self.init_from_teacher and not self.teacher:
            raise BadInput("gmenet.init_from_teacher: no teacher to start from (teacher is empty)")
        if not 0 <= self.kd_weight <= 1:
            raise BadInput(f"gmenet.kd_weight must be in [0, 1], got {self.kd_weight}")
        if self.kd_input not in ("hr", "lr"):
            raise BadInput(f"gmenet.kd_input: {self.kd_input!r} is not one of ('hr', 'lr')")
        if self.kd_weight > 0 and not self.kd_teacher:
            raise BadInput(f"gmenet.kd_weight is {self.kd_weight} but kd_teacher is empty: name the CovPoolFER "
                           "file to distil from")


@dataclass(frozen=True)
class MultiscaleCNNConfig(TeacherConfig):
    """The `multiscale_cnn` yardstick: the teacher's network and recipe (every TeacherConfig field),
    trained on HR and every prepared LR scale (each face at a random scale per step), from scratch
    or, with `init`, from the teacher's weights (what a practitioner with an HR model does first)."""

    section: typing.ClassVar[str] = "multiscale_cnn"
    out: str = "models/multiscale_cnn.pt"
    init: str = ""  # a CovPoolFER file of the same design to start from (the teacher: fine-tuning); "" = from scratch


@dataclass(frozen=True)
class ISRConfig(TrackingConfig):
    """The `isr_fer` yardstick: an image super-resolution network (components/models/isr.py), one
    for every scale, trained with L1 on the prepared (bicubic-upscaled LR, HR) pairs; the compare
    stage feeds its output to the frozen teacher.

    channels, blocks: the network's width and residual blocks; patch: side of the random crops
    trained on (0 = the whole face); iterations, batch_size, lr: Adam with cosine decay to 0."""

    prepared: str = "data/prepared"
    out: str = "models/isr.pt"
    channels: int = 32
    blocks: int = 4
    res_scale: float = 1.0  # residual scaling: EDSR-baseline's 1 (EDSR uses 0.1 only for its widest model)
    patch: int = 0
    iterations: int = 2000
    batch_size: int = 16
    lr: float = 5e-4
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("channels", "blocks", "iterations", "batch_size"):
            if getattr(self, name) < 1:
                raise BadInput(f"isr_fer.{name}: must be >= 1, got {getattr(self, name)}")
        if self.patch < 0 or self.lr <= 0 or not 0 < self.res_scale <= 1:
            raise BadInput(f"isr_fer: patch must be >= 0 (0 = whole face), lr > 0, res_scale in (0, 1]; got "
                           f"patch={self.patch}, lr={self.lr}, res_scale={self.res_scale}")


@dataclass(frozen=True)
class CompareConfig(TrackingConfig):
    prepared: str = "data/prepared"
    evaluate: str = "metrics/evaluate.json"  # the evaluate stage's table
    teacher: str = "models/teacher.pt"
    fsr: str = "models/fsr.pt"  # "" leaves FSR-FER's cost out
    gmenet: str = "models/gmenet.pt"
    multiscale_cnn: str = "models/multiscale_cnn.pt"  # the teacher's network trained on every scale
    isr: str = "models/isr.pt"  # image SR whose output the teacher classifies (column isr_fer)
    metrics: str = "metrics/compare.json"
    summary: str = "metrics/summary"  # <split>.json: mean accuracy over the LR scales per method (dvc metrics show)
    plots: str = "plots/compare"


@dataclass(frozen=True)
class RegisterGMEConfig(TrackingConfig):
    prepared: str = "data/prepared"
    gmenet: str = "models/gmenet.pt"
    metrics: str = "metrics/compare.json"  # the compare stage's table (GME-Net's column)
    out: str = "registry/gmenet.json"
    model_name: str = "gmenet"


@dataclass(frozen=True)
class PromotionRule:
    min_gain: float = 0.0  # mean accuracy over LR scales must beat the champion's by more than this
    tolerance: float = 0.02  # no single scale may drop more than this below the champion's


@dataclass(frozen=True)
class PromoteConfig:
    model_name: str = "fsrfer"
    version: str = ""  # "" = the version holding the `challenger` alias
    min_gain: float = 0.0
    tolerance: float = 0.02

    @property
    def rule(self) -> PromotionRule:
        return PromotionRule(self.min_gain, self.tolerance)


C = TypeVar("C")


def load_yaml(text: str, where: str) -> Any:
    """YAML 1.2 (ruamel.yaml's safe loader): `1e-3` is a float and `yes`/`on` are strings, as in DVC.
    Text that is not YAML raises BadInput naming `where`."""
    from ruamel.yaml import YAML, YAMLError

    try:
        return YAML(typ="safe", pure=True).load(text)
    except YAMLError as err:
        raise BadInput(f"{where}: not valid YAML ({' '.join(str(err).split())})") from None


def _problem(section: str, error: dict) -> str:
    """One pydantic error as `section.key[i]: what is allowed, got value`."""
    where = section + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"])
    return f"{where}: {error['msg'][0].lower()}{error['msg'][1:]}, got {error['input']!r}"


@functools.cache
def _adapter(cls: type):
    import pydantic

    return pydantic.TypeAdapter(cls)


def build_config(cls: type[C], section: str, values: dict[str, Any] | None) -> C:
    """Build a stage dataclass from a params section, validated by pydantic (strict, as JSON: a list is
    taken for a tuple and a whole number for a float, nothing else is converted). Unknown keys, values of
    the wrong type or outside a field's choices, and the dataclass's own checks raise BadInput naming the
    parameter, the value and what is allowed."""
    import json

    import pydantic

    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise BadInput(f"params.yaml [{section}]: unknown key(s) {unknown} (known: {sorted(names)})")
    try:
        return _adapter(cls).validate_json(json.dumps(values), strict=True)
    except pydantic.ValidationError as err:
        own = [e["ctx"]["error"] for e in err.errors() if isinstance(e.get("ctx", {}).get("error"), BadInput)]
        if own:  # the dataclass's __post_init__ refused a value: its message as it wrote it
            raise own[0] from None
        raise BadInput("; ".join(_problem(section, e) for e in err.errors())) from None


def _type_name(kind: Any) -> str:
    """`tuple[float, ...]` -> 'list of float', `int` -> 'int', a Literal -> "one of 'a', 'b'" (as they are
    written in params.yaml)."""
    if typing.get_origin(kind) is Literal:
        return "one of " + ", ".join(repr(choice) for choice in typing.get_args(kind))
    if typing.get_origin(kind) is tuple:
        args = typing.get_args(kind)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"list of {len(args)}: " + ", ".join(_type_name(a) for a in args)
    return getattr(kind, "__name__", str(kind))


@functools.cache
def _module_field_comments(path: str) -> dict[str, dict[str, str]]:
    """{class name: {field: its trailing `# comment`}} of every class in a module's source (parsed once)."""
    import ast
    import re

    lines = Path(path).read_text().splitlines()
    out: dict[str, dict[str, str]] = {}
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, ast.ClassDef):
            notes = out.setdefault(node.name, {})
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    found = re.search(r"#\s*(.+)$", lines[item.end_lineno - 1])
                    if found:
                        notes[item.target.id] = found.group(1).strip()
    return out


def _field_comments(cls: type) -> dict[str, str]:
    """{field: its trailing `# comment` in the source} for cls and the classes it inherits from."""
    import sys

    notes: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        source = getattr(sys.modules.get(klass.__module__), "__file__", None)
        if source:
            notes |= _module_field_comments(source).get(klass.__name__, {})
    return notes


def describe_params(cls: type, section: str) -> str:
    """The params a stage config reads, as `fsrfer <stage> --help` lists them: per section (its own,
    then the shared ones it inherits), `key: type = default  (comment)`, from the dataclass itself."""
    hints, notes = typing.get_type_hints(cls), _field_comments(cls)
    shared = shared_sections(cls)
    owner = {f.name: name for name, base in shared.items() for f in dataclasses.fields(base)}
    blocks = []
    for name in [section, *shared]:
        rows = []
        for f in dataclasses.fields(cls):
            if owner.get(f.name, section) != name:
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            default = list(default) if isinstance(default, tuple) else default
            note = f"  ({notes[f.name]})" if f.name in notes else ""
            rows.append(f"  {f.name}: {_type_name(hints[f.name])} = {default!r}{note}")
        where = "" if name == section else " (shared: set it there, not in [" + section + "])"
        blocks.append(f"params.yaml [{name}]{where}:\n" + "\n".join(rows))
    return "\n".join(blocks)


def shared_sections(cls: type) -> dict[str, type]:
    """The shared params sections a stage config inherits from: {'ray': RayConfig, ...}."""
    return {name: base for name, base in SHARED_SECTIONS.items() if issubclass(cls, base)}


def load_stage_config(cls: type[C], section: str, params_path: str | Path = "params.yaml",
                      overrides: dict[str, dict[str, Any]] | None = None) -> C:
    """The `section` of params.yaml as a `cls` instance, with the shared sections it inherits from
    ([ray], [gme_net], [mlflow]); `overrides` ({section: {key: value}}) replace values of any of them."""
    params_path = Path(params_path)
    if not params_path.is_file():
        raise BadInput(f"{params_path}: params file not found")
    params = load_yaml(params_path.read_text(), str(params_path)) or {}
    overrides = overrides or {}
    if section not in params:
        raise BadInput(f"{params_path}: no [{section}] section")
    values = {**params[section], **overrides.get(section, {})}
    for name, base in shared_sections(cls).items():
        own = {f.name for f in dataclasses.fields(base)}
        repeated = sorted(own & set(values))
        if repeated:
            raise BadInput(f"params.yaml [{section}]: {repeated} are shared by several stages; set them in [{name}]")
        shared = {**(params.get(name) or {}), **overrides.get(name, {})}
        unknown = sorted(set(shared) - own)
        if unknown:
            raise BadInput(f"params.yaml [{name}]: unknown key(s) {unknown} (known: {sorted(own)})")
        values |= shared
    return build_config(cls, section, values)


def params_sections(section: str, values: dict[str, Any], cls: type) -> dict[str, dict[str, Any]]:
    """The params.yaml sections that give `cls` these values: the inverse of load_stage_config.
    Keys of an inherited shared section ([ray], [gme_net], [mlflow]) go there; lists stay lists (YAML)."""
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
    out: dict[str, dict[str, Any]] = {}
    for name, base in shared_sections(cls).items():
        own = {f.name for f in dataclasses.fields(base)}
        out[name] = {k: v for k, v in plain.items() if k in own}
    shared = {k for sec in out.values() for k in sec}
    return {section: {k: v for k, v in plain.items() if k not in shared}} | out


def parse_overrides(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """['tune.enabled=true', 'ray.num_workers=4'] -> {'tune': {'enabled': True}, ...} (values read as YAML)."""
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        section, dot, key = name.partition(".")
        if not sep or not dot or not section or not key:
            raise BadInput(f"--set {pair!r}: expected section.key=value (e.g. tune.enabled=true)")
        out.setdefault(section, {})[key] = load_yaml(text, f"--set {pair!r}: the value")
    return out


def scale_key(factor: float) -> str:
    """Name of a scale in stores and tables: 2 -> 'x2', 2.5 -> 'x2.5'."""
    return f"x{int(factor)}" if float(factor).is_integer() else f"x{factor:g}"


