"""`fsrfer <stage> --help` says what the stage does and lists every param it reads, with its
type and default, under the params.yaml section it is set in (generated from the config)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from components import config
from components.cli import STAGES, main


def stage_help(stage: str, capsys) -> str:
    with pytest.raises(SystemExit) as done:
        main([stage, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("stage", list(STAGES))
def test_help_says_what_the_stage_does_and_lists_every_param(stage, capsys):
    text = stage_help(stage, capsys)
    spec = STAGES[stage]
    first_line = inspect.getmodule(spec.run).__doc__.strip().splitlines()[0]
    assert first_line in text
    assert f"params.yaml [{stage}]:" in text
    for f in dataclasses.fields(spec.config):
        assert f"\n  {f.name}: " in text, f.name


def test_help_puts_shared_params_under_their_own_section_with_types_and_defaults(capsys):
    text = stage_help("gme_train", capsys)
    own, ray, gme_net = (text.index(f"params.yaml [{s}]") for s in ("gme_train", "ray", "gme_net"))
    assert own < ray < gme_net
    assert "  lambda_at: float = 5.0  (A-SKD weight" in text[own:ray]  # the field's comment in components/config.py
    assert "  num_workers: int = 2" in text[ray:gme_net] and "num_workers" not in text[own:ray]
    assert "  local_channels: list of int = [32, 64, 128]" in text[gme_net:]
    assert f"  iterations: int = {config.GMETrainConfig().iterations}" in text[own:ray]
    tune = stage_help("tune", capsys)
    assert "read as base: params.yaml [train_fsr]:" in tune and "  sigma: list of 2: float, float = " in tune
