"""What a stream evaluation found, as data (`StreamReport`), and the writers that turn it into files.

Files: report.json (kind "stream": options, hours, per-keyword and overall counts at the chosen thresholds, or
at the given ones of `kws evaluate --thresholds`, the DET curves as data, the missed events), thresholds.json
(what `kws detect --thresholds` and `kws export` read; not written for given thresholds), detections.jsonl
(the final detections, each with its outcome) and det.png.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kws import __version__
from kws.detect.decode import Detection
from kws.detect.matching import Counts, Matched
from kws.detect.sweep import DetCurve, OperatingPoint
from kws.errors import DataError
from kws.files import read_text, write_json_atomic, write_text_atomic
from kws.plots import pyplot, quiet_plotting, save_figure
from kws.stream_manifest import Event

KIND = "stream"
REPORT_FILE = "report.json"
DETECTIONS_FILE = "detections.jsonl"
DET_FILE = "det.png"


@dataclass(frozen=True)
class MissedEvent:
    audio_filepath: str
    event: Event
    best_score: float  # the highest smoothed score of its label within the tolerance of the event

    def to_json(self) -> dict[str, Any]:
        e = self.event
        return {
            "audio_filepath": self.audio_filepath,
            "label": e.label,
            "start_s": e.start_s,
            "end_s": e.end_s,
            "best_score": round(self.best_score, 6),
        }


@dataclass
class StreamReport:
    labels: list[str]  # the model's
    options: dict[str, float]  # hop_s, smooth_s, refractory_s, tolerance_s, target_fa_per_hour, sweep_floor
    n_recordings: int
    hours: float
    operating_points: dict[str, OperatingPoint]  # per keyword: the chosen threshold
    per_keyword: dict[str, Counts]  # at the chosen thresholds, all keywords together
    overall: Counts
    substitutions: list[tuple[str, str, int]]  # (event label, detected label, count)
    curves: dict[str, DetCurve]
    missed: list[MissedEvent]
    detections: list[Matched] = field(default_factory=list, repr=False)  # detections.jsonl
    checkpoint: str = ""
    checkpoint_step: int | None = None
    checkpoint_sha256: str = ""
    manifest: str = ""
    manifest_sha256: str = ""
    scoring_s: float = 0.0  # wall-clock seconds of running the model over the audio
    kws_version: str = __version__
    thresholds_from: str | None = None  # `kws evaluate --thresholds FILE`: given, not chosen on this audio
    note: str = ""  # e.g. given thresholds chosen for another checkpoint

    @property
    def thresholds(self) -> dict[str, float]:
        return {label: p.threshold for label, p in self.operating_points.items()}

    @property
    def real_time_factor(self) -> float:
        return self.hours * 3600.0 / self.scoring_s if self.scoring_s > 0 else math.inf


def _curve_json(curve: DetCurve, point: OperatingPoint) -> dict[str, Any]:
    thin = curve.thinned()
    miss = thin.miss_rate
    return {
        "threshold": [round(float(x), 6) for x in thin.thresholds],
        "miss_rate": None if miss is None else [round(float(x), 6) for x in miss],
        "fa_per_hour": [round(float(x), 6) for x in thin.fa_per_hour],
        "chosen": {
            "threshold": _finite(point.threshold),
            "miss_rate": point.miss_rate,
            "fa_per_hour": point.fa_per_hour,
        },
    }


def _finite(threshold: float) -> float | None:
    """A threshold for JSON: None for a keyword that never fires (inf)."""
    return threshold if math.isfinite(threshold) else None


def report_to_dict(report: StreamReport) -> dict[str, Any]:
    """The report.json object. With thresholds given (`thresholds_from`), no target rate: they were chosen
    elsewhere."""
    per_keyword = {}
    for label, counts in report.per_keyword.items():
        point = report.operating_points.get(label)
        threshold = None if point is None else _finite(point.threshold)
        entry: dict[str, Any] = {"threshold": threshold, **counts.to_json()}
        if point is not None and point.note:
            entry["note"] = point.note
        per_keyword[label] = entry
    overall = report.overall.to_json()
    options = dict(report.options)
    if report.thresholds_from is not None:
        options.pop("target_fa_per_hour", None)
    return {
        "kind": KIND,
        "kws_version": report.kws_version,
        "checkpoint": report.checkpoint,
        "checkpoint_step": report.checkpoint_step,
        "manifest": report.manifest,
        "manifest_sha256": report.manifest_sha256,
        "options": options,
        **({} if report.thresholds_from is None else {"thresholds_from": report.thresholds_from}),
        **({"note": report.note} if report.note else {}),
        "labels": report.labels,
        "n_recordings": report.n_recordings,
        "hours": report.hours,
        "n_events": report.overall.n_events,
        "scoring_s": round(report.scoring_s, 3),
        "real_time_factor": round(report.real_time_factor, 1) if report.scoring_s > 0 else None,
        "thresholds": {label: _finite(x) for label, x in report.thresholds.items()},
        "per_keyword": per_keyword,
        "overall": overall,
        "substitutions": [{"label": t, "detected": d, "count": n} for t, d, n in report.substitutions],
        "det_curves": {
            label: _curve_json(curve, report.operating_points[label])
            for label, curve in report.curves.items()
        },
        "missed": [m.to_json() for m in report.missed],
    }


def thresholds_to_dict(report: StreamReport) -> dict[str, Any]:
    """thresholds.json: per-keyword thresholds and the settings they were chosen with."""
    o = report.options
    return {
        "target_fa_per_hour": o["target_fa_per_hour"],
        "thresholds": report.thresholds,
        "hop_s": o["hop_s"],
        "smooth_s": o["smooth_s"],
        "refractory_s": o["refractory_s"],
        # the model they were chosen for: `kws export` notes thresholds of another checkpoint
        "checkpoint": Path(report.checkpoint).name if report.checkpoint else "",
        "checkpoint_sha256": report.checkpoint_sha256,
        "checkpoint_step": report.checkpoint_step,
    }


def write_detections(path: Path, detections: list[Matched]) -> None:
    write_text_atomic(path, "".join(json.dumps(m.to_json()) + "\n" for m in detections))


@quiet_plotting()
def plot_det(report: StreamReport, path: Path) -> None:
    """Miss rate against false accepts per hour, one line per keyword with events, its chosen point marked.
    The x axis is logarithmic above one false accept in the whole audio and linear below (so 0 shows)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 5.0), dpi=120)
    one_fa = 1.0 / report.hours if report.hours > 0 else 1.0
    target = report.options["target_fa_per_hour"]
    colours = plt.get_cmap("tab10" if len(report.curves) <= 10 else "tab20")
    drawn = 0
    for i, (label, curve) in enumerate(sorted(report.curves.items())):
        miss = curve.miss_rate
        if miss is None or len(curve.thresholds) == 0:
            continue  # no events, or no candidates: no curve to draw
        colour = colours(i % colours.N)
        ax.plot(curve.fa_per_hour, miss, ".-", color=colour, linewidth=1.2, markersize=3, label=label)
        point = report.operating_points[label]
        if point.miss_rate is not None:
            ax.plot([point.fa_per_hour], [point.miss_rate], "o", color=colour, markersize=6)
        drawn += 1
    ax.set_xscale("symlog", linthresh=one_fa)
    ax.set_xlim(left=0.0)
    ax.set_ylim(-0.02, 1.02)
    if report.thresholds_from is None:
        ax.axvline(target, color="#555555", linestyle="--", linewidth=1, label=f"target {target:g} FA/h")
    ax.set_xlabel("false accepts per hour")
    ax.set_ylabel("miss rate")
    dots = "chosen" if report.thresholds_from is None else "given"
    ax.set_title(
        f"DET: {report.hours:.2f} h of audio, {report.overall.n_events} events (dots: {dots} thresholds)"
    )
    ax.grid(True, which="both", color="#e6e6e6", linewidth=0.5)
    if drawn:
        ax.legend(loc="best", fontsize=7, ncol=2 if drawn > 8 else 1)
    fig.tight_layout()
    save_figure(fig, path)


def write_report_files(report: StreamReport, out_dir: Path, thresholds_file: str | None) -> list[Path]:
    """Write report.json, `thresholds_file` (None: no thresholds file), detections.jsonl and det.png into
    `out_dir`."""
    out_dir = Path(out_dir)
    names = (REPORT_FILE, DETECTIONS_FILE, DET_FILE, *([thresholds_file] if thresholds_file else []))
    paths = [out_dir / name for name in names]
    write_json_atomic(paths[0], report_to_dict(report))
    write_detections(paths[1], report.detections)
    plot_det(report, paths[2])
    if thresholds_file:
        write_json_atomic(paths[3], thresholds_to_dict(report))
    return paths


# ---------------------------------------------------------------- reading back (kws listen-errors)


def is_stream_evaluation(eval_dir: Path) -> bool:
    """Whether EVAL_DIR/report.json was written by a stream evaluation."""
    path = Path(eval_dir) / REPORT_FILE
    if not path.is_file():
        return False
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # the clip reader says what is wrong with it
    return isinstance(d, dict) and d.get("kind") == KIND


@dataclass
class StreamErrors:
    """What listen-errors shows of a stream evaluation: its summary and each error."""

    summary: dict[str, Any]  # report.json
    false_accepts: list[Matched]  # detections that hit no event, time order per recording
    missed: list[MissedEvent]


def _event(d: dict[str, Any]) -> Event:
    return Event(str(d["label"]), float(d["start_s"]), float(d["end_s"]))


def read_stream_errors(eval_dir: Path) -> StreamErrors:
    """The false accepts (from detections.jsonl) and missed events (from report.json) of EVAL_DIR."""
    eval_dir = Path(eval_dir)
    fix = f"re-run `kws evaluate CHECKPOINT STREAM_MANIFEST` to rewrite {eval_dir}"
    where = eval_dir / REPORT_FILE
    try:
        summary = json.loads(read_text(where, "stream report", DataError, fix))
        missed = [
            MissedEvent(str(m["audio_filepath"]), _event(m), float(m["best_score"]))
            for m in summary["missed"]
        ]
        false_accepts = []
        where = eval_dir / DETECTIONS_FILE
        for line in read_text(where, "detections", DataError, fix).splitlines():
            if not line.strip():
                continue
            d = json.loads(line)
            detection = Detection(
                str(d["audio_filepath"]), float(d["time_s"]), str(d["label"]), float(d["score"])
            )
            event = _event(d["event"]) if d.get("event") else None
            if d["outcome"] != "hit":
                false_accepts.append(Matched(detection, str(d["outcome"]), event))
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"{where} is not what a stream evaluation writes ({type(exc).__name__}: {exc}); {fix}"
        ) from None
    return StreamErrors(summary, false_accepts, missed)
