"""Properties every report.json must have (shared by test_report.py and test_evaluate.py)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPORT_KEYS = (
    "kws_version",
    "checkpoint",
    "manifest",
    "manifest_sha256",
    "num_samples",
    "accuracy",
    "accuracy_ci95",
    "top_k",
    "top_k_accuracy",
    "labels",
    "confusion_matrix",
    "per_class",
    "misclassified",
    "low_confidence_threshold",
    "low_confidence_count",
)
ERROR_KEYS = ("index", "audio_filepath", "label", "predicted", "confidence", "top_k")


def assert_consistent_report(d: dict[str, Any]) -> None:
    """The numbers of a report.json agree with each other."""
    for key in REPORT_KEYS:
        assert key in d, f"report.json lacks {key}"
    n, labels = d["num_samples"], d["labels"]
    cm = np.array(d["confusion_matrix"])
    assert cm.shape == (len(labels), len(labels))
    assert cm.sum() == n
    trace = int(np.trace(cm))
    assert abs(d["accuracy"] - trace / n) < 1e-12
    lo, hi = d["accuracy_ci95"]
    assert 0.0 <= lo <= d["accuracy"] <= hi <= 1.0
    assert d["top_k_accuracy"] >= d["accuracy"] - 1e-12
    assert list(d["per_class"]) == labels
    assert sum(m["support"] for m in d["per_class"].values()) == n
    for i, label in enumerate(labels):
        assert d["per_class"][label]["support"] == cm[i].sum()
    errors = d["misclassified"]
    assert len(errors) == n - trace
    for e in errors:
        for key in ERROR_KEYS:
            assert key in e
        assert e["label"] != e["predicted"]
        assert e["top_k"][0]["label"] == e["predicted"]
        assert abs(e["top_k"][0]["probability"] - e["confidence"]) < 1e-9
        assert len(e["top_k"]) == d["top_k"]
    confidences = [e["confidence"] for e in errors]
    assert confidences == sorted(confidences), "misclassified must be least confident first"
    low = sum(c <= d["low_confidence_threshold"] for c in confidences)
    assert d["low_confidence_count"] == low
    # The confusion matrix counts exactly the listed errors, pair by pair.
    off = cm.copy()
    np.fill_diagonal(off, 0)
    listed = np.zeros_like(off)
    for e in errors:
        listed[labels.index(e["label"]), labels.index(e["predicted"])] += 1
    assert (off == listed).all()


def assert_png(path: Path, min_size: tuple[int, int] = (200, 200)) -> tuple[int, int]:
    """`path` is a decodable PNG of at least `min_size` (width, height) pixels; returns its size."""
    import matplotlib.image as mpimg

    assert Path(path).read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    image = mpimg.imread(str(path))
    height, width = image.shape[:2]
    assert width >= min_size[0] and height >= min_size[1], f"{path} is only {width}x{height}"
    return width, height


def read_predictions(path: Path) -> list[dict[str, str]]:
    with Path(path).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
