"""Bad files, bad rows and bad parameters: image loading, the prepare stage, configs and the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from components.cli import main
from components.config import PrepareConfig, build_config, load_stage_config
from components.data import store
from components.data.degrade import degrade_bicubic
from components.data.records import convert_channels, load_image
from components.data.store import PreparedStore
from components.data.synthetic import SyntheticConfig, write_synthetic_rafdb
from components.io import BadInput
from components.stages.prepare import prepare

try:
    from PIL import Image
except ImportError:  # pragma: no cover - PIL is optional; the palette case needs it
    Image = None


def smooth_rgb(h: int = 64, w: int = 80) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), (xx + yy) % 256], axis=-1).astype(np.uint8)


# ---------------------------------------------------------------- load_image on bad files


def test_missing_file(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(BadInput, match="file not found") as info:
        load_image(path, 3)
    assert str(path) in str(info.value)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(BadInput, match=r"empty file \(0 bytes\)") as info:
        load_image(path, 3)
    assert str(path) in str(info.value)


def test_text_file_with_image_suffix(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture\n" * 20)
    with pytest.raises(BadInput, match="not a readable image") as info:
        load_image(path, 3)
    assert str(path) in str(info.value)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.jpg"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(BadInput, match="not a readable image") as info:
        load_image(path, 1)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
@pytest.mark.parametrize("keep", [0.5, "no-end-marker"])
def test_truncated_file(tmp_path, suffix, keep):
    whole = tmp_path / f"whole{suffix}"
    assert cv2.imwrite(str(whole), smooth_rgb())
    load_image(whole, 3)  # the uncut file is fine
    data = whole.read_bytes()
    cut = data[: len(data) // 2] if keep == 0.5 else data[: -2 if suffix == ".jpg" else -12]
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(cut)
    with pytest.raises(BadInput, match="truncated") as info:
        load_image(path, 3)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------- load_image on unusual but valid files


@pytest.mark.parametrize("channels", [1, 3])
def test_grayscale_png(tmp_path, channels):
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    path = tmp_path / "gray.png"
    assert cv2.imwrite(str(path), gray)
    image = load_image(path, channels)
    assert image.dtype == np.uint8 and image.shape == (6, 8, channels)
    for c in range(channels):
        np.testing.assert_array_equal(image[:, :, c], gray)


@pytest.mark.parametrize("channels", [1, 3])
def test_colour_png_is_rgb_order(tmp_path, channels):
    bgr = np.zeros((16, 16, 3), np.uint8)
    bgr[:, :, 2] = 250  # pure red in OpenCV's BGR order
    path = tmp_path / "red.png"
    assert cv2.imwrite(str(path), bgr)
    image = load_image(path, channels)
    assert image.shape == (16, 16, channels)
    if channels == 3:
        assert (image[:, :, 0] == 250).all() and (image[:, :, 1:] == 0).all()
    else:  # luma of pure red: 0.299 * 250
        assert abs(int(image[0, 0, 0]) - round(0.299 * 250)) <= 1


@pytest.mark.parametrize("channels", [1, 3])
def test_rgba_png_composited_on_black(tmp_path, channels):
    bgra = np.zeros((10, 12, 4), np.uint8)
    bgra[..., :3] = (50, 100, 200)  # B, G, R
    bgra[:, :6, 3] = 255  # opaque left half
    bgra[:, 6:, 3] = 0  # transparent right half
    path = tmp_path / "rgba.png"
    assert cv2.imwrite(str(path), bgra)
    image = load_image(path, channels)
    assert image.dtype == np.uint8 and image.shape == (10, 12, channels)
    assert (image[:, 6:] == 0).all(), "transparent pixels must not leak their colour"
    if channels == 3:
        assert (image[:, :6] == (200, 100, 50)).all()
    else:
        assert (image[:, :6] > 0).all()


@pytest.mark.skipif(Image is None, reason="PIL not installed: cannot write a palette PNG")
@pytest.mark.parametrize("channels", [1, 3])
def test_palette_png(tmp_path, channels):
    indices = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    pal = Image.fromarray(indices, mode="P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (253 * 3))
    path = tmp_path / "palette.png"
    pal.save(path)
    assert Image.open(path).mode == "P"
    image = load_image(path, channels)
    assert image.dtype == np.uint8 and image.shape == (2, 3, channels)
    if channels == 3:
        colours = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255)], np.uint8)
        np.testing.assert_array_equal(image, colours[indices])
    else:  # distinct grey levels, green brightest
        assert image[0, 1, 0] > image[0, 0, 0] > image[0, 2, 0]


@pytest.mark.parametrize("channels", [1, 3])
def test_16bit_png(tmp_path, channels):
    gray16 = np.array([[0, 65535], [257 * 100, 1000]], np.uint16)
    path = tmp_path / "deep.png"
    assert cv2.imwrite(str(path), gray16)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16  # really a 16-bit file
    image = load_image(path, channels)
    assert image.dtype == np.uint8 and image.shape == (2, 2, channels)
    for c in range(channels):
        np.testing.assert_array_equal(image[:, :, c], [[0, 255], [100, 4]])


def test_16bit_colour_png(tmp_path):
    bgr16 = np.zeros((3, 3, 3), np.uint16)
    bgr16[..., 2] = 65535  # red
    bgr16[..., 0] = 257 * 10  # a little blue
    path = tmp_path / "deep_rgb.png"
    assert cv2.imwrite(str(path), bgr16)
    image = load_image(path, 3)
    assert image.dtype == np.uint8
    assert (image == (255, 0, 10)).all()


def test_convert_channels_rejects_bad_requests():
    with pytest.raises(BadInput, match="channels must be 1 or 3"):
        convert_channels(np.zeros((4, 4, 3), np.uint8), 2)
    with pytest.raises(BadInput, match="unsupported image shape"):
        convert_channels(np.zeros((4, 4, 2), np.uint8), 3, "two-channel.png")


# ---------------------------------------------------------------- the prepare stage on bad files


def make_synthetic(root: Path) -> Path:
    write_synthetic_rafdb(root, SyntheticConfig(train_per_class=3, test_per_class=1, seed=0))
    return root


def prepare_config(root: Path, out: Path, **overrides) -> PrepareConfig:
    values = dict(dataset="rafdb", root=str(root), out=str(out), aligned=True, hr_size=100, channels=3,
                  scales=(2, 4), valid_fraction=0.0, seed=0)
    values.update(overrides)
    return PrepareConfig(**values)


def read_rejects(out: Path) -> dict[str, str]:
    with open(out / "rejects.csv", newline="") as fh:
        return {row["source"]: row["reason"] for row in csv.DictReader(fh)}


def test_prepare_skips_bad_files_and_reports_them(tmp_path):
    root = make_synthetic(tmp_path / "raw")
    aligned = root / "Image" / "aligned"
    empty = aligned / "train_00001_aligned.jpg"
    empty.write_bytes(b"")
    truncated = aligned / "train_00002_aligned.jpg"
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    label_file = root / "EmoLabel" / "list_patition_label.txt"
    with open(label_file, "a") as fh:
        fh.write("train_09999.jpg 3\n")
    n_lines = len(label_file.read_text().splitlines())

    out = tmp_path / "prepared"
    summary = prepare(prepare_config(root, out))

    assert summary["counts"] == {"train": 19, "test": 7}
    assert summary["rejects"] == 3
    rejects = read_rejects(out)
    assert len(rejects) == 3
    assert rejects[str(empty.resolve())] == "empty file (0 bytes)"
    assert "truncated" in rejects[str(truncated.resolve())]
    missing = str((aligned / "train_09999_aligned.jpg").resolve())
    assert "missing" in rejects[missing] and f"{label_file}:{n_lines}" in rejects[missing]

    st = PreparedStore(out)
    assert st.meta["rejects"] == 3 and st.scale_keys == ["x2", "x4"]
    assert sum(st.meta["counts"]["train"].values()) == 19
    sources = {row["source"] for row in st.manifest()}  # relative to the dataset root
    assert "Image/aligned/train_00003_aligned.jpg" in sources
    assert "Image/aligned/train_00001_aligned.jpg" not in sources  # the empty file
    assert "Image/aligned/train_00002_aligned.jpg" not in sources  # the truncated file
    assert len(sources) == 26
    # each good image is in the store, unchanged (hr_size 100 = the synthetic aligned size)
    hr = np.asarray(st.array("train", "hr"))
    labels = np.asarray(st.array("train", "labels"))
    assert hr.shape == (19, 100, 100, 3) and hr.dtype == np.uint8
    for row in st.manifest():
        if row["split"] == "train":
            i = int(row["index"])
            np.testing.assert_array_equal(hr[i], load_image(root / row["source"], 3))
            assert labels[i] == int(row["label"])
    np.testing.assert_array_equal(st.array("train", "x2"), degrade_bicubic(hr, 2))
    assert st.array("train", "x4").shape == (19, 25, 25, 3)


def test_prepare_rejects_image_smaller_than_hr_size(tmp_path):
    root = make_synthetic(tmp_path / "raw")
    small = root / "Image" / "aligned" / "test_00003_aligned.jpg"
    assert cv2.imwrite(str(small), smooth_rgb(60, 70))
    out = tmp_path / "prepared"
    summary = prepare(prepare_config(root, out))
    assert summary["counts"] == {"train": 21, "test": 6}
    rejects = read_rejects(out)
    assert list(rejects) == [str(small.resolve())]
    assert "70x60" in rejects[str(small.resolve())] and "HR size 100" in rejects[str(small.resolve())]


def test_prepare_downsizes_larger_images_to_hr_size(tmp_path):
    root = make_synthetic(tmp_path / "raw")
    out = tmp_path / "prepared"
    prepare(prepare_config(root, out, hr_size=48, channels=1, scales=(2, 3.5)))
    st = PreparedStore(out)
    assert st.array("train", "hr").shape == (21, 48, 48, 1)
    assert st.array("test", "x2").shape == (7, 24, 24, 1)
    assert st.array("test", "x3.5").shape == (7, 13, 13, 1)


def test_prepare_with_nothing_usable_is_bad_input(tmp_path):
    root = tmp_path / "raw"
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 9\n")
    with pytest.raises(BadInput, match="no usable rafdb records"):
        prepare(prepare_config(root, tmp_path / "prepared"))
    assert not (tmp_path / "prepared").exists()


# ---------------------------------------------------------------- bad parameters


@pytest.mark.parametrize("overrides, parameter", [
    ({"dataset": "nope"}, "prepare.dataset"),
    ({"scales": (0.5,)}, "prepare.scales"),
    ({"scales": ()}, "prepare.scales"),
    ({"scales": ("2",)}, "prepare.scales"),
    ({"channels": 2}, "prepare.channels"),
    ({"hr_size": 12, "scales": (8,)}, "prepare.hr_size"),
    ({"valid_fraction": 1.0}, "prepare.valid_fraction"),
    ({"dataset": "folders"}, "prepare.classes"),
])
def test_prepare_config_rejects_bad_values(overrides, parameter):
    with pytest.raises(BadInput) as info:
        PrepareConfig(**overrides)
    assert parameter in str(info.value)


def test_build_config_unknown_key():
    with pytest.raises(BadInput, match="hr_sise"):
        build_config(PrepareConfig, "prepare", {"hr_size": 64, "hr_sise": 48})


def test_build_config_lists_become_tuples():
    cfg = build_config(PrepareConfig, "prepare", {"scales": [2, 2.5], "hr_size": 64})
    assert cfg.scales == (2, 2.5) and cfg.hr_size == 64


def test_load_stage_config_errors(tmp_path):
    with pytest.raises(BadInput, match="params file not found"):
        load_stage_config(PrepareConfig, "prepare", tmp_path / "missing.yaml")
    params = tmp_path / "params.yaml"
    params.write_text("teacher:\n  epochs: 1\n")
    with pytest.raises(BadInput, match=r"no \[prepare\] section"):
        load_stage_config(PrepareConfig, "prepare", params)


@pytest.mark.parametrize("section, problem", [
    ("prepare:\n  dataset: nope\n", "prepare.dataset"),
    ("prepare:\n  scales: [0.5]\n", "prepare.scales"),
    ("prepare:\n  dataset: rafdb\n  colour: true\n", "colour"),
])
def test_cli_bad_params_exit_2(tmp_path, capsys, section, problem):
    params = tmp_path / "params.yaml"
    params.write_text(section)
    assert main(["prepare", "--params", str(params)]) == 2
    err = capsys.readouterr().err
    assert "fsrfer prepare: error:" in err and problem in err


@pytest.mark.parametrize("pair, problem", [
    ("prepare.scales", "expected section.key=value"),
    ("scales=[2]", "expected section.key=value"),
    ("prepare.nope=1", "unknown key(s) ['nope']"),
    ("teacher.epochs=1", "reads params sections ['prepare']"),
    ("prepare.scales=[0.5]", "prepare.scales"),
])
def test_cli_bad_set_overrides_exit_2(tmp_path, capsys, pair, problem):
    params = tmp_path / "params.yaml"
    params.write_text("prepare:\n  dataset: rafdb\n")
    assert main(["prepare", "--params", str(params), "--set", pair]) == 2
    assert problem in capsys.readouterr().err


def test_set_overrides_replace_values_for_this_run_only():
    from components.config import parse_overrides

    assert parse_overrides(["tune.enabled=true", "tune.sigma=[1.2, 2]", "train_fsr.out=models/a.pt"]) == {
        "tune": {"enabled": True, "sigma": [1.2, 2]}, "train_fsr": {"out": "models/a.pt"}}


def test_cli_missing_dataset_folder_exit_2(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(f"prepare:\n  root: {tmp_path / 'no-such-folder'}\n  out: {tmp_path / 'out'}\n")
    assert main(["prepare", "--params", str(params)]) == 2
    assert "list_patition_label.txt" in capsys.readouterr().err


def test_cli_prepare_runs(tmp_path, capsys):
    root = make_synthetic(tmp_path / "raw")
    params = tmp_path / "params.yaml"
    out = tmp_path / "prepared"
    params.write_text(f"prepare:\n  root: {root}\n  out: {out}\n  hr_size: 100\n  scales: [2, 4]\n  valid_fraction: 0.0\n")
    assert main(["prepare", "--params", str(params)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"] == {"train": 21, "test": 7} and summary["rejects"] == 0
    assert (out / "meta.json").is_file()
    # --set changes this run only: another output folder and scale, params.yaml untouched
    before = params.read_text()
    assert main(["prepare", "--params", str(params), "--set", f"prepare.out={tmp_path / 'other'}",
                 "--set", "prepare.scales=[3]"]) == 0
    assert json.loads((tmp_path / "other" / "meta.json").read_text())["scales"] == [3]
    assert params.read_text() == before


# ---------------------------------------------------------------- atomic writes


def snapshot(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_failed_rewrite_leaves_old_store_intact(tmp_path, monkeypatch):
    root = make_synthetic(tmp_path / "raw")
    out = tmp_path / "data" / "prepared"
    prepare(prepare_config(root, out))
    before = snapshot(out)
    assert "train/hr.npy" in before and "meta.json" in before

    real_save = np.save
    calls = []

    def failing_save(*args, **kwargs):
        calls.append(args[0])
        if len(calls) > 2:
            raise OSError("disk full (simulated)")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(store.np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        # a different config: a half-written replacement would be visible in the content
        prepare(prepare_config(root, out, scales=(2, 3)))
    monkeypatch.undo()
    assert len(calls) == 3

    assert snapshot(out) == before
    st = PreparedStore(out)
    assert st.scale_keys == ["x2", "x4"]
    assert st.array("train", "hr").shape == (21, 100, 100, 3)
    assert np.load(out / "train" / "x4.npy").shape == (21, 25, 25, 3)
    assert sorted(p.name for p in out.parent.iterdir()) == ["prepared"], "temp or old folders left behind"

    # and a successful rerun does replace it, again leaving nothing beside it
    prepare(prepare_config(root, out, scales=(2, 3)))
    assert PreparedStore(out).scale_keys == ["x2", "x3"]
    assert not (out / "train" / "x4.npy").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["prepared"]


def test_shared_sections_fill_every_stage_that_inherits_them(tmp_path):
    """[ray] and [gme_net] are written once and read by each stage whose config inherits them."""
    from components.config import FSRConfig, GMETrainConfig

    params = tmp_path / "params.yaml"
    params.write_text("ray:\n  num_workers: 3\n  storage: rr\ngme_net:\n  stem_channels: 4\n"
                      "train_fsr:\n  iterations: 5\ngme_teacher:\n  iterations: 7\ngme_train:\n  lambda_at: 2.0\n")
    fsr = load_stage_config(FSRConfig, "train_fsr", params)
    teacher = load_stage_config(GMETrainConfig, "gme_teacher", params)
    student = load_stage_config(GMETrainConfig, "gme_train", params, {"ray": {"num_workers": 1}})
    assert (fsr.num_workers, fsr.storage, fsr.iterations) == (3, "rr", 5)
    assert (teacher.num_workers, teacher.stem_channels, teacher.iterations) == (3, 4, 7)
    assert (student.num_workers, student.stem_channels, student.lambda_at) == (1, 4, 2.0)


@pytest.mark.parametrize("text, problem", [
    ("ray:\n  num_workers: 2\ntrain_fsr:\n  num_workers: 4\n", "shared by several stages; set them in [ray]"),
    ("ray:\n  workers: 2\ntrain_fsr: {}\n", "params.yaml [ray]: unknown key(s) ['workers']"),
    ("ray:\n  num_workers: 0\ntrain_fsr: {}\n", "ray.num_workers >= 1"),
])
def test_shared_sections_refuse_repeats_unknown_keys_and_bad_values(tmp_path, text, problem):
    from components.config import FSRConfig

    params = tmp_path / "params.yaml"
    params.write_text(text)
    with pytest.raises(BadInput) as info:
        load_stage_config(FSRConfig, "train_fsr", params)
    assert problem in str(info.value)


def test_cli_set_reaches_a_shared_section(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("ray: {}\ntrain_fsr:\n  features: nowhere\n")
    assert main(["train_fsr", "--params", str(params), "--set", "train_fsr.num_workers=1"]) == 2
    assert "set them in [ray]" in capsys.readouterr().err
    assert main(["train_fsr", "--params", str(params), "--set", "gme_net.stem_channels=1"]) == 2
    assert "reads params sections ['mlflow', 'ray', 'train_fsr']" in capsys.readouterr().err


def test_a_training_stage_refuses_an_unknown_runner(tiny_run):
    from components.config import FSRConfig
    from components.stages.train_fsr import train_fsr

    with pytest.raises(BadInput, match="runner: 'threads' is not one of"):
        train_fsr(FSRConfig(features=str(tiny_run.features), teacher=str(tiny_run.teacher)), runner="threads")


def test_gan_training_refuses_a_feature_cache_without_a_valid_split(tmp_path):
    """Selection reads valid only: no silent fallback to test (the teacher and GME-Net stages: test_teacher_levers)."""
    import json

    from components.config import FSRConfig
    from components.stages.train_fsr import train_fsr

    (tmp_path / "manifest.json").write_text(json.dumps({"splits": {"train": {}, "test": {}}, "keys": ["x1"]}))
    with pytest.raises(BadInput, match="no valid split to evaluate G on"):
        train_fsr(FSRConfig(features=str(tmp_path), teacher=str(tmp_path / "t.pt")))


@pytest.mark.parametrize("section, text, problem", [
    ("teacher", "epochs: ten", "teacher.epochs: input should be a valid integer, got 'ten'"),
    ("teacher", "epochs: 2.5", "teacher.epochs: input should be a valid integer, got 2.5"),
    ("teacher", "epochs: 0", "teacher.epochs: must be positive, got 0"),
    ("teacher", "augment: maybe", "teacher.augment: input should be a valid boolean, got 'maybe'"),
    ("teacher", "augment: yes", "teacher.augment: input should be a valid boolean, got 'yes'"),  # YAML 1.2
    ("teacher", "lr: fast", "teacher.lr: input should be a valid number, got 'fast'"),
    ("teacher", "balance: lots", "teacher.balance: input should be 'weighted_loss', 'sampler' or 'none', got 'lots'"),
    ("teacher", "conv_channels: 64", "teacher.conv_channels: input should be a valid array, got 64"),
    ("teacher", "conv_channels: [64, wide]", "teacher.conv_channels[1]: input should be a valid integer, got 'wide'"),
    ("teacher", "lr: [1e-3", "params.yaml: not valid YAML"),
    ("prepare", "channels: 2", "prepare.channels: input should be 1 or 3, got 2"),
    ("tune", "sigma: [1.1]", "tune.sigma[1]: field required, got [1.1]"),
    ("evaluate", "fsr: 3", "evaluate.fsr: input should be a valid string, got 3"),
    ("train_fsr", "loss_norm: l2", "train_fsr.loss_norm: input should be 'sum' or 'mean', got 'l2'"),
])
def test_cli_refuses_values_of_the_wrong_type_naming_the_param(tmp_path, capsys, section, text, problem):
    params = tmp_path / "params.yaml"
    params.write_text(f"{section}:\n  {text}\ntrain_fsr: {{}}\nray: {{}}\n" if section != "train_fsr" else
                      f"{section}:\n  {text}\nray: {{}}\n")
    assert main([section, "--params", str(params)]) == 2
    assert problem in capsys.readouterr().err


def test_params_are_read_as_yaml_1_2():
    """`lr: 1e-3` is the number 0.001 (PyYAML's YAML 1.1 reads a string), and so are the --set values."""
    from components.config import TeacherConfig, load_yaml, parse_overrides

    cfg = build_config(TeacherConfig, "teacher", load_yaml("lr: 1e-3\nweight_decay: 5e-4\n", "params.yaml"))
    assert cfg.lr == 0.001 and isinstance(cfg.lr, float) and cfg.weight_decay == 0.0005
    assert parse_overrides(["teacher.lr=1e-3", "teacher.augment=false"]) == {"teacher": {"lr": 0.001, "augment": False}}
    with pytest.raises(BadInput, match=r"teacher.lr: input should be a valid number, got '1e-3'"):
        build_config(TeacherConfig, "teacher", {"lr": "1e-3"})  # a quoted number stays a string: refused


def test_params_sections_round_trip_through_the_loader(tmp_path):
    """params_sections writes a config's values as the sections load_stage_config reads back."""
    from dataclasses import asdict

    from components.config import FSRConfig, GMETrainConfig, params_sections

    for section, cfg in [("train_fsr", FSRConfig(num_workers=3, iterations=7, milestones=(2, 5))),
                         ("gme_train", GMETrainConfig(stem_channels=4, local_channels=(4, 8), cpus_per_worker=0.5))]:
        sections = params_sections(section, asdict(cfg), type(cfg))
        assert "num_workers" not in sections[section] and sections["ray"]["num_workers"] == cfg.num_workers
        params = tmp_path / f"{section}.yaml"
        params.write_text(yaml.safe_dump(sections))
        assert load_stage_config(type(cfg), section, params) == cfg
