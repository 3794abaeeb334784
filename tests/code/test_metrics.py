"""The scores every table is made of (components/metrics.py), on cases worked out by hand,
and the evaluate stage's files agreeing with its JSON."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from components.metrics import accuracy_scores, format_table


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


def test_the_evaluate_csv_agrees_with_its_json(tiny_run):
    rows = list(csv.DictReader((tiny_run.root / "plots" / "accuracy.csv").open()))
    table = tiny_run.table
    assert len(rows) == sum(len(scales) for methods in table.values() for scales in methods.values())
    for row in rows:
        scores = table[row["split"]][row["method"]][row["scale"]]
        assert float(row["accuracy"]) == pytest.approx(scores["accuracy"], abs=5e-5)
        assert float(row["mean_class_accuracy"]) == pytest.approx(scores["mean_class_accuracy"], abs=5e-5)
