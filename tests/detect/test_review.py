"""kws.detect.review: a stream evaluation's errors as cards, in the orders listen-errors offers."""

from __future__ import annotations

import pytest

from kws.detect.decode import Detection
from kws.detect.matching import DUPLICATE, FALSE_ACCEPT, SUBSTITUTION, Matched
from kws.detect.review import error_cards, sort_cards
from kws.detect.stream_report import MissedEvent, StreamErrors
from kws.errors import KWSError
from kws.stream_manifest import Event

GO, NO = Event("go", 4.0, 4.5), Event("no", 9.0, 9.4)
ERRORS = StreamErrors(
    summary={},
    false_accepts=[
        Matched(Detection("a.wav", 2.0, "go", 0.97), FALSE_ACCEPT),
        Matched(Detection("a.wav", 5.2, "go", 0.91), DUPLICATE, GO),
        Matched(Detection("a.wav", 9.1, "go", 0.88), SUBSTITUTION, NO),
        Matched(Detection("b.wav", 1.0, "go", 0.93), FALSE_ACCEPT),
    ],
    missed=[MissedEvent("a.wav", NO, 0.31)],
)


def test_one_card_per_false_accept_and_miss() -> None:
    cards = error_cards(ERRORS)
    summary = [(c.kind, c.label, c.detected, c.score) for c in cards]
    assert summary == [
        ("false accept", "none", "go", 0.97),
        ("duplicate", "go", "go", 0.91),
        ("substitution", "no", "go", 0.88),  # said "no", heard "go"
        ("false accept", "none", "go", 0.93),
        ("miss", "no", "missed", 0.31),  # the best score of "no" near its event
    ]
    miss = cards[-1]
    assert (miss.time_s, miss.end_s, miss.audio_filepath) == (9.0, 9.4, "a.wav")


def test_sort_orders() -> None:
    cards = error_cards(ERRORS)
    assert [c.score for c in sort_cards(cards)] == [0.31, 0.88, 0.91, 0.93, 0.97]
    assert [c.score for c in sort_cards(cards, "-confidence")] == [0.97, 0.93, 0.91, 0.88, 0.31]
    pairs = [(c.label, c.detected, c.score) for c in sort_cards(cards, "pair")]
    assert pairs[:2] == [("none", "go", 0.93), ("none", "go", 0.97)]  # the most frequent pair first
    with pytest.raises(KWSError, match="unknown sort order 'time'"):
        sort_cards(cards, "time")
