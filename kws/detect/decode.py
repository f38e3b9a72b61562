"""From window probabilities to detections: smoothing, per-class peaks, thresholds, one detection per keyword.

The rule, offline and live alike:
1. Smooth each class's probability over time with a centred moving average of `smooth_windows` windows.
2. A class peaks at window t when its smoothed score there is the highest within `refractory_s / 2` on either
   side (ties go to the earliest window). Peaks are found once, whatever the threshold: the detections of a
   class at threshold x are its peaks scoring at least x, so raising a threshold only ever removes
   detections (the DET curve of kws.detect.sweep is monotone by construction).
3. Classes that never fire (`unknown`, `silence`) are dropped; every keyword has its own threshold.
4. Across classes, the most confident detection wins: a detection is kept unless a kept one of any class
   lies within `refractory_s` of it, so one spoken keyword gives one detection.

A detection's time is the centre of its peak window: the middle of the second that held the keyword.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from kws.errors import KWSError
from kws.thresholds import DEFAULT_REFRACTORY_S, DEFAULT_SMOOTH_S

SILENT_LABELS = ("unknown", "silence")  # classes that never fire


@dataclass(frozen=True)
class Detection:
    audio_filepath: str
    time_s: float
    label: str
    score: float

    def to_json(self) -> dict[str, object]:
        return {
            "audio_filepath": self.audio_filepath,
            "time_s": round(self.time_s, 3),
            "label": self.label,
            "score": round(self.score, 6),
        }


@dataclass(frozen=True)
class Peaks:
    """Every class's candidate detections of one recording, before thresholds."""

    audio_filepath: str
    times_s: np.ndarray  # (n,) window centres
    class_ids: np.ndarray  # (n,) int
    scores: np.ndarray  # (n,) smoothed probability at the peak


def smooth_windows(smooth_s: float, hop_s: float) -> int:
    """An odd number of windows spanning about `smooth_s` (1: no smoothing)."""
    if smooth_s < 0:
        raise KWSError(f"--smooth must be >= 0 seconds, got {smooth_s}")
    half = int(round(smooth_s / hop_s / 2 - 1e-9)) if smooth_s > hop_s else 0
    return 2 * half + 1


def smooth(probs: np.ndarray, n_windows: int) -> np.ndarray:
    """Centred moving average over `n_windows` (odd) windows of `(n, n_classes)`; near the ends, over the
    windows that exist."""
    if n_windows <= 1 or len(probs) == 0:
        return probs.astype(np.float32, copy=False)
    half = n_windows // 2
    csum = np.concatenate([np.zeros((1, probs.shape[1])), np.cumsum(probs, axis=0, dtype=np.float64)])
    idx = np.arange(len(probs))
    lo, hi = np.clip(idx - half, 0, len(probs)), np.clip(idx + half + 1, 0, len(probs))
    return ((csum[hi] - csum[lo]) / (hi - lo)[:, None]).astype(np.float32)


def firing_classes(labels: Sequence[str]) -> np.ndarray:
    """Ids of the classes that may fire: every label except unknown and silence."""
    return np.array([i for i, label in enumerate(labels) if label not in SILENT_LABELS], dtype=np.int64)


def find_peaks(
    audio_filepath: str,
    times_s: np.ndarray,
    smoothed: np.ndarray,
    labels: Sequence[str],
    refractory_s: float = DEFAULT_REFRACTORY_S,
    floor: float = 0.0,
) -> Peaks:
    """Per-class local maxima of `smoothed` `(n, n_classes)` within +-refractory_s / 2, scoring above
    `floor` (keeps the candidate list short; no threshold below `floor` can be applied later)."""
    if refractory_s < 0:
        raise KWSError(f"--refractory must be >= 0 seconds, got {refractory_s}")
    n = len(times_s)
    hop_s = float(times_s[1] - times_s[0]) if n > 1 else 1.0
    reach = int(np.floor(refractory_s / 2 / hop_s + 1e-9))
    times, ids, scores = [], [], []
    for c in firing_classes(labels).tolist():
        s = smoothed[:, c].astype(np.float64)
        keep = s > floor
        if reach > 0 and n > 1:
            padded = np.concatenate([np.full(reach, -np.inf), s, np.full(reach, -np.inf)])
            view = np.lib.stride_tricks.sliding_window_view(padded, 2 * reach + 1)  # (n, 2 reach + 1)
            before, after = view[:, :reach], view[:, reach + 1 :]
            keep &= (s > before.max(axis=1)) & (s >= after.max(axis=1))
        where = np.flatnonzero(keep)
        times.append(times_s[where])
        ids.append(np.full(len(where), c, dtype=np.int64))
        scores.append(s[where])
    if not times:
        return Peaks(audio_filepath, np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0))
    return Peaks(audio_filepath, np.concatenate(times), np.concatenate(ids), np.concatenate(scores))


def smoothed_peaks(
    audio_filepath: str,
    times_s: np.ndarray,
    probs: np.ndarray,
    labels: Sequence[str],
    *,
    hop_s: float,
    smooth_s: float = DEFAULT_SMOOTH_S,
    refractory_s: float = DEFAULT_REFRACTORY_S,
    floor: float = 0.0,
) -> tuple[np.ndarray, Peaks]:
    """Steps 1 and 2 of the rule for one recording's window probabilities `(n, n_classes)`: the smoothed
    scores and every firing class's peaks."""
    smoothed = smooth(probs, smooth_windows(smooth_s, hop_s))
    return smoothed, find_peaks(audio_filepath, times_s, smoothed, labels, refractory_s, floor)


def threshold_array(
    labels: Sequence[str], thresholds: Mapping[str, float], default: float | None
) -> np.ndarray:
    """Per-class thresholds `(n_classes,)`: `thresholds[label]`, else `default`; inf for classes that never
    fire or have neither."""
    unknown = sorted(set(thresholds) - set(labels))
    if unknown:
        raise KWSError(
            f"thresholds name labels the model does not have: {', '.join(unknown)}; its labels are "
            f"{', '.join(labels)}"
        )
    out = np.full(len(labels), np.inf)
    for i, label in enumerate(labels):
        if label in SILENT_LABELS:
            continue
        value = thresholds.get(label, default)
        if value is not None:
            out[i] = float(value)
    return out


def select(
    peaks: Peaks, labels: Sequence[str], thresholds: np.ndarray, refractory_s: float
) -> list[Detection]:
    """The detections: peaks at or above their class's threshold, the most confident first within
    `refractory_s` of each other (any class), in time order."""
    above = peaks.scores >= thresholds[peaks.class_ids]
    times, ids, scores = peaks.times_s[above], peaks.class_ids[above], peaks.scores[above]
    kept: list[int] = []
    kept_times: list[float] = []  # sorted: a candidate is checked against its two neighbours only
    for i in np.lexsort((times, -scores)).tolist():  # highest score first, then earliest
        t = float(times[i])
        at = bisect.bisect_left(kept_times, t)
        if at > 0 and t - kept_times[at - 1] < refractory_s:
            continue
        if at < len(kept_times) and kept_times[at] - t < refractory_s:
            continue
        kept_times.insert(at, t)
        kept.append(i)
    kept.sort(key=lambda i: times[i])
    return [Detection(peaks.audio_filepath, float(times[i]), labels[ids[i]], float(scores[i])) for i in kept]
