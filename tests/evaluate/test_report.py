"""kws.evaluate.report: metrics from plain arrays, report.json round trip, CSV and PNG writers."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from kws.errors import DataError
from kws.evaluate.report import (
    compute_report,
    confusion_pairs,
    read_report_json,
    report_from_dict,
    report_to_dict,
    wilson_interval,
    worst_classes,
    write_report_files,
)
from tests.helpers.report_checks import assert_consistent_report, assert_png, read_predictions

V2_WORDS = (
    "backward bed bird cat dog down eight five follow forward four go happy house learn left marvin nine no "
    "off on one right seven sheila six stop three tree two up visual wow yes zero"
).split()


def synthetic(
    n: int, labels: list[str], signal: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """True ids and softmax probabilities of a fake classifier whose right class gets `signal` extra logit."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(labels), n)
    logits = rng.normal(0, 1, (n, len(labels)))
    logits[np.arange(n), y] += signal
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return y, probs, [f"/data/{labels[c]}/clip{i}.wav" for i, c in enumerate(y)]


def test_metrics_on_a_hand_made_example() -> None:
    labels = ["a", "b", "c"]
    y_true = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array(
        [
            [0.8, 0.1, 0.1],
            [0.3, 0.6, 0.1],
            [0.1, 0.7, 0.2],
            [0.1, 0.85, 0.05],
            [0.2, 0.1, 0.7],
            [0.4, 0.35, 0.25],
        ]
    )
    r = compute_report(labels, y_true, probs.argmax(1), probs, [f"c{i}.wav" for i in range(6)], top_k=2)
    assert r.confusion_matrix == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert r.accuracy == pytest.approx(4 / 6)
    assert r.top_k == 2 and r.top_k_accuracy == pytest.approx(5 / 6)  # clip 5: c is third
    assert r.per_class["a"].precision == pytest.approx(0.5) and r.per_class["a"].recall == pytest.approx(0.5)
    assert r.per_class["b"].precision == pytest.approx(2 / 3) and r.per_class["b"].recall == 1.0
    assert r.per_class["b"].f1 == pytest.approx(0.8)
    assert [m.index for m in r.misclassified] == [5, 1]  # least confident first
    assert r.misclassified[0].top_k == (("a", 0.4), ("b", 0.35))
    assert r.low_confidence_count == 0
    assert confusion_pairs(r) == [("a", "b", 1), ("c", "a", 1)]
    assert [label for label, _ in worst_classes(r, 2)] == ["a", "c"]
    assert len(r.predictions) == 6 and r.predictions[5].predicted == "a"


def test_wilson_interval() -> None:
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0) and wilson_interval(10, 10)[1] == pytest.approx(
        1.0
    )
    assert wilson_interval(10, 10)[0] == pytest.approx(0.7225, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_never_predicted_class_and_class_without_clips() -> None:
    labels = ["a", "b", "c"]
    y_true = np.array([0, 0, 1])
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0]])
    r = compute_report(labels, y_true, probs.argmax(1), probs, ["x", "y", "z"])
    assert r.per_class["b"].precision == 0.0 and r.per_class["b"].recall == 0.0 and r.per_class["b"].f1 == 0.0
    assert r.per_class["c"].support == 0
    assert "c" not in [label for label, _ in worst_classes(r)]  # no clips: nothing to rank


def test_report_files_are_consistent_at_35_classes(tmp_path: Path) -> None:
    y, probs, paths = synthetic(2000, V2_WORDS, signal=2.8)
    r = compute_report(V2_WORDS, y, probs.argmax(1), probs, paths, low_confidence=0.25)
    files = write_report_files(r, tmp_path / "eval")
    assert [f.name for f in files] == ["report.json", "predictions.csv", "confusion.png", "per_class.png"]
    d = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert_consistent_report(d)
    assert 0 < d["low_confidence_count"] < len(d["misclassified"])
    rows = read_predictions(tmp_path / "eval" / "predictions.csv")
    assert len(rows) == 2000
    assert [r["audio_filepath"] for r in rows] == paths
    assert sum(r["label"] != r["predicted"] for r in rows) == len(d["misclassified"])
    width, height = assert_png(tmp_path / "eval" / "confusion.png", (1500, 1500))  # room for 35 labels
    assert_png(tmp_path / "eval" / "per_class.png", (600, 35 * 25))
    assert not list((tmp_path / "eval").glob(".*tmp*"))  # atomic writes leave no temporary files


def test_json_round_trip(tmp_path: Path) -> None:
    labels = ["yes", "no", "unknown"]
    y, probs, paths = synthetic(300, labels, signal=1.0, seed=3)
    manifest_labels = [labels[c] if labels[c] != "unknown" else "bed" for c in y]
    r = compute_report(labels, y, probs.argmax(1), probs, paths, top_k=2, manifest_labels=manifest_labels)
    r.checkpoint, r.checkpoint_step, r.manifest, r.manifest_sha256 = "/r/best.pt", 7, "/d/m.json", "ab" * 32
    back = report_from_dict(json.loads(json.dumps(report_to_dict(r))))
    r.predictions = []
    assert back == r
    assert any(m.manifest_label == "bed" for m in back.misclassified)
    assert all(m.manifest_label is None for m in back.misclassified if m.label != "unknown")


def test_read_report_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="kws evaluate"):
        read_report_json(tmp_path / "missing" / "report.json")
    bad = tmp_path / "report.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_report_json(bad)
    bad.write_text('{"labels": ["a"]}')
    with pytest.raises(DataError, match="not a kws evaluation report"):
        read_report_json(bad)


def test_labels_the_font_lacks_print_no_matplotlib_warnings(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    labels = ["はい", "いいえ", "yes"]  # DejaVu Sans has no kana: matplotlib warns once per glyph
    y, probs, paths = synthetic(60, labels, signal=1.0)
    r = compute_report(labels, y, probs.argmax(1), probs, paths)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # what a user would see, whatever filters pytest sets
        files = write_report_files(r, tmp_path / "eval")
    assert [str(w.message) for w in caught] == []
    assert capfd.readouterr().err == ""
    assert_png(files[2], (300, 300))
