"""The scores every table is made of (components/metrics.py), on cases worked out by hand,
and the evaluate stage's files agreeing with its JSON."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from components.metrics import accuracy_scores, format_table, write_accuracy_csv

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


def test_the_markdown_table_shows_the_json_in_percent():
    table = {"valid": {"bicubic": {"x1": {"accuracy": 0.5}, "x2": {"accuracy": 0.25}},
                       "fsrfer": {"x1": {"accuracy": 0.5}, "x2": {"accuracy": 0.3333}}}}
    lines = format_table(table).splitlines()
    assert lines[0] == "| valid | x1 | x2 |"
    assert lines[2] == "| bicubic | 50.0 | 25.0 |" and lines[3] == "| fsrfer | 50.0 | 33.3 |"


def evaluate_plot_data() -> dict[str, dict]:
    """dvc.yaml's plot data files of the evaluate stage (not its figures): path under the plots folder -> options."""
    prefix = "${evaluate.plots}/"
    out = {}
    for entry in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["evaluate"]["plots"]:
        path, options = next(iter(entry.items())) if isinstance(entry, dict) else (entry, None)
        assert path.startswith(prefix), path
        if path.endswith((".csv", ".json", ".tsv", ".yaml")):
            out[path[len(prefix):]] = options or {}
    return out


def test_the_evaluate_csv_agrees_with_its_json(tiny_run):
    """Every plot data file dvc.yaml declares for evaluate (plots/accuracy.csv) has the x and y columns
    it names and one row per (split, method, scale) of the metrics JSON the stage wrote, none
    missing or twice, each with that entry's numbers (to the 4 decimals written)."""
    metrics = json.loads((tiny_run.root / "metrics.json").read_text())
    expected = {(split, method, key): scores for split, methods in metrics.items()
                for method, scales in methods.items() for key, scores in scales.items()}
    data = evaluate_plot_data()
    assert list(data) == ["accuracy.csv"], data
    for name, options in data.items():
        with (tiny_run.root / "plots" / name).open() as f:
            reader = csv.DictReader(f)
            rows = list(reader)
        assert {options["x"], options["y"]} <= set(reader.fieldnames), (name, options, reader.fieldnames)
        keys = [(row["split"], row["method"], row["scale"]) for row in rows]
        assert len(keys) == len(set(keys)) and set(keys) == set(expected), (name, sorted(keys), sorted(expected))
        for row, key in zip(rows, keys, strict=True):
            for score, value in expected[key].items():
                assert float(row[score]) == pytest.approx(value, abs=5e-5 + 1e-12), (name, key, score, row[score], value)


def test_the_accuracy_csv_puts_each_score_in_its_own_column(tmp_path):
    """On the balanced synthetic set accuracy equals mean_class_accuracy, so the tiny run cannot tell the
    two columns apart: rows where they differ, written and read back by column name."""
    rows = [{"split": "valid", "method": "bicubic", "scale": "x2", "accuracy": 0.61234, "mean_class_accuracy": 0.5},
            {"split": "test", "method": "fsrfer", "scale": "x8", "accuracy": 0.25, "mean_class_accuracy": 0.19996}]
    write_accuracy_csv(rows, tmp_path / "accuracy.csv")
    with (tmp_path / "accuracy.csv").open() as f:
        read = list(csv.DictReader(f))
    assert [(r["split"], r["method"], r["scale"]) for r in read] == [("valid", "bicubic", "x2"), ("test", "fsrfer", "x8")]
    assert [(float(r["accuracy"]), float(r["mean_class_accuracy"])) for r in read] == [(0.6123, 0.5), (0.25, 0.2)]
