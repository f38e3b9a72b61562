"""`kws evaluate CHECKPOINT STREAM_MANIFEST`: a model over recordings with known events, judged as a detector.

Per recording: the window scores (kws.detect.scores), smoothed, and every class's peaks above SWEEP_FLOOR
(kws.detect.decode); each keyword's candidates alone give its DET curve (kws.detect.sweep) and the threshold
for the target rate of false accepts. Then the detections at those thresholds, all keywords together as
`kws detect` makes them, are matched to the events (kws.detect.matching): the reported recall, false
accepts per hour and substitutions are theirs.

A call may mix clip and stream manifests; clip manifests are evaluated as before (kws.evaluate.scoring).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from kws import __version__
from kws.audio import SAMPLE_RATE, wav_frames
from kws.detect.decode import (
    SILENT_LABELS,
    Detection,
    Peaks,
    select,
    smoothed_peaks,
    threshold_array,
)
from kws.detect.matching import DEFAULT_TOLERANCE_S, match_recording, summarize
from kws.detect.scores import feature_hop_length, hop_samples, score_audio
from kws.detect.stream_report import MissedEvent, StreamReport, write_report_files
from kws.detect.sweep import SWEEP_FLOOR, choose_threshold, det_curve, point_at
from kws.errors import DataError, KWSError
from kws.evaluate.report import LOW_CONFIDENCE
from kws.evaluate.scoring import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_TOP_K,
    EvalOutcome,
    evaluate,
    out_dirs,
)
from kws.files import file_sha256
from kws.manifest import check_manifest_path
from kws.stream_manifest import Event, Stream, is_stream_manifest, read_stream_audio, read_stream_manifest
from kws.thresholds import DEFAULT_HOP_S, DEFAULT_REFRACTORY_S, DEFAULT_SMOOTH_S, THRESHOLDS_FILE

if TYPE_CHECKING:
    from kws.checkpoint import LoadedModel
    from kws.exported import OnnxModel

DEFAULT_TARGET_FA_PER_HOUR = 0.5
DURATION_TOLERANCE_S = 0.5  # a recording may differ this much from its manifest's duration


@dataclass(frozen=True)
class StreamOptions:
    """How recordings are scored and judged (`kws evaluate --hop --smooth --refractory --tolerance
    --target-fa-per-hour`)."""

    hop_s: float = DEFAULT_HOP_S
    smooth_s: float = DEFAULT_SMOOTH_S
    refractory_s: float = DEFAULT_REFRACTORY_S
    tolerance_s: float = DEFAULT_TOLERANCE_S
    target_fa_per_hour: float = DEFAULT_TARGET_FA_PER_HOUR

    def check(self) -> None:
        for name, value in asdict(self).items():
            if not (math.isfinite(value) and value >= 0):
                option = "--" + name.removesuffix("_s").replace("_", "-")
                raise KWSError(f"{option} must be a number >= 0, got {value}")
        if self.hop_s <= 0:
            raise KWSError(f"--hop must be a positive number of seconds, got {self.hop_s}")

    def to_json(self) -> dict[str, float]:
        return {**asdict(self), "sweep_floor": SWEEP_FLOOR}


@dataclass(frozen=True)
class GivenThresholds:
    """`kws evaluate --thresholds FILE`: thresholds chosen elsewhere (another set of recordings, a shipped
    model), reported as they are instead of chosen on this audio. A keyword missing from them never fires."""

    source: str
    thresholds: dict[str, float]
    note: str = ""  # when the file says it was chosen for another checkpoint (kws.detect.detector)


@dataclass
class StreamOutcome:
    manifest: Path
    out_dir: Path
    report: StreamReport
    files: list[Path]
    seconds: float  # all of it: reading, scoring, sweeping, writing


@dataclass
class RecordingScores:
    """What one recording leaves once scored: enough to decode it at any thresholds."""

    stream: Stream
    peaks: Peaks  # every keyword's, above SWEEP_FLOOR
    candidates: list[Detection]  # each keyword's detections with the other classes silenced, at the floor
    best_scores: dict[Event, float]  # per event, the highest smoothed score of its label near it


def keywords_of(labels: Sequence[str]) -> list[str]:
    return [label for label in labels if label not in SILENT_LABELS]


def score_recording(
    loaded: LoadedModel | OnnxModel,
    stream: Stream,
    options: StreamOptions,
    advance: Callable[[float], None] | None = None,
) -> RecordingScores:
    """Run the model over one recording and keep its peaks and per-keyword candidates."""
    labels = loaded.labels
    audio = read_stream_audio(Path(stream.audio_filepath))
    scores = score_audio(loaded, audio, options.hop_s, advance=advance)
    smoothed, peaks = smoothed_peaks(
        stream.audio_filepath,
        scores.times_s,
        scores.probs,
        labels,
        hop_s=scores.hop_s,
        smooth_s=options.smooth_s,
        refractory_s=options.refractory_s,
        floor=SWEEP_FLOOR,
    )
    candidates: list[Detection] = []
    for keyword in keywords_of(labels):  # alone: no other class can suppress it
        alone = threshold_array(labels, {keyword: 0.0}, None)
        candidates += select(peaks, labels, alone, options.refractory_s)
    index = {label: i for i, label in enumerate(labels)}
    best = {}
    for event in stream.events:
        near = (scores.times_s >= event.start_s - options.tolerance_s) & (
            scores.times_s <= event.end_s + options.tolerance_s
        )
        best[event] = float(smoothed[near, index[event.label]].max()) if near.any() else 0.0
    return RecordingScores(stream, peaks, candidates, best)


def read_streams(manifest: Path, labels: Sequence[str]) -> list[Stream]:
    """The manifest's recordings (absolute paths, as `kws detect` names them), each a 16 kHz mono wav of the
    duration the manifest says (false accepts per hour rest on it), every event a keyword of the model; a
    one-line DataError otherwise, before any audio is scored."""
    streams = [
        replace(s, audio_filepath=str(Path(s.audio_filepath).resolve()))
        for s in read_stream_manifest(manifest, keywords_of(labels))
    ]
    for s in streams:
        seconds = wav_frames(Path(s.audio_filepath)) / SAMPLE_RATE
        if abs(seconds - s.duration) > DURATION_TOLERANCE_S:
            raise DataError(
                f"{s.audio_filepath} lasts {seconds:.2f} s but {manifest} says {s.duration:g} s; "
                "fix its duration (or re-run `kws prepare --streams`)"
            )
    if sum(s.duration for s in streams) <= 0:
        raise DataError(f"stream manifest {manifest} holds no audio; list recordings with a duration > 0")
    return streams


def evaluate_streams(
    loaded: LoadedModel | OnnxModel,
    manifest: Path,
    out_dir: Path,
    options: StreamOptions,
    streams: Sequence[Stream] | None = None,
    given: GivenThresholds | None = None,
) -> StreamOutcome:
    """Evaluate `loaded` on one stream manifest; write report.json, thresholds.json (not with `given`
    thresholds: they were chosen elsewhere), detections.jsonl and det.png to `out_dir`."""
    from kws.console import item_progress

    t0 = time.perf_counter()
    manifest = Path(manifest)
    streams = list(streams) if streams is not None else read_streams(manifest, loaded.labels)
    labels, keywords = loaded.labels, keywords_of(loaded.labels)
    hours = sum(s.duration for s in streams) / 3600.0
    recordings = []
    with item_progress("audio s") as progress:
        task = progress.add_task(f"scoring {manifest.name}", total=hours * 3600.0)
        scoring_start = time.perf_counter()
        for stream in streams:
            recordings.append(score_recording(loaded, stream, options, lambda s: progress.advance(task, s)))
        scoring_s = time.perf_counter() - scoring_start

    curves = {
        k: det_curve(k, [(r.stream.events, r.candidates) for r in recordings], options.tolerance_s, hours)
        for k in keywords
    }
    if given is None:
        points = {k: choose_threshold(curve, options.target_fa_per_hour) for k, curve in curves.items()}
    else:
        points = {
            k: point_at(curve, given.thresholds.get(k), _given_note(k, given)) for k, curve in curves.items()
        }
    chosen = threshold_array(labels, {k: p.threshold for k, p in points.items()}, None)
    matches = [
        match_recording(
            r.stream.audio_filepath,
            r.stream.events,
            select(r.peaks, labels, chosen, options.refractory_s),
            options.tolerance_s,
        )
        for r in recordings
    ]
    summary = summarize(matches, keywords, hours)
    for k, point in points.items():  # the curve is one keyword alone; together, suppression can shift FAs
        together = summary.per_keyword[k].fa_per_hour
        if given is None and not point.note and together > options.target_fa_per_hour + 1e-9:
            points[k] = replace(
                point,
                note=f"{together:.2f} false accepts per hour with every keyword detected together (alone: "
                f"{point.fa_per_hour:.2f}): another keyword's detection suppressed a stronger false accept",
            )
    missed = [
        MissedEvent(m.audio_filepath, event, r.best_scores[event])
        for r, m in zip(recordings, matches, strict=True)
        for event in m.missed
    ]
    report = StreamReport(
        labels=list(labels),
        options=options.to_json(),
        n_recordings=len(streams),
        hours=hours,
        operating_points=points,
        per_keyword=summary.per_keyword,
        overall=summary.overall,
        substitutions=summary.substitution_pairs,
        curves=curves,
        missed=missed,
        detections=[d for m in matches for d in m.matched],
        checkpoint=str(Path(loaded.checkpoint).resolve()),
        checkpoint_step=loaded.step,
        checkpoint_sha256=file_sha256(Path(loaded.checkpoint)) if Path(loaded.checkpoint).is_file() else "",
        manifest=str(manifest.resolve()),
        manifest_sha256=file_sha256(manifest),
        scoring_s=scoring_s,
        kws_version=__version__,
        thresholds_from=None if given is None else given.source,
        note="" if given is None else given.note,
    )
    files = write_report_files(report, out_dir, THRESHOLDS_FILE if given is None else None)
    return StreamOutcome(manifest, Path(out_dir), report, files, time.perf_counter() - t0)


def _given_note(keyword: str, given: GivenThresholds) -> str:
    threshold = given.thresholds.get(keyword)
    if threshold is None:
        return f"not in {given.source}: never fires"
    if threshold <= SWEEP_FLOOR:  # peaks are kept above the floor only
        return f"below {SWEEP_FLOOR:g}, the lowest score evaluated: counted as {SWEEP_FLOOR:g}"
    return ""


def evaluate_manifests(
    checkpoint: Path,
    manifests: Sequence[Path],
    *,
    out: Path | None = None,
    device: str = "auto",
    options: StreamOptions = StreamOptions(),
    batch_size: int = DEFAULT_BATCH_SIZE,
    top_k: int = DEFAULT_TOP_K,
    low_confidence: float = LOW_CONFIDENCE,
    classes_map: str | None = None,
    given: GivenThresholds | None = None,
) -> list[EvalOutcome | StreamOutcome]:
    """`kws evaluate`: each manifest in its folder (kws.evaluate.scoring.out_dirs), clip manifests as
    kws.evaluate.scoring evaluates them, stream manifests as above (at `given` thresholds when there are).
    Every stream manifest is read and checked against the model's labels before any audio is scored."""
    from kws.evaluate.scoring import load_model

    def clips(chosen: Sequence[Path], where: Path | None) -> list[EvalOutcome]:
        return evaluate(
            checkpoint,
            chosen,
            out=where,
            batch_size=batch_size,
            device=device,
            top_k=top_k,
            low_confidence=low_confidence,
            classes_map=classes_map,
        )

    if not manifests:
        raise KWSError("give at least one manifest to evaluate")
    for manifest in manifests:
        check_manifest_path(manifest)
    is_stream = [is_stream_manifest(Path(m)) for m in manifests]
    if not any(is_stream):
        if given is not None:
            raise KWSError(
                "--thresholds applies to stream manifests (lines with events), and none was given; "
                "pass one, or leave --thresholds out"
            )
        return list(clips(manifests, out))
    options.check()
    dirs = out_dirs(checkpoint, manifests, out)
    loaded = load_model(Path(checkpoint), device)
    hop_samples(options.hop_s, feature_hop_length(loaded))  # a --hop the features allow, up front
    if given is not None:
        from kws.detect.detector import foreign_thresholds

        threshold_array(loaded.labels, given.thresholds, None)  # labels the model has, up front
        given = replace(given, note=foreign_thresholds(Path(given.source), loaded) or "")
    streams = {i: read_streams(Path(m), loaded.labels) for i, m in enumerate(manifests) if is_stream[i]}
    outcomes: list[EvalOutcome | StreamOutcome] = []
    for i, (manifest, out_dir) in enumerate(zip(manifests, dirs, strict=True)):
        if i not in streams:  # one by one: each to the folder out_dirs gave it among all the manifests
            outcomes += clips([manifest], out_dir)
    for i, stream_list in streams.items():
        outcomes.append(evaluate_streams(loaded, Path(manifests[i]), dirs[i], options, stream_list, given))
    return outcomes
