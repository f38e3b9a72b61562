"""`kws detect`: a trained model over recordings of any length, with thresholds, giving detections.

Settings come from the command line, else from a `thresholds.json` written by a stream evaluation
(`kws evaluate CHECKPOINT STREAMS`: per-keyword thresholds for a target rate of false accepts, and the hop,
smoothing and refractory period they were chosen with), else from the defaults of kws.detect.scores and
kws.detect.decode.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kws.audio import SAMPLE_RATE, wav_frames, wav_samples
from kws.detect.decode import (
    SILENT_LABELS,
    Detection,
    select,
    smoothed_peaks,
    threshold_array,
)
from kws.detect.scores import score_audio
from kws.errors import KWSError
from kws.exported import OnnxModel
from kws.thresholds import (
    DEFAULT_HOP_S,
    DEFAULT_REFRACTORY_S,
    DEFAULT_SMOOTH_S,
    DEFAULT_THRESHOLD,
    TIMING_KEYS,
    chosen_for_another,
    read_thresholds,
)

if TYPE_CHECKING:
    from kws.checkpoint import LoadedModel


@dataclass(frozen=True)
class DetectSettings:
    hop_s: float = DEFAULT_HOP_S
    smooth_s: float = DEFAULT_SMOOTH_S
    refractory_s: float = DEFAULT_REFRACTORY_S
    thresholds: tuple[tuple[str, float], ...] = ()  # per keyword
    default_threshold: float | None = DEFAULT_THRESHOLD  # keywords without their own
    source: str = "defaults"  # where the thresholds came from, for the printout


def foreign_thresholds(thresholds_file: Path, model: LoadedModel | OnnxModel) -> str | None:
    """A note when `thresholds_file` names another checkpoint than `model` (its file, or for an exported
    model the checkpoint it came from) as the one its thresholds were chosen for; None when it matches or
    does not say (files written before it did)."""
    from kws.files import file_sha256

    ours = {file_sha256(Path(model.checkpoint))} if Path(model.checkpoint).is_file() else set()
    if isinstance(model, OnnxModel) and model.metadata.source_sha256:
        ours.add(model.metadata.source_sha256)
    other = chosen_for_another(read_thresholds(thresholds_file), ours)
    if other is None:
        return None
    return (
        f"note: the thresholds in {thresholds_file} were chosen for another checkpoint "
        f"({other}); run the stream evaluation on this model "
        f"(`kws evaluate {model.checkpoint} STREAM_MANIFEST`) for its own"
    )


def resolve_settings(
    *,
    thresholds_file: Path | None,
    threshold: float | None,
    hop_s: float | None,
    smooth_s: float | None,
    refractory_s: float | None,
    embedded: OnnxModel | None = None,
) -> DetectSettings:
    """Command-line values first, then the thresholds file's (else those an exported model carries, when
    neither --thresholds nor --threshold is given), then the defaults."""
    if thresholds_file is not None and threshold is not None:
        raise KWSError("--threshold and --thresholds both given; pass one (a file holds one per keyword)")
    if threshold is not None and not (0.0 <= threshold <= 1.0):
        raise KWSError(f"--threshold must lie in [0, 1], got {threshold}")
    saved: dict[str, Any] = read_thresholds(thresholds_file) if thresholds_file is not None else {}
    from_model = (
        embedded is not None and bool(embedded.metadata.thresholds) and threshold is None and not saved
    )
    if from_model:
        assert embedded is not None
        meta = embedded.metadata
        saved = {"thresholds": dict(meta.thresholds), **{k: getattr(meta, k) for k in TIMING_KEYS}}

    def pick(given: float | None, key: str, default: float) -> float:
        return given if given is not None else float(saved.get(key, default))

    source = "default"
    if thresholds_file is not None:
        source = str(thresholds_file)
    elif from_model:
        assert embedded is not None
        source = f"embedded in {embedded.path}"
    elif threshold is not None:
        source = "--threshold"
    settings = DetectSettings(
        hop_s=pick(hop_s, "hop_s", DEFAULT_HOP_S),
        smooth_s=pick(smooth_s, "smooth_s", DEFAULT_SMOOTH_S),
        refractory_s=pick(refractory_s, "refractory_s", DEFAULT_REFRACTORY_S),
        thresholds=tuple(sorted(saved.get("thresholds", {}).items())),
        default_threshold=threshold if threshold is not None else (None if saved else DEFAULT_THRESHOLD),
        source=source,
    )
    for name, value in (
        ("--hop", settings.hop_s),
        ("--smooth", settings.smooth_s),
        ("--refractory", settings.refractory_s),
    ):
        if not (math.isfinite(value) and value >= 0):
            raise KWSError(f"{name} must be a non-negative number of seconds, got {value}")
    return settings


def keyword_thresholds(labels: Sequence[str], settings: DetectSettings) -> dict[str, float]:
    """The threshold each firing class will use (a keyword missing from a thresholds file never fires)."""
    array = threshold_array(labels, dict(settings.thresholds), settings.default_threshold)
    return {label: float(x) for label, x in zip(labels, array, strict=True) if label not in SILENT_LABELS}


def detect_audio(
    loaded: LoadedModel | OnnxModel,
    audio_filepath: str,
    audio: Any,
    settings: DetectSettings,
    advance: Callable[[float], None] | None = None,
) -> list[Detection]:
    """The detections in one recording's int16 samples `(samples,)`."""
    scores = score_audio(loaded, audio, settings.hop_s, advance=advance)
    _, peaks = smoothed_peaks(
        audio_filepath,
        scores.times_s,
        scores.probs,
        loaded.labels,
        hop_s=scores.hop_s,
        smooth_s=settings.smooth_s,
        refractory_s=settings.refractory_s,
    )
    thresholds = threshold_array(loaded.labels, dict(settings.thresholds), settings.default_threshold)
    return select(peaks, loaded.labels, thresholds, settings.refractory_s)


@dataclass
class DetectResult:
    detections: list[Detection]
    audio_s: float
    seconds: float  # wall-clock time of the scoring

    @property
    def real_time_factor(self) -> float:
        return self.audio_s / max(self.seconds, 1e-9)


def detect_files(
    loaded: LoadedModel | OnnxModel, paths: Sequence[Path], settings: DetectSettings
) -> DetectResult:
    """Every recording of `paths` (16 kHz mono wav), with a progress bar over seconds of audio."""
    from kws.console import item_progress

    total_s = sum(wav_frames(Path(p)) for p in paths) / SAMPLE_RATE  # a bad header fails before any scoring
    detections: list[Detection] = []
    start = time.perf_counter()
    with item_progress("audio s") as bar:
        task = bar.add_task("detecting", total=total_s)
        for path in paths:
            audio = wav_samples(Path(path))  # memory-mapped: recordings of hours
            name = str(Path(path).resolve())
            detections += detect_audio(loaded, name, audio, settings, lambda s: bar.advance(task, s))
    return DetectResult(detections, total_s, time.perf_counter() - start)
