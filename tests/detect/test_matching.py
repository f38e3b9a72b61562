"""kws.detect.matching: recall, false accepts per hour, duplicates and substitutions on hand-made cases."""

from __future__ import annotations

import pytest

from kws.detect.decode import Detection
from kws.detect.matching import (
    DUPLICATE,
    FALSE_ACCEPT,
    HIT,
    SUBSTITUTION,
    match_recording,
    match_streams,
)
from kws.stream_manifest import Event, Stream

HOUR_S = 3600.0


def test_two_hours_with_a_duplicate_and_a_substitution() -> None:
    a = Stream("a.wav", HOUR_S, (Event("yes", 10.0, 11.0), Event("no", 20.0, 21.0), Event("yes", 30.0, 31.0)))
    b = Stream("b.wav", HOUR_S, ())  # keyword-free: its hour counts for false accepts per hour
    detections = [
        [
            Detection("a.wav", 10.6, "yes", 0.9),  # hit
            Detection("a.wav", 11.4, "yes", 0.85),  # the same event again: a duplicate
            Detection("a.wav", 20.4, "yes", 0.8),  # on the "no" event: a substitution
            Detection("a.wav", 29.6, "yes", 0.95),  # 0.4 s before the event: within the tolerance, a hit
        ],
        [Detection("b.wav", 100.0, "no", 0.99)],  # nothing said: a false accept
    ]
    matches, summary = match_streams([a, b], detections, ["yes", "no"], tolerance_s=0.5)
    assert [m.outcome for m in matches[0].matched] == [HIT, DUPLICATE, SUBSTITUTION, HIT]
    assert [m.outcome for m in matches[1].matched] == [FALSE_ACCEPT]
    assert matches[0].missed == [Event("no", 20.0, 21.0)] and matches[1].missed == []

    assert summary.hours == 2.0
    yes, no = summary.per_keyword["yes"], summary.per_keyword["no"]
    assert (yes.n_events, yes.hits, yes.misses, yes.recall) == (2, 2, 0, 1.0)
    assert (yes.false_accepts, yes.duplicates, yes.substitutions, yes.fa_per_hour) == (2, 1, 1, 1.0)
    assert (no.n_events, no.hits, no.recall, no.false_accepts, no.fa_per_hour) == (1, 0, 0.0, 1, 0.5)
    total = summary.overall
    assert (total.n_events, total.hits, total.recall) == (3, 2, pytest.approx(2 / 3))
    assert (total.false_accepts, total.fa_per_hour, total.substitutions) == (3, 1.5, 1)  # 3 in 2 h
    assert summary.substitution_pairs == [("no", "yes", 1)]  # (event label, detected label, count)


def test_tolerance_edges_and_keywords_without_events() -> None:
    events = [Event("up", 5.0, 6.0)]
    on_edges = [Detection("r.wav", 4.5, "up", 0.9), Detection("r.wav", 8.0, "up", 0.9)]
    match = match_recording("r.wav", events, on_edges, tolerance_s=0.5)
    assert [m.outcome for m in match.matched] == [HIT, FALSE_ACCEPT]  # 6.5 is the last time that hits
    _, summary = match_streams([Stream("r.wav", 1800.0, tuple(events))], [on_edges], ["up", "down"], 0.5)
    down = summary.per_keyword["down"]  # a keyword with no events: recall unknown, no false accepts
    assert down.recall is None and down.fa_per_hour == 0.0 and down.to_json()["recall"] is None
    assert summary.per_keyword["up"].fa_per_hour == 2.0  # one false accept in half an hour


def test_each_detection_takes_the_event_that_ends_first() -> None:
    # Two "go" events 0.8 s apart: the first detection lies on both; it must take the first so that the
    # second detection can hit the second event (the most hits any matching could give).
    events = [Event("go", 1.0, 1.5), Event("go", 2.3, 2.8)]
    detections = [Detection("r.wav", 1.9, "go", 0.9), Detection("r.wav", 3.2, "go", 0.9)]
    match = match_recording("r.wav", events, detections, tolerance_s=0.5)
    assert [m.outcome for m in match.matched] == [HIT, HIT] and not match.missed
    assert match.matched[0].event == events[0] and match.matched[1].event == events[1]


def test_detections_jsonl_lines() -> None:
    events = [Event("yes", 1.0, 2.0)]
    match = match_recording("r.wav", events, [Detection("r.wav", 1.5, "yes", 0.91234567)])
    assert match.matched[0].to_json() == {
        "audio_filepath": "r.wav",
        "time_s": 1.5,
        "label": "yes",
        "score": 0.912346,
        "outcome": "hit",
        "event": {"label": "yes", "start_s": 1.0, "end_s": 2.0},
    }
