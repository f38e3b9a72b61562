"""The DET curve of each keyword (miss rate against false accepts per hour as its threshold rises) and the
threshold that meets a target rate of false accepts.

A keyword's curve uses its own candidates alone: its detections with every other class silenced
(`kws.detect.decode.select` with only its threshold set), so that the detections at threshold x are the
candidates scoring at least x and raising x only removes detections: hits never rise and false accepts
never rise, so the curve is monotone. Its points are the distinct candidate scores, each computed exactly.

Hits at every threshold at once: a candidate that matches no event is a false accept at any threshold. The
others fall into groups that share events (in practice one event and the one or two detections near it);
each group's hits are counted again at each of its own scores, with the matching of kws.detect.matching, and
the curve adds up the changes. Far cheaper than matching every recording again at every threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kws.detect.decode import Detection
from kws.detect.matching import EventIndex
from kws.stream_manifest import Event
from kws.thresholds import DEFAULT_THRESHOLD

SWEEP_FLOOR = 0.05  # candidates scoring at or below this are dropped: no threshold below it is swept
MAX_CURVE_POINTS = 300  # points of a curve kept in report.json


@dataclass(frozen=True)
class DetCurve:
    """One keyword's operating points, thresholds ascending."""

    label: str
    thresholds: np.ndarray  # (n,) the distinct candidate scores
    hits: np.ndarray  # (n,) int: events hit at each threshold
    false_accepts: np.ndarray  # (n,) int
    n_events: int
    hours: float

    @property
    def miss_rate(self) -> np.ndarray | None:
        """1 - recall at each threshold; None when the keyword has no events."""
        return 1.0 - self.hits / self.n_events if self.n_events else None

    @property
    def fa_per_hour(self) -> np.ndarray:
        return self.false_accepts / self.hours if self.hours > 0 else np.zeros(len(self.thresholds))

    def thinned(self, max_points: int = MAX_CURVE_POINTS) -> DetCurve:
        """At most `max_points` points, evenly spaced in rank, the first and last kept."""
        if len(self.thresholds) <= max_points:
            return self
        keep = np.unique(np.linspace(0, len(self.thresholds) - 1, max_points).round().astype(np.int64))
        return DetCurve(
            self.label,
            self.thresholds[keep],
            self.hits[keep],
            self.false_accepts[keep],
            self.n_events,
            self.hours,
        )


def _group_hits(
    times: list[float], scores: list[float], candidates: list[list[int]]
) -> list[tuple[float, int]]:
    """(score, change of hits) when the threshold comes down to each of a group's scores. `candidates[i]`:
    the events detection i matches, the earliest end first; detections in time order."""
    steps, before = [], 0
    for score in sorted(set(scores), reverse=True):
        taken: set[int] = set()
        for i in range(len(times)):
            if scores[i] >= score:
                free = next((j for j in candidates[i] if j not in taken), None)
                if free is not None:
                    taken.add(free)
        if len(taken) != before:
            steps.append((score, len(taken) - before))
            before = len(taken)
    return steps


def _recording_steps(
    events: Sequence[Event], detections: Sequence[Detection], tolerance_s: float
) -> list[tuple[float, int]]:
    """The hit steps of one recording's candidates of one keyword against that keyword's events."""
    index = EventIndex(events, tolerance_s)
    steps: list[tuple[float, int]] = []
    group: tuple[list[float], list[float], list[list[int]]] = ([], [], [])
    reach = -1  # the last event index of the open group
    for d in sorted(detections, key=lambda d: d.time_s):
        around = index.around(d.time_s)
        if not around:
            continue
        if group[0] and min(around) > reach:  # shares no event with the open group: close it
            steps += _group_hits(*group)
            group = ([], [], [])
        group[0].append(d.time_s)
        group[1].append(d.score)
        group[2].append(around)
        reach = max(reach, max(around))
    if group[0]:
        steps += _group_hits(*group)
    return steps


def det_curve(
    label: str,
    recordings: Sequence[tuple[Sequence[Event], Sequence[Detection]]],
    tolerance_s: float,
    hours: float,
) -> DetCurve:
    """The curve of `label` from each recording's (events, candidates of `label` alone)."""
    scores: list[float] = []
    steps: list[tuple[float, int]] = []
    n_events = 0
    for events, detections in recordings:
        own_events = [e for e in events if e.label == label]
        own = [d for d in detections if d.label == label]
        n_events += len(own_events)
        scores += [d.score for d in own]
        steps += _recording_steps(own_events, own, tolerance_s)
    thresholds = np.unique(np.asarray(scores, dtype=np.float64))
    # Detections and hits at threshold x: those at or above x, counted from the top.
    n_detections = len(scores) - np.searchsorted(np.sort(scores), thresholds, side="left")
    step_scores = np.asarray([s for s, _ in steps], dtype=np.float64)
    step_sizes = np.asarray([n for _, n in steps], dtype=np.int64)
    order = np.argsort(step_scores)
    cumulative = np.concatenate(
        [[0], np.cumsum(step_sizes[order][::-1])]
    )  # hits above each rank, from the top
    above = len(step_scores) - np.searchsorted(step_scores[order], thresholds, side="left")
    hits = cumulative[above]
    return DetCurve(label, thresholds, hits, n_detections - hits, n_events, hours)


@dataclass(frozen=True)
class OperatingPoint:
    """The threshold chosen for a keyword and what the keyword's own curve says of it."""

    label: str
    threshold: float
    miss_rate: float | None
    fa_per_hour: float
    note: str = ""


def choose_threshold(curve: DetCurve, target_fa_per_hour: float) -> OperatingPoint:
    """The lowest threshold whose false accepts per hour are at most the target (so the highest recall
    under it); when none is, the highest threshold, with a note."""
    fa = curve.fa_per_hour
    miss = curve.miss_rate

    def point(i: int, note: str = "") -> OperatingPoint:
        # Halfway down to the next lower candidate: the same detections as at candidate i, and a score that
        # differs in the last float digits (another device, another batch size) does not flip one of them.
        below = float(curve.thresholds[i - 1]) if i > 0 else SWEEP_FLOOR
        m = None if miss is None else float(miss[i])
        return OperatingPoint(curve.label, (below + float(curve.thresholds[i])) / 2, m, float(fa[i]), note)

    if len(curve.thresholds) == 0:  # no evidence either way: the default of `kws detect`, not the floor
        return OperatingPoint(
            curve.label,
            DEFAULT_THRESHOLD,
            None if miss is None else 1.0,
            0.0,
            f"no candidate scored above {SWEEP_FLOOR:g} on this audio, so nothing measured a threshold; "
            f"kept the default {DEFAULT_THRESHOLD:g}",
        )
    ok = np.flatnonzero(fa <= target_fa_per_hour + 1e-12)
    if len(ok):
        return point(int(ok[0]))
    last = len(curve.thresholds) - 1
    return point(
        last,
        f"no threshold reaches {target_fa_per_hour:g} false accepts per hour on this audio "
        f"(the highest, {curve.thresholds[last]:.4f}, gives {fa[last]:.2f}); more audio or a better model",
    )


def point_at(curve: DetCurve, threshold: float | None, note: str = "") -> OperatingPoint:
    """What a keyword's own curve says of a threshold chosen elsewhere (`kws evaluate --thresholds`): its
    candidates at or above it. None: the keyword never fires (it is missing from the thresholds)."""
    miss = curve.miss_rate
    if threshold is None:
        return OperatingPoint(curve.label, math.inf, None if miss is None else 1.0, 0.0, note)
    at = int(np.searchsorted(curve.thresholds, threshold))
    if at == len(curve.thresholds):  # no candidate reaches it
        return OperatingPoint(curve.label, threshold, None if miss is None else 1.0, 0.0, note)
    return OperatingPoint(
        curve.label, threshold, None if miss is None else float(miss[at]), float(curve.fa_per_hour[at]), note
    )
