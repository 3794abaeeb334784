"""Typed stage configs, read from params.yaml (one section per stage).

Stages never read params.yaml themselves: the CLI (or a flow) loads the section into the
stage's dataclass with `load_stage_config` and hands it over. Unknown keys and bad values
raise BadInput naming the parameter.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from components.data.records import BadInput

DATASETS = ("rafdb", "ferplus", "fer2013", "folders", "expw")


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

    dataset: str = "rafdb"
    root: str = "data/raw/synthetic"
    out: str = "data/prepared"
    aligned: bool = True
    hr_size: int = 100
    channels: int = 3
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


C = TypeVar("C")


def build_config(cls: type[C], section: str, values: dict[str, Any] | None) -> C:
    """Build a stage dataclass from a params section; unknown keys are an error, lists become tuples."""
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise BadInput(f"params.yaml [{section}]: unknown key(s) {unknown} (known: {sorted(names)})")
    for key, value in values.items():
        if isinstance(value, list):
            values[key] = tuple(value)
    return cls(**values)


def load_stage_config(cls: type[C], section: str, params_path: str | Path = "params.yaml",
                      overrides: dict[str, Any] | None = None) -> C:
    """The `section` of params.yaml as a `cls` instance; `overrides` (key -> value) replace its values."""
    params_path = Path(params_path)
    if not params_path.is_file():
        raise BadInput(f"{params_path}: params file not found")
    params = yaml.safe_load(params_path.read_text()) or {}
    if section not in params:
        raise BadInput(f"{params_path}: no [{section}] section")
    return build_config(cls, section, {**params[section], **(overrides or {})})


def parse_overrides(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """['tune.enabled=true', 'train_fsr.num_workers=4'] -> {'tune': {'enabled': True}, ...} (values read as YAML)."""
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        section, dot, key = name.partition(".")
        if not sep or not dot or not section or not key:
            raise BadInput(f"--set {pair!r}: expected section.key=value (e.g. tune.enabled=true)")
        try:
            out.setdefault(section, {})[key] = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise BadInput(f"--set {pair!r}: the value is not valid YAML ({err})") from err
    return out


def scale_key(factor: float) -> str:
    """Name of a scale in stores and tables: 2 -> 'x2', 2.5 -> 'x2.5'."""
    return f"x{int(factor)}" if float(factor).is_integer() else f"x{factor:g}"
