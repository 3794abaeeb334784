"""Dataset readers on tiny fixtures written in each dataset's exact native layout."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from components.data.expw import read_expw
from components.data.fer2013 import read_fer2013_csv
from components.data.ferplus import FERPLUS_CLASSES, majority_label, read_ferplus
from components.data.folders import read_image_folders
from components.data.rafdb import RAFDB_CLASSES, read_rafdb
from components.data.records import load_image
from components.io import BadInput

SHARED = Path(__file__).resolve().parents[3] / "shared"  # the repo sits beside ../shared
FERPLUS_REAL = SHARED / "data" / "ferplus"


def write_image(path: Path, value: int, size: tuple[int, int] = (20, 20), channels: int = 3) -> Path:
    """A small constant image, so a test can tell which file a record points at."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = size if channels == 1 else (*size, channels)
    assert cv2.imwrite(str(path), np.full(shape, value, np.uint8))
    return path


# ---------------------------------------------------------------- RAF-DB basic


def make_rafdb(root: Path, lines: list[str], files: dict[str, int]) -> Path:
    """EmoLabel/list_patition_label.txt with `lines`; for each stem, an aligned and an original image."""
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("".join(f"{line}\n" for line in lines))
    for stem, value in files.items():
        write_image(root / "Image" / "aligned" / f"{stem}_aligned.jpg", value)
        write_image(root / "Image" / "original" / f"{stem}.jpg", 255 - value, size=(30, 40))
    return root


def test_rafdb_labels_and_splits(tmp_path):
    lines = [f"train_{i:05d}.jpg {i}" for i in range(1, 8)] + ["test_00001.jpg 7", "test_00002.jpg 1"]
    files = {f"train_{i:05d}": 10 * i for i in range(1, 8)} | {"test_00001": 200, "test_00002": 210}
    records, rejects = read_rafdb(make_rafdb(tmp_path, lines, files), aligned=True)
    assert rejects == []
    assert [r.label for r in records] == [0, 1, 2, 3, 4, 5, 6, 6, 0]
    assert [r.split for r in records] == ["train"] * 7 + ["test"] * 2
    assert RAFDB_CLASSES[records[3].label] == "happiness"  # RAF-DB label 4
    assert all(r.box is None and r.votes is None and r.pixels is None for r in records)


@pytest.mark.parametrize("aligned", [True, False])
def test_rafdb_aligned_flag_picks_the_folder(tmp_path, aligned):
    root = make_rafdb(tmp_path, ["train_00001.jpg 4"], {"train_00001": 40})
    (record,), rejects = read_rafdb(root, aligned=aligned)
    assert rejects == []
    if aligned:
        assert Path(record.source) == (root / "Image" / "aligned" / "train_00001_aligned.jpg").resolve()
        image = load_image(record.source, 3)
        assert image.shape == (20, 20, 3) and abs(int(image.mean()) - 40) <= 2
    else:
        assert Path(record.source) == (root / "Image" / "original" / "train_00001.jpg").resolve()
        image = load_image(record.source, 3)
        assert image.shape == (30, 40, 3) and abs(int(image.mean()) - 215) <= 2


@pytest.mark.parametrize("aligned", [True, False])
def test_rafdb_bad_rows_become_rejects(tmp_path, aligned):
    label_file = tmp_path / "EmoLabel" / "list_patition_label.txt"
    lines = [
        "train_00001.jpg 1",  # 1 good
        "train_00002.jpg 8",  # 2 label out of range
        "train_00003.jpg x",  # 3 label not a number
        "val_00004.jpg 2",  # 4 neither train_ nor test_
        "test_00005.jpg 3",  # 5 listed, file missing
        "train_x/../../../../outside.jpg 2",  # 6 escapes the image folder
        "",  # blank lines are skipped, not rejected
        "train_00007.jpg 5 extra",  # 8 wrong field count
        "test_00006.jpg 7",  # 9 good
    ]
    files = {"train_00001": 10, "train_00002": 20, "train_00003": 30, "val_00004": 40, "test_00006": 60}
    root = make_rafdb(tmp_path, lines, files)
    # a file the escaping name could be mistaken for, inside the image folder: must not be read
    write_image(root / "Image" / "aligned" / "outside_aligned.jpg", 99)
    write_image(root / "Image" / "original" / "outside.jpg", 99)

    records, rejects = read_rafdb(root, aligned=aligned)
    suffix = "_aligned.jpg" if aligned else ".jpg"
    assert [(Path(r.source).name, r.label, r.split) for r in records] == [
        (f"train_00001{suffix}", 0, "train"), (f"test_00006{suffix}", 6, "test"),
    ]
    assert len(rejects) == 6
    by_source = {r.source: r.reason for r in rejects}
    assert "unknown label '8'" in by_source[f"{label_file}:2"]
    assert "unknown label 'x'" in by_source[f"{label_file}:3"]
    assert "val_00004.jpg" in by_source[f"{label_file}:4"] and "neither train_ nor test_" in by_source[f"{label_file}:4"]
    missing = [r for r in rejects if "test_00005" in r.source]
    assert len(missing) == 1 and "missing" in missing[0].reason and f"{label_file}:5" in missing[0].reason
    assert "outside the dataset root" in by_source[f"{label_file}:6"] and "outside" in by_source[f"{label_file}:6"]
    assert "expected '<name> <label>'" in by_source[f"{label_file}:8"]


def test_rafdb_unicode_digit_label_is_a_reject(tmp_path):
    """'²'.isdigit() is True but int('²') fails: the row must be a reject, not a crash."""
    root = make_rafdb(tmp_path, ["train_00001.jpg \u00b2", "train_00002.jpg 2"], {"train_00001": 1, "train_00002": 2})
    records, rejects = read_rafdb(root)
    assert [r.label for r in records] == [1]
    assert len(rejects) == 1 and rejects[0].source.endswith(":1") and "unknown label" in rejects[0].reason


def test_rafdb_missing_label_file_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="list_patition_label.txt"):
        read_rafdb(tmp_path)


# ---------------------------------------------------------------- FER+


def votes(*counts: float) -> np.ndarray:
    return np.array(counts, dtype=np.float64)


@pytest.mark.parametrize("raw, expected", [
    (votes(4, 0, 0, 1, 3, 2, 0, 0, 0, 0), None),  # 1 vote zeroed: 4 of 9 remaining is not > half
    (votes(6, 0, 1, 1, 0, 0, 0, 0, 2, 0), 0),  # 6 of 8 after outliers -> neutral
    (votes(0, 10, 0, 0, 0, 0, 0, 0, 0, 0), 1),
    (votes(0, 0, 0, 0, 0, 0, 0, 6, 4, 0), 7),  # contempt is a real class
    (votes(5, 5, 0, 0, 0, 0, 0, 0, 0, 0), None),  # tie: exactly half is not more than half
    (votes(5, 4, 1, 0, 0, 0, 0, 0, 0, 0), 0),  # 5 of 9 after the single vote is dropped
    (votes(5, 4, 0, 0, 0, 0, 0, 0, 0, 1), 0),  # NF single vote is an outlier too
    (votes(4, 3, 3, 0, 0, 0, 0, 0, 0, 0), None),  # 4 of 10: no majority
    (votes(2, 0, 0, 0, 0, 0, 0, 0, 8, 0), None),  # unknown wins: left out
    (votes(0, 0, 0, 0, 0, 0, 0, 0, 0, 10), None),  # not a face
    (votes(1, 1, 1, 1, 1, 1, 1, 1, 1, 1), None),  # everything zeroed
])
def test_ferplus_majority_protocol(raw, expected):
    assert majority_label(raw) == expected


def make_ferplus(root: Path, rows: dict[str, list[str]], files: dict[str, list[str]]) -> Path:
    for split_folder, lines in rows.items():
        folder = root / split_folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "label.csv").write_text("".join(f"{line}\n" for line in lines))
        for name in files.get(split_folder, []):
            write_image(folder / name, 128, size=(48, 48), channels=1)
    return root


def ferplus_row(name: str, *counts: int) -> str:
    return f'{name},"(0, 0, 48, 48)",' + ",".join(str(c) for c in counts)


def test_ferplus_reader(tmp_path):
    train_rows = [
        ferplus_row("fer0000000.png", 6, 0, 1, 1, 0, 0, 0, 0, 2, 0),  # single votes zeroed: neutral 6 of 8
        ferplus_row("fer0000001.png", 0, 7, 3, 0, 0, 0, 0, 0, 0, 0),  # happiness
        ferplus_row("fer0000002.png", 5, 5, 0, 0, 0, 0, 0, 0, 0, 0),  # tie: dropped, not a reject
        ferplus_row("fer0000003.png", 0, 0, 0, 0, 0, 0, 0, 0, 0, 10),  # NF: dropped
        ferplus_row("fer0000004.png", 2, 0, 0, 0, 0, 0, 0, 0, 8, 0),  # unknown: dropped
        ferplus_row("fer0000005.png", 0, 0, 0, 0, 0, 0, 0, 9, 1, 0),  # contempt; listed, file missing
        'fer0000006.png,"(0, 0, 48, 48)",1,2,3',  # wrong column count
        ferplus_row("fer0000007.png", 0, -3, 10, 0, 0, 0, 0, 0, 0, 0),  # negative count
        'fer0000008.png,"(0, 0, 48, 48)",a,0,0,0,0,0,0,0,0,0',  # not a number
        'fer0000009.png,"(0, 0, 48, 48)",nan,0,0,0,0,0,0,0,0,0',  # not finite
        ferplus_row("../escape.png", 10, 0, 0, 0, 0, 0, 0, 0, 0, 0),  # outside the folder
    ]
    valid_rows = [ferplus_row("fer0028638.png", 0, 0, 0, 8, 2, 0, 0, 0, 0, 0)]
    present = ["fer0000000.png", "fer0000001.png", "fer0000002.png", "fer0000003.png", "fer0000004.png",
               "fer0000006.png", "fer0000007.png", "fer0000008.png", "fer0000009.png"]
    root = make_ferplus(tmp_path, {"FER2013Train": train_rows, "FER2013Valid": valid_rows},
                        {"FER2013Train": present, "FER2013Valid": ["fer0028638.png"]})
    write_image(tmp_path / "escape.png", 1, size=(48, 48), channels=1)

    records, rejects = read_ferplus(root)
    assert [(Path(r.source).name, r.label, r.split) for r in records] == [
        ("fer0000000.png", 0, "train"), ("fer0000001.png", 1, "train"), ("fer0028638.png", 3, "valid"),
    ]
    label_csv = tmp_path / "FER2013Train" / "label.csv"
    reasons = {r.source: r.reason for r in rejects}
    assert set(reasons) == {str((label_csv.parent / "fer0000005.png").resolve()), f"{label_csv}:7", f"{label_csv}:8",
                            f"{label_csv}:9", f"{label_csv}:10", f"{label_csv}:11"}
    assert "missing" in reasons[str((label_csv.parent / "fer0000005.png").resolve())]
    assert "columns" in reasons[f"{label_csv}:7"]
    assert "negative" in reasons[f"{label_csv}:8"]
    assert "not numbers" in reasons[f"{label_csv}:9"]
    assert "not finite" in reasons[f"{label_csv}:10"]
    assert "outside the dataset root" in reasons[f"{label_csv}:11"]

    # the vote distribution over the 8 emotions: single votes zeroed, unknown/NF dropped, sums to 1
    dist = records[0].votes
    assert dist.dtype == np.float32 and dist.shape == (len(FERPLUS_CLASSES),)
    np.testing.assert_allclose(dist, [1, 0, 0, 0, 0, 0, 0, 0], atol=1e-7)  # surprise 1 and sadness 1 zeroed
    np.testing.assert_allclose(records[1].votes, [0, 0.7, 0.3, 0, 0, 0, 0, 0], atol=1e-7)
    np.testing.assert_allclose(records[2].votes, [0, 0, 0, 0.8, 0.2, 0, 0, 0], atol=1e-7)
    for r in records:
        assert abs(float(r.votes.sum()) - 1) < 1e-6


def test_ferplus_needs_train_labels(tmp_path):
    (tmp_path / "FER2013Valid").mkdir()
    (tmp_path / "FER2013Valid" / "label.csv").write_text("")
    with pytest.raises(BadInput, match="FER2013Train"):
        read_ferplus(tmp_path)


@pytest.mark.skipif(not (FERPLUS_REAL / "FER2013Train" / "label.csv").is_file(),
                    reason=f"real FER+ data not found at {FERPLUS_REAL} (shared folder absent)")
def test_ferplus_real_data_counts():
    records, rejects = read_ferplus(FERPLUS_REAL)
    assert rejects == []
    splits = Counter(r.split for r in records)
    assert splits == {"train": 25045, "valid": 3191}
    assert {r.label for r in records} == set(range(8))
    train_per_class = Counter(FERPLUS_CLASSES[r.label] for r in records if r.split == "train")
    assert train_per_class["contempt"] == 120 and train_per_class["disgust"] == 116  # as the data README says
    for r in records[:200]:
        assert r.votes is not None and abs(float(r.votes.sum()) - 1) < 1e-5 and r.votes.argmax() == r.label
    image = load_image(records[0].source, 1)
    assert image.shape == (48, 48, 1) and image.dtype == np.uint8


# ---------------------------------------------------------------- FER2013 CSV


def fer_pixels(value: int | str, count: int = 48 * 48) -> str:
    return " ".join([str(value)] * count)


def write_fer2013(path: Path, rows: list[tuple[str, str, str]], header=("emotion", "pixels", "Usage")) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_fer2013_csv(tmp_path):
    gradient = " ".join(str(v % 256) for v in range(48 * 48))
    path = write_fer2013(tmp_path / "fer2013.csv", [
        ("0", gradient, "Training"),  # 2
        ("3", fer_pixels(200), "PublicTest"),  # 3
        ("6", fer_pixels(7), "PrivateTest"),  # 4
        ("7", fer_pixels(1), "Training"),  # 5 emotion out of range
        ("happy", fer_pixels(1), "Training"),  # 6 emotion not a number
        ("2", fer_pixels(1, 48 * 47), "Training"),  # 7 wrong pixel count
        ("2", fer_pixels(300), "Training"),  # 8 out of range
        ("2", fer_pixels("nan"), "Training"),  # 9 parses as float but is no grey level
        ("2", fer_pixels("x"), "Training"),  # 10 not numbers
        ("1", fer_pixels(1), "Validation"),  # 11 unknown Usage
        ("\u00b2", fer_pixels(1), "Training"),  # 12 unicode digit, not a label
    ])
    records, rejects = read_fer2013_csv(tmp_path)  # a folder means <folder>/fer2013.csv
    assert [(r.label, r.split) for r in records] == [(0, "train"), (3, "valid"), (6, "test")]
    assert [r.source for r in records] == [f"{path}:2", f"{path}:3", f"{path}:4"]
    first = records[0].pixels
    assert first.shape == (48, 48, 1) and first.dtype == np.uint8
    assert first[0, 0, 0] == 0 and first[0, 47, 0] == 47 and first[5, 16, 0] == (5 * 48 + 16) % 256
    assert (records[1].pixels == 200).all() and (records[2].pixels == 7).all()

    reasons = {r.source: r.reason for r in rejects}
    assert set(reasons) == {f"{path}:{n}" for n in range(5, 13)}
    assert "emotion" in reasons[f"{path}:5"] and "'7'" in reasons[f"{path}:5"]
    assert "'happy'" in reasons[f"{path}:6"]
    assert "2304" in reasons[f"{path}:7"] and "2256" in reasons[f"{path}:7"]
    assert "0..255" in reasons[f"{path}:8"]
    assert "0..255" in reasons[f"{path}:9"]
    assert "not numbers" in reasons[f"{path}:10"]
    assert "Usage" in reasons[f"{path}:11"] and "Validation" in reasons[f"{path}:11"]
    assert "emotion" in reasons[f"{path}:12"]


def test_fer2013_missing_columns(tmp_path):
    path = write_fer2013(tmp_path / "fer.csv", [("0", fer_pixels(1))], header=("emotion", "pixels"))
    with pytest.raises(BadInput, match="Usage") as info:
        read_fer2013_csv(path)
    assert str(path) in str(info.value)


def test_fer2013_missing_file(tmp_path):
    with pytest.raises(BadInput, match="not found"):
        read_fer2013_csv(tmp_path / "nope.csv")


# ---------------------------------------------------------------- image folders

CLASSES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")


def test_image_folders(tmp_path):
    write_image(tmp_path / "train" / "happy" / "a.png", 1)
    write_image(tmp_path / "train" / "happy" / "b.jpg", 2)
    write_image(tmp_path / "train" / "Angry" / "c.png", 3)
    write_image(tmp_path / "train" / "neutral" / "d.PNG", 4)
    write_image(tmp_path / "test" / "Sad" / "e.png", 5)
    write_image(tmp_path / "Val" / "surprised" / "f.png", 6)
    write_image(tmp_path / "train" / "contempt" / "g.png", 7)  # not a configured class
    (tmp_path / "train" / "happy" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "happy" / "Thumbs.db").write_bytes(b"\0")
    write_image(tmp_path / "extras" / "happy" / "h.png", 8)  # not a split folder: ignored

    records, rejects = read_image_folders(tmp_path, CLASSES)
    got = sorted((r.split, CLASSES[r.label], Path(r.source).name) for r in records)
    assert got == [
        ("test", "sadness", "e.png"),
        ("train", "anger", "c.png"),
        ("train", "happiness", "a.png"),
        ("train", "happiness", "b.jpg"),
        ("train", "neutral", "d.PNG"),
        ("valid", "surprise", "f.png"),
    ]
    reasons = {Path(r.source).relative_to(tmp_path).as_posix(): r.reason for r in rejects}
    assert set(reasons) == {"train/contempt", "train/happy/notes.txt", "train/happy/Thumbs.db"}
    assert "unknown class folder 'contempt'" in reasons["train/contempt"]
    assert "not an image" in reasons["train/happy/notes.txt"] and ".txt" in reasons["train/happy/notes.txt"]


def test_image_folders_without_split_folders(tmp_path):
    write_image(tmp_path / "happy" / "a.png", 1)
    with pytest.raises(BadInput, match="no split folders"):
        read_image_folders(tmp_path, CLASSES)


# ---------------------------------------------------------------- ExpW


def test_expw(tmp_path):
    write_image(tmp_path / "origin" / "afraid_african_214.jpg", 50, size=(120, 160))
    write_image(tmp_path / "origin" / "happy_woman_1.jpg", 60, size=(120, 160))
    (tmp_path / "label").mkdir()
    label = tmp_path / "label" / "label.lst"
    label.write_text("\n".join([
        "afraid_african_214.jpg 0 10 20 80 90 52.5 2",  # 1 good: top 10, left 20, right 80, bottom 90
        "happy_woman_1.jpg 0 5 6 106 50.0 60.1 3",  # 2 good, float coordinates
        "happy_woman_1.jpg 1 5 6 106 50 60.1 9",  # 3 label out of range
        "happy_woman_1.jpg 2 5 6 106 50 60.1 x",  # 4 label not a number
        "happy_woman_1.jpg 3 50 60 60 90 60.1 1",  # 5 right <= left: empty box
        "happy_woman_1.jpg 4 50 10 60 40 60.1 1",  # 6 bottom <= top
        "happy_woman_1.jpg 5 a 10 60 40 60.1 1",  # 7 not numeric
        "happy_woman_1.jpg 6 inf 10 60 40 60.1 1",  # 8 not finite
        "missing.jpg 0 1 1 20 20 1.0 1",  # 9 file missing
        "../escape.jpg 0 1 1 20 20 1.0 1",  # 10 outside the root
        "too few fields",  # 11
        "",
    ]) + "\n")
    records, rejects = read_expw(tmp_path)
    assert [(Path(r.source).name, r.label, r.box, r.split) for r in records] == [
        ("afraid_african_214.jpg", 2, (20, 10, 60, 80), "train"),
        ("happy_woman_1.jpg", 3, (6, 5, 100, 45), "train"),
    ]
    reasons = {r.source: r.reason for r in rejects}
    where = lambda n: f"{label}:{n}"  # noqa: E731
    missing_path = str((tmp_path / "origin" / "missing.jpg").resolve())
    assert set(reasons) == {where(n) for n in (3, 4, 5, 6, 7, 8, 10, 11)} | {missing_path}
    assert "unknown label '9'" in reasons[where(3)] and "unknown label 'x'" in reasons[where(4)]
    assert "empty" in reasons[where(5)] and "empty" in reasons[where(6)]
    assert "not numeric" in reasons[where(7)] and "not numeric" in reasons[where(8)]
    assert "missing" in reasons[missing_path] and where(9) in reasons[missing_path]
    assert "outside the dataset root" in reasons[where(10)]
    assert "8 fields" in reasons[where(11)]


def test_expw_box_crops_the_face(tmp_path):
    """The (x, y, w, h) box is what the prepare stage crops: check it lands on the drawn face."""
    from components.stages.prepare import load_face

    image = np.zeros((120, 160, 3), np.uint8)
    image[10:90, 20:80] = 200  # the "face": rows top..bottom, columns left..right
    (tmp_path / "origin").mkdir()
    assert cv2.imwrite(str(tmp_path / "origin" / "p.png"), image)
    (tmp_path / "label").mkdir()
    (tmp_path / "label" / "label.lst").write_text("p.png 0 10 20 80 90 50.0 3\n")
    (record,), rejects = read_expw(tmp_path)
    assert rejects == []
    face = load_face(record, 3)
    assert face.shape == (80, 60, 3) and (face == 200).all()
