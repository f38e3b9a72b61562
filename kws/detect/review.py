"""`kws listen-errors` on a stream evaluation: every false accept and missed event as a card with the audio
around it (CONTEXT_S either side), on one self-contained page like the clip evaluations' errors.html.

Each recording is read once, however many cards it gives.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kws.audio import SAMPLE_RATE
from kws.detect.stream_report import StreamErrors, read_stream_errors
from kws.errors import DataError, KWSError
from kws.evaluate.listen import DEFAULT_TOP, ERRORS_PAGE, SORTS
from kws.evaluate.page import ClipPicture, PageResult, StreamCard, document, stream_card
from kws.files import write_text_atomic
from kws.stream_manifest import read_stream_audio
from kws.thresholds import threshold_text

CONTEXT_S = 1.5  # seconds of audio shown either side of a detection, or of a missed event
NO_EVENT, MISSED = "none", "missed"


@dataclass
class StreamListenResult:
    errors: StreamErrors  # all of them
    cards: list[StreamCard]  # the selection, in order
    page: PageResult | None = None


def error_cards(errors: StreamErrors) -> list[StreamCard]:
    """One card per false accept and per missed event, without audio yet."""
    cards = [
        StreamCard(
            kind=m.outcome.replace("_", " "),
            label=m.event.label if m.event is not None else NO_EVENT,
            detected=m.detection.label,
            time_s=m.detection.time_s,
            end_s=None,
            score=m.detection.score,
            audio_filepath=m.detection.audio_filepath,
            excerpt=None,
            excerpt_start_s=0.0,
        )
        for m in errors.false_accepts
    ]
    cards += [
        StreamCard(
            "miss",
            m.event.label,
            MISSED,
            m.event.start_s,
            m.event.end_s,
            m.best_score,
            m.audio_filepath,
            None,
            0.0,
        )
        for m in errors.missed
    ]
    return cards


def sort_cards(cards: Sequence[StreamCard], order: str = "confidence") -> list[StreamCard]:
    """As for clips: confidence (lowest score first), -confidence (highest first), or pair (grouped by event
    label and detected label, the most frequent pair first); then by recording and time."""

    def place(c: StreamCard) -> tuple[str, float]:
        return (c.audio_filepath, c.time_s)

    if order == "confidence":
        return sorted(cards, key=lambda c: (c.score, *place(c)))
    if order == "-confidence":
        return sorted(cards, key=lambda c: (-c.score, *place(c)))
    if order == "pair":
        counts = Counter((c.label, c.detected) for c in cards)
        return sorted(
            cards, key=lambda c: (-counts[(c.label, c.detected)], c.label, c.detected, c.score, *place(c))
        )
    raise KWSError(f"unknown sort order {order!r}; use one of {', '.join(SORTS)}")


def with_audio(cards: Sequence[StreamCard]) -> list[StreamCard]:
    """The cards with their excerpts: CONTEXT_S before the detection (or event) to CONTEXT_S after it."""
    by_recording: dict[str, list[int]] = {}
    for i, card in enumerate(cards):
        by_recording.setdefault(card.audio_filepath, []).append(i)
    out = list(cards)
    for path, indices in by_recording.items():
        try:
            audio = read_stream_audio(Path(path))
        except DataError:
            continue  # its cards say that the audio cannot be read
        for i in indices:
            card = cards[i]
            end_s = card.end_s if card.end_s is not None else card.time_s
            start = max(0, int((card.time_s - CONTEXT_S) * SAMPLE_RATE))
            stop = min(len(audio), max(start + 1, int((end_s + CONTEXT_S) * SAMPLE_RATE)))
            excerpt = audio[start:stop].copy()
            out[i] = StreamCard(
                **{**card.__dict__, "excerpt": excerpt, "excerpt_start_s": start / SAMPLE_RATE}
            )
    return out


def _summary(errors: StreamErrors, n_cards: int, sort: str) -> str:
    e = html.escape
    s: dict[str, Any] = errors.summary
    overall, options = s["overall"], s["options"]
    recall = "-" if overall["recall"] is None else f"{overall['recall']:.2%}"
    facts = [
        ("recall", f"{recall} ({overall['hits']} of {overall['n_events']} events)"),
        ("false accepts", f"{overall['false_accepts']} ({overall['fa_per_hour']:.2f} per hour)"),
        ("substitutions", str(overall["substitutions"])),
        ("audio", f"{s['hours']:.2f} h in {s['n_recordings']} recordings"),
        (
            ("thresholds", f"given: {s['thresholds_from']}")
            if "thresholds_from" in s
            else ("target", f"{options['target_fa_per_hour']:g} false accepts per hour per keyword")
        ),
        ("errors", f"{len(errors.false_accepts)} false accepts, {len(errors.missed)} misses "
                   f"({n_cards} on this page, {sort} order)"),
        ("checkpoint", str(s.get("checkpoint", ""))),
        ("manifest", str(s.get("manifest", ""))),
    ]  # fmt: skip
    head = ("keyword", "events", "recall", "false accepts", "FA/h", "threshold")
    rows = [
        (
            label,
            str(k["n_events"]),
            "-" if k["recall"] is None else f"{k['recall']:.1%}",
            str(k["false_accepts"]),
            f"{k['fa_per_hour']:.2f}",
            threshold_text(k["threshold"]),
        )
        for label, k in s["per_keyword"].items()
    ]
    dl = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in facts)
    cells = "".join(
        "<tr>" + "".join(f'<td class="num">{e(c)}</td>' if i else f"<td>{e(c)}</td>" for i, c in enumerate(r))
        for r in rows
    )
    header = "".join(f"<th>{e(h)}</th>" for h in head)
    table = f"<table><thead><tr>{header}</tr></thead><tbody>{cells}</tbody></table>"
    return f'<section class="summary"><dl>{dl}</dl><div><h2>Per keyword</h2>{table}</div></section>'


def write_stream_errors_page(
    path: Path, errors: StreamErrors, cards: Sequence[StreamCard], sort: str
) -> PageResult:
    picture = ClipPicture()
    try:
        rendered = [stream_card(rank, card, picture) for rank, card in enumerate(cards, 1)]
    finally:
        picture.close()
    title = f"kws errors: {Path(str(errors.summary.get('manifest', ''))).name or 'stream evaluation'}"
    labels = sorted({c.label for c in cards}), sorted({c.detected for c in cards})
    write_text_atomic(Path(path), document(title, _summary(errors, len(cards), sort), *labels, rendered))
    missing = sorted({c.audio_filepath for c in cards if c.excerpt is None})
    return PageResult(Path(path), len(cards), missing)


def listen_stream_errors(
    eval_dir: Path, *, top: int | None = DEFAULT_TOP, sort: str = "confidence", html: bool = True
) -> StreamListenResult:
    """EVAL_DIR's false accepts and misses, sorted and cut (`top` None or 0: all); writes errors.html."""
    if top is not None and top < 0:
        raise KWSError(f"--top must be 0 (all) or a positive count, got {top}")
    errors = read_stream_errors(Path(eval_dir))
    cards = sort_cards(error_cards(errors), sort)
    if top:
        cards = cards[:top]
    page = None
    if html:
        cards = with_audio(cards)
        page = write_stream_errors_page(Path(eval_dir) / ERRORS_PAGE, errors, cards, sort)
    return StreamListenResult(errors, cards, page)
