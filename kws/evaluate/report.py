"""What an evaluation found, as data (`EvalReport`), and the writers that turn it into files.

`compute_report` takes plain arrays (true ids, predicted ids, class probabilities) so that it is testable
without a model; `kws.evaluate.scoring` fills in where the numbers came from (checkpoint, manifest, version).
Files: report.json (everything but the per-clip predictions), predictions.csv (every clip),
confusion.png (row-normalised confusion matrix) and per_class.png (recall per class, sorted).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kws import __version__
from kws.errors import DataError
from kws.files import write_json_atomic, write_text_atomic
from kws.plots import pyplot, quiet_plotting, save_figure

LOW_CONFIDENCE = 0.25  # RECIPE: a prediction with max softmax probability <= this is "low confidence"
Z_95 = 1.959964  # standard normal quantile for a two-sided 95% interval
REPORT_FILE = "report.json"
PREDICTIONS_FILE = "predictions.csv"
CONFUSION_FILE = "confusion.png"
PER_CLASS_FILE = "per_class.png"


@dataclass(frozen=True)
class ClassMetrics:
    precision: float
    recall: float
    f1: float
    support: int  # clips of this class in the manifest


@dataclass(frozen=True)
class Misclassified:
    index: int  # line of the clip in the manifest, from 0
    audio_filepath: str
    label: str  # true label as scored
    predicted: str
    confidence: float  # max softmax probability
    top_k: tuple[tuple[str, float], ...]  # (label, probability), most probable first
    manifest_label: str | None = None  # the manifest's own label when --classes-map changed it


@dataclass(frozen=True)
class Prediction:
    audio_filepath: str
    label: str
    predicted: str
    confidence: float


@dataclass
class EvalReport:
    labels: list[str]
    num_samples: int
    accuracy: float
    accuracy_ci95: tuple[float, float]  # Wilson score interval
    top_k: int
    top_k_accuracy: float
    confusion_matrix: list[list[int]]  # rows = true label, columns = predicted label
    per_class: dict[str, ClassMetrics]
    misclassified: list[Misclassified]  # least confident first
    low_confidence_threshold: float
    low_confidence_count: int  # misclassified clips with confidence <= threshold
    checkpoint: str = ""
    checkpoint_step: int | None = None
    manifest: str = ""
    manifest_sha256: str = ""
    kws_version: str = __version__
    predictions: list[Prediction] = field(default_factory=list, repr=False)  # every clip; CSV only


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; sensible at 0%, 100% and small n."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def compute_report(
    labels: Sequence[str],
    y_true: np.ndarray,
    y_pred: np.ndarray,
    probs: np.ndarray,
    paths: Sequence[str],
    *,
    top_k: int = 5,
    low_confidence: float = LOW_CONFIDENCE,
    manifest_labels: Sequence[str] | None = None,
) -> EvalReport:
    """Metrics of one evaluation. `y_true`, `y_pred`: `(n,)` class ids; `probs`: `(n, n_classes)` softmax."""
    labels = list(labels)
    n, n_classes = len(y_true), len(labels)
    y_true, y_pred, probs = np.asarray(y_true), np.asarray(y_pred), np.asarray(probs, dtype=np.float64)
    if not (len(y_pred) == len(paths) == n == probs.shape[0]) or probs.shape[1] != n_classes:
        raise ValueError(
            f"inconsistent shapes: y_true {y_true.shape}, y_pred {y_pred.shape}, probs {probs.shape}, "
            f"{len(paths)} paths, {n_classes} labels"
        )
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    correct = int(np.trace(confusion))

    k = max(1, min(top_k, n_classes))
    ranked = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # (n, k) most probable first
    in_top_k = int((ranked == y_true[:, None]).any(axis=1).sum())

    tp = np.diag(confusion).astype(np.float64)
    predicted_count, support = confusion.sum(axis=0), confusion.sum(axis=1)
    precision = np.divide(tp, predicted_count, out=np.zeros_like(tp), where=predicted_count > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    pr_sum = precision + recall
    f1 = np.divide(2 * precision * recall, pr_sum, out=np.zeros_like(tp), where=pr_sum > 0)
    per_class = {
        label: ClassMetrics(float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
        for i, label in enumerate(labels)
    }

    confidence = probs[np.arange(n), y_pred] if n else np.zeros(0)
    wrong = np.flatnonzero(y_true != y_pred)
    misclassified = [
        Misclassified(
            index=int(i),
            audio_filepath=str(paths[i]),
            label=labels[y_true[i]],
            predicted=labels[y_pred[i]],
            confidence=float(confidence[i]),
            top_k=tuple((labels[j], float(probs[i, j])) for j in ranked[i]),
            manifest_label=(
                manifest_labels[i]
                if manifest_labels is not None and manifest_labels[i] != labels[y_true[i]]
                else None
            ),
        )
        for i in wrong.tolist()
    ]
    misclassified.sort(key=lambda m: (m.confidence, m.index))
    return EvalReport(
        labels=labels,
        num_samples=n,
        accuracy=correct / n if n else 0.0,
        accuracy_ci95=wilson_interval(correct, n),
        top_k=k,
        top_k_accuracy=in_top_k / n if n else 0.0,
        confusion_matrix=confusion.tolist(),
        per_class=per_class,
        misclassified=misclassified,
        low_confidence_threshold=low_confidence,
        low_confidence_count=sum(m.confidence <= low_confidence for m in misclassified),
        predictions=[
            Prediction(str(paths[i]), labels[y_true[i]], labels[y_pred[i]], float(confidence[i]))
            for i in range(n)
        ],
    )


def confusion_pairs(report: EvalReport, n: int | None = 10) -> list[tuple[str, str, int]]:
    """The most frequent (true, predicted, count) confusions, most frequent first."""
    pairs = [
        (report.labels[t], report.labels[p], count)
        for t, row in enumerate(report.confusion_matrix)
        for p, count in enumerate(row)
        if t != p and count > 0
    ]
    pairs.sort(key=lambda pair: (-pair[2], pair[0], pair[1]))
    return pairs if n is None else pairs[:n]


def worst_classes(report: EvalReport, n: int = 5) -> list[tuple[str, ClassMetrics]]:
    """Classes with the lowest recall (then F1), among those present in the manifest."""
    present = [(label, m) for label, m in report.per_class.items() if m.support > 0]
    present.sort(key=lambda item: (item[1].recall, item[1].f1, item[0]))
    return present[:n]


# ---------------------------------------------------------------- JSON and CSV


def report_to_dict(report: EvalReport) -> dict[str, Any]:
    """The report.json object (predictions go to predictions.csv instead)."""
    d = asdict(report)
    del d["predictions"]
    d["accuracy_ci95"] = list(report.accuracy_ci95)
    d["misclassified"] = [
        {
            "index": m.index,
            "audio_filepath": m.audio_filepath,
            "label": m.label,
            "predicted": m.predicted,
            "confidence": m.confidence,
            "top_k": [{"label": label, "probability": p} for label, p in m.top_k],
            **({"manifest_label": m.manifest_label} if m.manifest_label is not None else {}),
        }
        for m in report.misclassified
    ]
    order = ["kws_version", "checkpoint", "checkpoint_step", "manifest", "manifest_sha256", "num_samples"]
    return {**{key: d.pop(key) for key in order}, **d}


def report_from_dict(d: dict[str, Any], source: str = "<dict>") -> EvalReport:
    try:
        return EvalReport(
            labels=list(d["labels"]),
            num_samples=int(d["num_samples"]),
            accuracy=float(d["accuracy"]),
            accuracy_ci95=(float(d["accuracy_ci95"][0]), float(d["accuracy_ci95"][1])),
            top_k=int(d["top_k"]),
            top_k_accuracy=float(d["top_k_accuracy"]),
            confusion_matrix=[[int(c) for c in row] for row in d["confusion_matrix"]],
            per_class={label: ClassMetrics(**m) for label, m in d["per_class"].items()},
            misclassified=[
                Misclassified(
                    index=int(m["index"]),
                    audio_filepath=str(m["audio_filepath"]),
                    label=str(m["label"]),
                    predicted=str(m["predicted"]),
                    confidence=float(m["confidence"]),
                    top_k=tuple((str(t["label"]), float(t["probability"])) for t in m["top_k"]),
                    manifest_label=m.get("manifest_label"),
                )
                for m in d["misclassified"]
            ],
            low_confidence_threshold=float(d["low_confidence_threshold"]),
            low_confidence_count=int(d["low_confidence_count"]),
            checkpoint=str(d.get("checkpoint", "")),
            checkpoint_step=d.get("checkpoint_step"),
            manifest=str(d.get("manifest", "")),
            manifest_sha256=str(d.get("manifest_sha256", "")),
            kws_version=str(d.get("kws_version", "")),
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise DataError(
            f"{source} is not a kws evaluation report ({type(exc).__name__}: {exc}); re-run `kws evaluate`"
        ) from None


def write_report_json(report: EvalReport, path: Path) -> None:
    write_json_atomic(path, report_to_dict(report))


def read_report_json(path: Path) -> EvalReport:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; run `kws evaluate CHECKPOINT MANIFEST` first")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); re-run `kws evaluate`") from None
    return report_from_dict(d, source=str(path))


def write_predictions_csv(report: EvalReport, path: Path) -> None:
    """One row per clip, in manifest order: path, label, predicted, confidence."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["audio_filepath", "label", "predicted", "confidence"])
    for p in report.predictions:
        writer.writerow([p.audio_filepath, p.label, p.predicted, f"{p.confidence:.6f}"])
    write_text_atomic(path, buf.getvalue())


# ---------------------------------------------------------------- pictures


@quiet_plotting()
def plot_confusion(report: EvalReport, path: Path) -> None:
    """Row-normalised confusion matrix (each row sums to 100% of that class's clips), percent in cells."""
    plt = pyplot()

    cm = np.asarray(report.confusion_matrix, dtype=np.float64)
    n = len(report.labels)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    side = max(5.0, 0.36 * n + 2.5)  # inches: about a third of an inch per class keeps 35 labels legible
    fig, ax = plt.subplots(figsize=(side + 1.2, side), dpi=120)
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), report.labels, rotation=90, fontsize=8)
    ax.set_yticks(range(n), report.labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"% of each true class; accuracy {report.accuracy:.2%} on {report.num_samples:,} clips")
    ax.set_xticks(np.arange(-0.5, n, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, n, 1), minor=True)
    ax.grid(which="minor", color="#e6e6e6", linewidth=0.5)
    ax.tick_params(which="minor", length=0)
    cell_font = 7 if n <= 20 else 6
    for t, p in zip(*np.nonzero(cm), strict=True):
        value = norm[t, p]
        text = "100" if value >= 0.9995 else f"{100 * value:.0f}" if value >= 0.095 else f"{100 * value:.1f}"
        colour = "white" if value > 0.45 else ("#b00020" if t != p else "black")
        ax.text(p, t, text, ha="center", va="center", fontsize=cell_font, color=colour)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="fraction of the true class")
    fig.tight_layout()
    save_figure(fig, path)


@quiet_plotting()
def plot_per_class(report: EvalReport, path: Path) -> None:
    """Horizontal bars of recall per class, worst at the top, with support."""
    plt = pyplot()

    items = sorted(report.per_class.items(), key=lambda item: (item[1].recall, item[0]))
    n = len(items)
    fig, ax = plt.subplots(figsize=(7.0, max(2.5, 0.26 * n + 1.2)), dpi=120)
    recalls = [m.recall for _, m in items]
    colours = ["#c0392b" if r < report.accuracy else "#2e86c1" for r in recalls]
    ax.barh(range(n), recalls, color=colours, height=0.7)
    ax.set_yticks(range(n), [label for label, _ in items], fontsize=8)
    ax.set_ylim(n - 0.5, -0.5)  # worst class on top, no empty margin
    ax.set_xlim(0.0, 1.12)
    ax.axvline(report.accuracy, color="#555555", linestyle="--", linewidth=1, label="overall accuracy")
    for i, (_, m) in enumerate(items):
        ax.text(min(m.recall, 1.0) + 0.01, i, f"{m.recall:.1%}  (n={m.support})", va="center", fontsize=7)
    ax.set_xlabel("recall")
    ax.set_title("recall per class (red: below overall accuracy)")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def write_report_files(report: EvalReport, out_dir: Path) -> list[Path]:
    """Write report.json, predictions.csv, confusion.png and per_class.png into `out_dir`."""
    out_dir = Path(out_dir)
    paths = [out_dir / name for name in (REPORT_FILE, PREDICTIONS_FILE, CONFUSION_FILE, PER_CLASS_FILE)]
    write_report_json(report, paths[0])
    write_predictions_csv(report, paths[1])
    plot_confusion(report, paths[2])
    plot_per_class(report, paths[3])
    return paths
