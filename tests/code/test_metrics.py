"""The scores every table is made of (components/metrics.py), on cases worked out by hand,
and the evaluate stage's files agreeing with its JSON."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from components.io import BadInput
from components.metrics import accuracy_scores, format_table, write_accuracy_csvs, write_summary_metrics

REPO = Path(__file__).resolve().parents[2]


def one_hot(predicted: list[int], k: int) -> np.ndarray:
    return np.eye(k)[predicted] * 0.9 + 0.1 / k


def test_accuracy_and_mean_class_accuracy_by_hand():
    # class 0: 3 faces, 2 right; class 1: 1 face, right; class 2: 2 faces, 0 right; class 3: absent
    labels = np.array([0, 0, 0, 1, 2, 2])
    predicted = [0, 0, 1, 1, 0, 1]
    scores = accuracy_scores(labels, one_hot(predicted, 4), 4)
    assert scores["accuracy"] == pytest.approx(3 / 6)
    assert scores["mean_class_accuracy"] == pytest.approx((2 / 3 + 1 + 0) / 3)  # over the 3 classes present
    expected = np.zeros((4, 4), int)
    expected[0, 0], expected[0, 1], expected[1, 1], expected[2, 0], expected[2, 1] = 2, 1, 1, 1, 1
    np.testing.assert_array_equal(scores["confusion"], expected)  # rows: true class, columns: predicted
    # a label outside the classes is an error, not a face silently left out of the matrix
    with pytest.raises(BadInput, match=r"labels outside 0\.\.3: \[4\]"):
        accuracy_scores(np.array([0, 4]), one_hot([0, 1], 4), 4)


def test_the_markdown_table_shows_the_json_in_percent():
    table = {"valid": {"bicubic": {"x1": {"accuracy": 0.5}, "x2": {"accuracy": 0.25}},
                       "fsrfer": {"x1": {"accuracy": 0.5}, "x2": {"accuracy": 0.3333}}}}
    lines = format_table(table).splitlines()
    assert lines[0] == "| valid | x1 | x2 | mean LR |"
    assert lines[2] == "| bicubic | 50.0 | 25.0 | 25.0 |" and lines[3] == "| fsrfer | 50.0 | 33.3 | 33.3 |"


def top_level_plots() -> list[tuple[str, dict]]:
    """dvc.yaml's top-level plots: (id, definition)."""
    return [next(iter(entry.items())) for entry in yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]]


def test_dvc_plots_draw_accuracy_against_a_numeric_scale_one_line_per_method():
    """Each top-level plot: the linear template, x = the `scale` column, y = one column per method of a CSV
    an evaluate or compare stage writes (as a cache: false output), axis labels."""
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    written = {path.replace("${evaluate.plots}", "plots").replace("${compare.plots}", "plots/compare")
               for stage in ("evaluate", "compare") for out in dvc["stages"][stage]["outs"] for path in
               ([out] if isinstance(out, str) else out)}
    plots = top_level_plots()
    assert {name for name, _ in plots} >= {"every method, valid split", "every method, test split"}
    for name, spec in plots:
        assert spec["template"] == "accuracy_vs_scale" and spec["x"] == "scale" and spec["x_label"] and spec["y_label"], name
        (path, columns), = spec["y"].items()
        assert path in written and path.endswith(".csv"), (name, path)
        assert "bicubic" in columns and "fsrfer" in columns, (name, columns)
    every = dict(plots)["every method, valid split"]["y"]["plots/compare/accuracy_valid.csv"]
    assert every == ["bicubic", "fsrfer", "gmenet", "multiscale_cnn", "isr_fer"]


def test_the_evaluate_csvs_agree_with_its_json(tiny_run):
    """plots/accuracy_<split>.csv: a numeric scale column (1 = HR), then one column per method of the JSON,
    every scale once, each with that entry's accuracy (to the 4 decimals written)."""
    metrics = json.loads((tiny_run.root / "metrics.json").read_text())
    for split, methods in metrics.items():
        with (tiny_run.root / "plots" / f"accuracy_{split}.csv").open() as f:
            reader = csv.DictReader(f)
            rows = list(reader)
        assert reader.fieldnames == ["scale", *methods], reader.fieldnames
        keys = list(next(iter(methods.values())))
        assert [float(row["scale"]) for row in rows] == [float(k[1:]) for k in keys]
        for row, key in zip(rows, keys, strict=True):
            for method, scales in methods.items():
                assert float(row[method]) == pytest.approx(scales[key]["accuracy"], abs=5e-5 + 1e-12), (split, key, method)


def test_the_csvs_and_the_summary_of_a_table_worked_by_hand(tmp_path):
    table = {"valid": {"bicubic": {"x1": {"accuracy": 0.9}, "x2": {"accuracy": 0.61234}, "x2.5": {"accuracy": 0.4}},
                       "fsrfer": {"x1": {"accuracy": 0.9}, "x2": {"accuracy": 0.7}, "x2.5": {"accuracy": 0.5}},
                       "fsrfer_g_always": {"x1": {"accuracy": 0.8}, "x2": {"accuracy": 0.7}, "x2.5": {"accuracy": 0.5}}}}
    write_accuracy_csvs(table, tmp_path)
    assert (tmp_path / "accuracy_valid.csv").read_text().splitlines() == [
        "scale,bicubic,fsrfer,fsrfer_g_always", "1,0.9000,0.9000,0.8000", "2,0.6123,0.7000,0.7000",
        "2.5,0.4000,0.5000,0.5000"]
    write_summary_metrics(table, tmp_path)
    summary = json.loads((tmp_path / "valid.json").read_text())
    assert summary == {"mean_accuracy_lr_scales": {"bicubic": 0.5062, "fsrfer": 0.6}}  # x1 left out; G-always too
