"""The flows' thin layer: params.yaml updates, profiles, and the stage order taken from dvc.yaml."""

from __future__ import annotations

import shutil

import pytest
import yaml

from flows.pipeline import flatten_updates, load_profile, stages_for, update_params_file
from flows.train_fsrfer import fsrfer_updates
from tests.e2e.conftest import REPO


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    return path


def test_update_keeps_comments_and_changes_only_the_given_keys(params_file):
    before = yaml.safe_load(params_file.read_text())
    changed = update_params_file(params_file, {"train_fsr.sigma": 1.7, "prepare.scales": [2, 4], "teacher.lr": 0.001})
    assert changed == {"train_fsr.sigma": 1.7, "prepare.scales": [2, 4]}  # teacher.lr was already 0.001
    text = params_file.read_text()
    assert "# WGAN-div" in text and "# One section per stage" in text  # comments survive
    after = yaml.safe_load(text)
    assert after["train_fsr"]["sigma"] == 1.7 and after["prepare"]["scales"] == [2, 4]
    before["train_fsr"]["sigma"], before["prepare"]["scales"] = 1.7, [2, 4]
    assert after == before
    assert sorted(p.name for p in params_file.parent.iterdir()) == ["params.yaml"]  # no temp file left


def test_unknown_sections_and_keys_are_refused_and_nothing_is_written(params_file):
    original = params_file.read_text()
    with pytest.raises(ValueError, match="no section 'nope'"):
        update_params_file(params_file, {"nope.x": 1})
    with pytest.raises(ValueError, match="has no key 'sigmaa'"):
        update_params_file(params_file, {"train_fsr.sigma": 1.9, "train_fsr.sigmaa": 1})
    assert params_file.read_text() == original


def test_no_change_leaves_the_file_untouched(params_file):
    mtime = params_file.stat().st_mtime_ns
    assert update_params_file(params_file, {"train_fsr.sigma": 1.5}) == {}
    assert params_file.stat().st_mtime_ns == mtime


def test_synthetic_profile_is_what_params_yaml_ships_with(params_file):
    updates = load_profile(REPO, "synthetic")
    assert updates and update_params_file(params_file, updates) == {}


def test_the_synthetic_profile_resets_every_key_another_profile_changes():
    synthetic = set(load_profile(REPO, "synthetic"))
    for profile in (REPO / "profiles").glob("*.yaml"):
        assert set(load_profile(REPO, profile.stem)) <= synthetic, profile.name  # else switching back leaves it


def test_profiles_name_real_keys_and_unknown_profiles_fail(params_file):
    ferplus = load_profile(REPO, "ferplus")
    assert ferplus["prepare.dataset"] == "ferplus" and ferplus["prepare.channels"] == 1
    assert update_params_file(params_file, ferplus)  # every key exists in params.yaml
    with pytest.raises(ValueError, match="unknown profile"):
        load_profile(REPO, "nope")
    assert load_profile(REPO, None) == {}


def test_flow_parameters_map_onto_params_yaml_keys():
    assert fsrfer_updates(dataset="ferplus", hr_size=48, num_workers=4, fsr_iterations=10) == {
        "prepare.dataset": "ferplus", "prepare.hr_size": 48, "ray.num_workers": 4, "train_fsr.iterations": 10}
    assert fsrfer_updates() == {}
    assert fsrfer_updates(run_tune=True) == {"tune.enabled": True}
    assert flatten_updates({"a": {"b": 1}}) == {"a.b": 1}
    from flows.train_gmenet import gmenet_updates

    assert gmenet_updates(num_workers=1, iterations=50, lambda_at=2.0) == {
        "ray.num_workers": 1, "gme_teacher.iterations": 50,
        "gme_train.iterations": 50, "gme_train.lambda_at": 2.0}
    assert gmenet_updates() == {}
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for key in gmenet_updates(num_workers=1, iterations=1, lambda_at=1.0):
        section, name = key.split(".")
        assert name in params[section], key


def test_stage_order_comes_from_dvc_yaml():
    # FSR-FER's frozen model is the multi-scale CNN (params.yaml features.teacher): DVC orders it before the cache
    assert stages_for(REPO, "register") == ["prepare", "teacher", "multiscale_cnn", "features", "tune", "train_fsr",
                                            "evaluate", "register"]
    assert stages_for(REPO, "features") == ["prepare", "teacher", "multiscale_cnn", "features"]
    gme = stages_for(REPO, "register_gmenet")  # GME-Net's column sits in the table beside FSR-FER's
    assert set(gme) == {"prepare", "teacher", "features", "tune", "train_fsr", "evaluate", "gme_teacher", "gme_train",
                        "multiscale_cnn", "isr_fer", "compare", "register_gmenet"}  # the yardsticks' columns too
    assert gme.index("prepare") < min(gme.index("multiscale_cnn"), gme.index("isr_fer"))
    assert max(gme.index("multiscale_cnn"), gme.index("isr_fer")) < gme.index("compare")
    assert gme.index("gme_teacher") < gme.index("gme_train") < gme.index("compare") < gme.index("register_gmenet")
    assert gme.index("evaluate") < gme.index("compare") and "register" not in gme
    with pytest.raises(ValueError, match="no stage 'nope'"):
        stages_for(REPO, "nope")


def test_a_stage_line_written_after_a_progress_bar_reaches_the_flow_log_alone():
    """What dvc_stage logs of a stage's output line (after taking the last \\r state): tqdm's bar is cut
    off the stage's own line, a bare bar is dropped (empty), anything else is kept as it is."""
    from flows.pipeline import TQDM_BAR

    bar = "teacher:  53%|█████▎    | 8/15 [05:57<04:04, 34.93s/epoch]"
    assert TQDM_BAR.sub("", bar + "teacher epoch 9/15: loss 1.0543, valid accuracy 0.6875") == \
        "teacher epoch 9/15: loss 1.0543, valid accuracy 0.6875"
    assert TQDM_BAR.sub("", "features: 100%|██████████| 3/3 [00:01<00:00,  2.10it/s]") == ""
    from flows.pipeline import ANSI_COLOUR

    assert ANSI_COLOUR.sub("", "\x1b[36m(RayTrainWorker pid=7)\x1b[0m train_fsr iteration 75/1500") == \
        "(RayTrainWorker pid=7) train_fsr iteration 75/1500"
    for kept in ("gme_train iteration 150/3000 (5%), 2.92 it/s: l_ce 1.667", "| valid | x1 | x2 |", "a | b 3/4 [c]"):
        assert TQDM_BAR.sub("", kept) == kept
