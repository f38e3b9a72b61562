"""Stream manifests: long recordings and the keywords said in them, one JSON object a line:

    {"audio_filepath": "/data/tts/_streams_/stream_000.wav", "duration": 600.0,
     "events": [{"label": "go", "start_s": 12.34, "end_s": 12.81}, ...]}

`events` is empty in a recording without keywords. A relative `audio_filepath` is relative to the manifest's
folder. `kws prepare --dataset tts --streams N` writes them; `kws detect` and the stream evaluation read
them. The recordings are 16 kHz mono int16 wavs (kws.audio).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kws.audio import wav_samples
from kws.errors import DataError
from kws.files import read_text, write_text_atomic
from kws.manifest import json_object, seconds_field

EXPECTED_LINE = (
    '{"audio_filepath": ..., "duration": ..., "events": [{"label": ..., "start_s": ..., "end_s": ...}]}'
)
END_TOLERANCE_S = 0.01  # an event may end this far past the recording's duration (rounding)
FIX = "fix the line or re-run `kws prepare --dataset tts --streams N`"


@dataclass(frozen=True)
class Event:
    """A keyword said from `start_s` to `end_s` seconds into a recording."""

    label: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Stream:
    """A recording and its keyword events, sorted by start."""

    audio_filepath: str
    duration: float  # seconds
    events: tuple[Event, ...]

    def to_json(self) -> str:
        events = [{"label": e.label, "start_s": e.start_s, "end_s": e.end_s} for e in self.events]
        return json.dumps(
            {"audio_filepath": self.audio_filepath, "duration": self.duration, "events": events}
        )


def is_stream_manifest(path: Path) -> bool:
    """True when the file's first non-empty line is a JSON object with "events" (a clip manifest has none)."""
    try:
        with Path(path).open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.strip():
                    obj = json.loads(line)
                    return isinstance(obj, dict) and "events" in obj
    except (OSError, ValueError):
        return False
    return False


def read_stream_manifest(path: Path, labels: Sequence[str] | None = None) -> list[Stream]:
    """Read and check a stream manifest; with `labels`, every event's label must be one of them. A bad line
    is a DataError naming the file, the line number and the fix."""
    path = Path(path)
    if path.is_dir():
        raise DataError(
            f"stream manifest {path} is a directory; pass the JSON-lines file, e.g. {path}/*.json"
        )
    if not path.exists():
        raise DataError(
            f"stream manifest {path} does not exist; check the path or run `kws prepare --streams`"
        )
    text = read_text(path, "stream manifest", DataError, "pass a JSON-lines stream manifest")
    streams = []
    for line_no, line in enumerate(text.split("\n"), 1):  # not splitlines: JSON strings may hold U+2028
        if line.strip():
            streams.append(_stream(line, f"line {line_no} of {path}", path.parent, labels))
    if not streams:
        raise DataError(f"stream manifest {path} lists no recordings; {FIX}")
    return streams


def _stream(line: str, where: str, folder: Path, labels: Sequence[str] | None) -> Stream:
    obj = json_object(line, where, EXPECTED_LINE)
    missing = [k for k in ("audio_filepath", "duration", "events") if k not in obj]
    if missing:
        raise DataError(f"{where} has no {', '.join(repr(k) for k in missing)}; expected {EXPECTED_LINE}")
    audio = obj["audio_filepath"]
    if not isinstance(audio, str) or not audio:
        raise DataError(f'{where} has an invalid "audio_filepath" ({json.dumps(audio)}); expected a path')
    duration = _seconds(obj["duration"], "duration", where)
    if not isinstance(obj["events"], list):
        raise DataError(f'{where} has "events" {json.dumps(obj["events"])[:60]}, not a list; {FIX}')
    events = sorted((_event(e, where) for e in obj["events"]), key=lambda e: (e.start_s, e.end_s))
    for e in events:
        if e.end_s > duration + END_TOLERANCE_S:
            raise DataError(
                f"{where} has a {e.label!r} event ending at {e.end_s} s, past the end of the audio "
                f"({duration} s); {FIX}"
            )
        if labels is not None and e.label not in labels:
            raise DataError(
                f"{where} has an event labelled {e.label!r}, which is not one of the known labels "
                f"({', '.join(labels)}); fix the label or use a model trained on that keyword"
            )
    for a, b in zip(events, events[1:], strict=False):
        if b.start_s < a.end_s:
            raise DataError(
                f"{where} has overlapping events: {a.label!r} {a.start_s}-{a.end_s} s and {b.label!r} "
                f"{b.start_s}-{b.end_s} s; {FIX}"
            )
    path = Path(audio) if Path(audio).is_absolute() else folder / audio
    return Stream(str(path), duration, tuple(events))


def _event(obj: Any, where: str) -> Event:
    if not isinstance(obj, dict) or any(k not in obj for k in ("label", "start_s", "end_s")):
        raise DataError(
            f'{where} has an event {json.dumps(obj)[:60]} without "label", "start_s" and "end_s"; {FIX}'
        )
    label = obj["label"]
    if not isinstance(label, str) or not label:
        raise DataError(f"{where} has an event with the label {json.dumps(label)}, expected a keyword; {FIX}")
    start, end = _seconds(obj["start_s"], "start_s", where), _seconds(obj["end_s"], "end_s", where)
    if end <= start:
        raise DataError(
            f"{where} has a {label!r} event whose end_s ({end}) is not after its start_s ({start}); {FIX}"
        )
    return Event(label, start, end)


def _seconds(value: Any, key: str, where: str) -> float:
    return seconds_field(value, key, where, FIX)


def write_stream_manifest(path: Path, streams: Sequence[Stream]) -> None:
    """Write a stream manifest atomically."""
    write_text_atomic(Path(path), "".join(s.to_json() + "\n" for s in streams))


def read_stream_audio(path: Path) -> np.ndarray:
    """A recording's int16 samples `(samples,)`, memory-mapped when it is 16-bit PCM (kws.audio.wav_samples);
    a DataError naming the file if it is not 16 kHz mono."""
    return wav_samples(Path(path))
