"""Detections against a stream manifest's events: hits, misses, false accepts, duplicates and substitutions.

A detection matches an event of its own label when its time lies within `[start_s - tolerance_s,
end_s + tolerance_s]`. Each event is hit by the first detection that matches it; a later detection matching
only events that are already hit is a duplicate. A detection that hits nothing is a false accept: a duplicate,
a substitution (it lies, within the same tolerance, on an event of another keyword) or a plain one.
Detections are taken in time order and each takes the matching event that ends first, which hits as many
events as any assignment could (events do not overlap, so this greedy matching is a maximum one).

Recall = hits / events; false accepts per hour = false accepts / hours of audio (all of the manifest's audio,
with or without events).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kws.detect.decode import Detection
from kws.stream_manifest import Event, Stream

DEFAULT_TOLERANCE_S = 0.5
HIT, DUPLICATE, FALSE_ACCEPT, SUBSTITUTION = "hit", "duplicate", "false_accept", "substitution"


class EventIndex:
    """The events of one recording, to find those a time falls on (within the tolerance) quickly."""

    def __init__(self, events: Sequence[Event], tolerance_s: float) -> None:
        self.events = sorted(events, key=lambda e: (e.start_s, e.end_s))
        self.starts = [e.start_s for e in self.events]
        self.longest_s = max((e.end_s - e.start_s for e in self.events), default=0.0)
        self.tolerance_s = tolerance_s

    def around(self, time_s: float, label: str | None = None) -> list[int]:
        """Indices of the events (of `label`, when given) that `time_s` matches, the earliest end first."""
        tol = self.tolerance_s
        found = []
        i = bisect.bisect_right(self.starts, time_s + tol) - 1  # the last event starting early enough
        while i >= 0 and self.starts[i] >= time_s - tol - self.longest_s:  # earlier ones end too early
            event = self.events[i]
            if event.end_s + tol >= time_s and (label is None or event.label == label):
                found.append(i)
            i -= 1
        return sorted(found, key=lambda j: (self.events[j].end_s, j))


@dataclass(frozen=True)
class Matched:
    """A detection and what it was: `outcome` is hit, duplicate, false_accept or substitution."""

    detection: Detection
    outcome: str
    event: Event | None = None  # hit, duplicate: the event of its label; substitution: the other keyword's

    def to_json(self) -> dict[str, Any]:
        """A detections.jsonl line: `Detection.to_json()`, the outcome, and the event it lies on, if any."""
        out: dict[str, Any] = {**self.detection.to_json(), "outcome": self.outcome}
        if self.event is not None:
            e = self.event
            out["event"] = {"label": e.label, "start_s": e.start_s, "end_s": e.end_s}
        return out


@dataclass
class RecordingMatch:
    """The outcome of one recording's detections."""

    audio_filepath: str
    matched: list[Matched]  # time order
    missed: list[Event]  # start order


def match_recording(
    audio_filepath: str,
    events: Sequence[Event],
    detections: Sequence[Detection],
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> RecordingMatch:
    """Match one recording's detections to its events (see the module's docstring for the rule)."""
    index = EventIndex(events, tolerance_s)
    hit = [False] * len(index.events)
    matched = []
    for d in sorted(detections, key=lambda d: (d.time_s, d.label)):
        own = index.around(d.time_s, d.label)
        free = [i for i in own if not hit[i]]
        if free:
            hit[free[0]] = True
            matched.append(Matched(d, HIT, index.events[free[0]]))
        elif own:
            matched.append(Matched(d, DUPLICATE, index.events[own[0]]))
        elif others := index.around(d.time_s):  # none is of its own label: another keyword's events
            nearest = min(
                others, key=lambda j: abs((index.events[j].start_s + index.events[j].end_s) / 2 - d.time_s)
            )
            matched.append(Matched(d, SUBSTITUTION, index.events[nearest]))
        else:
            matched.append(Matched(d, FALSE_ACCEPT))
    missed = [e for e, was_hit in zip(index.events, hit, strict=True) if not was_hit]
    return RecordingMatch(audio_filepath, matched, missed)


@dataclass(frozen=True)
class Counts:
    """Hits and false accepts of one keyword, or of all of them, over `hours` of audio."""

    n_events: int
    hits: int
    false_accepts: int  # every detection that hit no event: duplicates and substitutions included
    duplicates: int
    substitutions: int
    hours: float

    @property
    def misses(self) -> int:
        return self.n_events - self.hits

    @property
    def recall(self) -> float | None:
        """hits / events; None when there are no events to hit."""
        return self.hits / self.n_events if self.n_events else None

    @property
    def fa_per_hour(self) -> float:
        return self.false_accepts / self.hours if self.hours > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "n_events": self.n_events,
            "hits": self.hits,
            "misses": self.misses,
            "recall": self.recall,
            "false_accepts": self.false_accepts,
            "fa_per_hour": self.fa_per_hour,
            "duplicates": self.duplicates,
            "substitutions": self.substitutions,
        }


@dataclass
class MatchSummary:
    hours: float
    per_keyword: dict[str, Counts]
    overall: Counts
    substitution_pairs: list[tuple[str, str, int]]  # (event label, detected label, count), most first


def summarize(matches: Sequence[RecordingMatch], keywords: Sequence[str], hours: float) -> MatchSummary:
    """Per-keyword and overall counts of `matches` over `hours` of audio; `keywords` are the labels that
    can fire (every one gets a row, with or without events)."""
    tally: dict[str, Counter[str]] = {k: Counter() for k in keywords}
    pairs: Counter[tuple[str, str]] = Counter()
    for match in matches:
        for m in match.matched:
            counts = tally.setdefault(m.detection.label, Counter())
            counts[m.outcome] += 1
            if m.outcome == SUBSTITUTION and m.event is not None:
                pairs[(m.event.label, m.detection.label)] += 1
            if m.outcome == HIT:
                counts["events"] += 1
        for event in match.missed:
            tally.setdefault(event.label, Counter())["events"] += 1

    def counts_of(c: Counter[str]) -> Counts:
        false_accepts = c[DUPLICATE] + c[SUBSTITUTION] + c[FALSE_ACCEPT]
        return Counts(c["events"], c[HIT], false_accepts, c[DUPLICATE], c[SUBSTITUTION], hours)

    per_keyword = {label: counts_of(c) for label, c in tally.items()}
    overall = counts_of(sum(tally.values(), Counter()))
    ranked = sorted(pairs.items(), key=lambda item: (-item[1], item[0]))
    return MatchSummary(hours, per_keyword, overall, [(t, d, n) for (t, d), n in ranked])


def match_streams(
    streams: Sequence[Stream],
    detections: Sequence[Sequence[Detection]],
    keywords: Sequence[str],
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> tuple[list[RecordingMatch], MatchSummary]:
    """Match each stream's detections (`detections[i]` belongs to `streams[i]`) and count them over the
    streams' total duration."""
    matches = [
        match_recording(s.audio_filepath, s.events, d, tolerance_s)
        for s, d in zip(streams, detections, strict=True)
    ]
    hours = sum(s.duration for s in streams) / 3600.0
    return matches, summarize(matches, keywords, hours)
