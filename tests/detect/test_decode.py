"""The detection rule on hand-made scores: smoothing, peaks, thresholds, one detection per refractory time."""

from __future__ import annotations

import numpy as np
import pytest

from kws.detect.decode import find_peaks, select, smooth, smooth_windows, threshold_array
from kws.detect.scores import hop_samples, window_starts
from kws.errors import KWSError

LABELS = ["down", "silence", "unknown", "up"]


def scores(n: int, bumps: dict[str, list[tuple[int, float]]]) -> np.ndarray:
    """`(n, 4)` probabilities: background on `unknown`, and a bump of height h centred at window i."""
    probs = np.zeros((n, len(LABELS)))
    probs[:, 2] = 1.0
    for label, where in bumps.items():
        c = LABELS.index(label)
        for i, height in where:
            for d, f in ((-1, 0.5), (0, 1.0), (1, 0.5)):
                probs[i + d, c] = max(probs[i + d, c], height * f)
    return probs


def test_smooth_is_a_centred_moving_average_with_short_ends() -> None:
    probs = np.arange(10, dtype=np.float64)[:, None]
    out = smooth(probs, 3)
    np.testing.assert_allclose(out[:, 0], [0.5, 1, 2, 3, 4, 5, 6, 7, 8, 8.5])
    assert smooth_windows(0.3, 0.1) == 3 and smooth_windows(0.0, 0.1) == 1 and smooth_windows(0.5, 0.1) == 5


def test_peaks_do_not_depend_on_the_threshold_so_raising_it_only_removes_detections() -> None:
    probs = scores(100, {"up": [(10, 0.9), (40, 0.6), (70, 0.95)], "down": [(25, 0.7)]})
    times = 0.5 + 0.1 * np.arange(100)
    peaks = find_peaks("a.wav", times, probs, LABELS, refractory_s=1.0)
    found = [
        (LABELS[c], round(t, 2), s)
        for t, c, s in zip(peaks.times_s, peaks.class_ids, peaks.scores, strict=True)
    ]
    assert sorted(found) == [("down", 3.0, 0.7), ("up", 1.5, 0.9), ("up", 4.5, 0.6), ("up", 7.5, 0.95)]
    previous = None
    for x in np.linspace(0, 1, 21):
        detections = select(peaks, LABELS, threshold_array(LABELS, {}, float(x)), 1.0)
        kept = {(d.label, round(d.time_s, 2)) for d in detections}
        if previous is not None:
            assert kept <= previous
        previous = kept


def test_the_most_confident_keyword_wins_within_the_refractory_period() -> None:
    probs = scores(60, {"up": [(20, 0.85)], "down": [(24, 0.9)]})  # 0.4 s apart
    times = 0.5 + 0.1 * np.arange(60)
    peaks = find_peaks("a.wav", times, probs, LABELS, refractory_s=1.0)
    detections = select(peaks, LABELS, threshold_array(LABELS, {}, 0.5), 1.0)
    assert [(d.label, round(d.time_s, 2), d.score) for d in detections] == [("down", 2.9, 0.9)]
    # per-keyword thresholds: with down off, up fires
    detections = select(peaks, LABELS, threshold_array(LABELS, {"up": 0.5}, None), 1.0)
    assert [d.label for d in detections] == ["up"]
    # a shorter refractory period keeps both
    peaks = find_peaks("a.wav", times, probs, LABELS, refractory_s=0.3)
    assert [d.label for d in select(peaks, LABELS, threshold_array(LABELS, {}, 0.5), 0.3)] == ["up", "down"]


def test_unknown_and_silence_have_no_threshold_and_unknown_labels_are_refused() -> None:
    assert threshold_array(LABELS, {"up": 0.7}, 0.2).tolist() == [0.2, np.inf, np.inf, 0.7]
    with pytest.raises(KWSError, match="thresholds name labels the model does not have: yes; its labels"):
        threshold_array(LABELS, {"yes": 0.5}, None)


def test_windows_cover_the_whole_recording() -> None:
    assert hop_samples(0.1, 160) == 1600
    assert window_starts(16000, 1600).tolist() == [0]
    assert window_starts(16001, 1600).tolist() == [0, 1600]  # the last sample is in a window
    assert window_starts(100, 1600).tolist() == [0]
    with pytest.raises(KWSError, match="--hop must be a positive number of seconds"):
        hop_samples(0.0, 160)
