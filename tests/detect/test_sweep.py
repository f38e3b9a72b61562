"""kws.detect.sweep: the DET curve and the threshold chosen for a target rate, on hand-made candidates."""

from __future__ import annotations

import numpy as np

from kws.detect.decode import Detection
from kws.detect.matching import HIT, match_recording
from kws.detect.sweep import SWEEP_FLOOR, DetCurve, choose_threshold, det_curve
from kws.stream_manifest import Event
from kws.thresholds import DEFAULT_THRESHOLD

EVENTS = [Event("yes", 10.0, 11.0), Event("yes", 30.0, 31.0), Event("no", 50.0, 51.0)]
CANDIDATES = [
    Detection("r.wav", 10.5, "yes", 0.90),  # hits the first event
    Detection("r.wav", 30.5, "yes", 0.60),  # hits the second
    Detection("r.wav", 31.4, "yes", 0.65),  # the second: a hit above 0.60, a duplicate below
    Detection("r.wav", 70.0, "yes", 0.95),  # false accepts
    Detection("r.wav", 80.0, "yes", 0.70),
    Detection("r.wav", 90.0, "yes", 0.50),
]


def curve() -> DetCurve:
    return det_curve("yes", [(EVENTS, CANDIDATES)], tolerance_s=0.5, hours=2.0)


def test_curve_counts_each_threshold_exactly() -> None:
    c = curve()
    assert c.n_events == 2
    np.testing.assert_array_equal(c.thresholds, [0.5, 0.6, 0.65, 0.7, 0.9, 0.95])
    np.testing.assert_array_equal(c.hits, [2, 2, 2, 1, 1, 0])
    # detections at or above each threshold: 6 5 4 3 2 1; false accepts = detections - hits
    np.testing.assert_array_equal(c.false_accepts, [4, 3, 2, 2, 1, 1])
    assert c.miss_rate is not None
    np.testing.assert_allclose(c.miss_rate, [0, 0, 0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(c.fa_per_hour, [2.0, 1.5, 1.0, 1.0, 0.5, 0.5])


def test_the_lowest_threshold_under_the_target_is_chosen() -> None:
    # The threshold lies halfway between the chosen candidate and the next lower one: the same detections,
    # and a score a float rounding away does not flip
    c = curve()
    assert choose_threshold(c, 1.0).threshold == (0.6 + 0.65) / 2  # recall 100% at 1 FA/h
    point = choose_threshold(c, 0.5)
    assert (point.threshold, point.miss_rate, point.fa_per_hour, point.note) == (
        (0.7 + 0.9) / 2,
        0.5,
        0.5,
        "",
    )
    assert choose_threshold(c, 5.0).threshold == (SWEEP_FLOOR + 0.5) / 2  # every candidate is allowed
    none = choose_threshold(c, 0.1)  # the best-scoring candidate is a false accept: no threshold makes it
    assert (
        none.threshold == (0.9 + 0.95) / 2
        and none.fa_per_hour == 0.5
        and "no threshold reaches 0.1" in none.note
    )


def test_keyword_without_candidates_or_events() -> None:
    empty = det_curve("no", [(EVENTS, [])], tolerance_s=0.5, hours=1.0)
    assert len(empty.thresholds) == 0 and empty.n_events == 1
    point = choose_threshold(empty, 0.5)
    assert (
        point.threshold == DEFAULT_THRESHOLD and point.miss_rate == 1.0 and "kept the default" in point.note
    )
    no_events = det_curve("go", [([], [Detection("r.wav", 3.0, "go", 0.7)])], tolerance_s=0.5, hours=1.0)
    assert (
        no_events.miss_rate is None and choose_threshold(no_events, 1.0).threshold == (SWEEP_FLOOR + 0.7) / 2
    )


def test_thinned_curve_keeps_its_ends() -> None:
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.1, 1.0, 1000)
    many = [Detection("r.wav", 2.0 * i, "yes", float(s)) for i, s in enumerate(scores)]
    c = det_curve("yes", [([], many)], tolerance_s=0.5, hours=1.0)
    thin = c.thinned(300)
    assert len(thin.thresholds) == 300
    assert thin.thresholds[0] == c.thresholds[0] and thin.thresholds[-1] == c.thresholds[-1]
    assert np.all(np.diff(thin.false_accepts) <= 0)


def test_curve_equals_matching_again_at_every_threshold() -> None:
    # Close events and candidates that lie on two of them at once: the grouped count must still be exact.
    rng = np.random.default_rng(0)
    starts = np.cumsum(rng.uniform(0.6, 3.0, 40))
    events = [Event("yes", float(s), float(s) + 0.4) for s in starts]
    times = np.sort(rng.uniform(0.0, starts[-1] + 2.0, 60))
    candidates = [
        Detection("r.wav", float(t), "yes", float(s))
        for t, s in zip(times, rng.uniform(0.1, 1, 60), strict=True)
    ]
    c = det_curve("yes", [(events, candidates)], tolerance_s=0.5, hours=1.0)
    for x, hits, false_accepts in zip(c.thresholds, c.hits, c.false_accepts, strict=True):
        kept = [d for d in candidates if d.score >= x]
        match = match_recording("r.wav", events, kept, tolerance_s=0.5)
        assert hits == sum(m.outcome == HIT for m in match.matched)
        assert false_accepts == len(kept) - hits
