"""JSON-lines manifests: one `{"audio_filepath", "duration", "command"}` object a line (RECIPE.md)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kws.errors import DataError
from kws.files import read_text, write_text_atomic

EXPECTED_LINE = '{"audio_filepath": ..., "duration": ..., "command": ...}'


@dataclass(frozen=True)
class Entry:
    audio_filepath: str
    duration: float  # seconds
    label: str

    def to_json(self) -> str:
        obj = {"audio_filepath": self.audio_filepath, "duration": self.duration, "command": self.label}
        return json.dumps(obj)


MANIFEST_FIX = "pass a JSON-lines manifest written by `kws prepare` (e.g. data/<dataset>/train_manifest.json)"


def check_manifest_path(path: Path) -> Path:
    """`path` if it names a file; a DataError saying it does not exist or is a folder otherwise."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"manifest {path} is a directory; {MANIFEST_FIX}")
    if not path.exists():
        raise DataError(f"manifest {path} does not exist; run `kws prepare` or check the path")
    return path


def read_manifest(path: Path) -> list[Entry]:
    """Read a manifest; `label` is accepted as a synonym of `command`. A malformed line is a DataError that
    names the file and the line number."""
    path = check_manifest_path(path)
    text = read_text(path, "manifest", DataError, MANIFEST_FIX)
    entries = []
    for line_no, line in enumerate(text.split("\n"), 1):  # not splitlines: JSON strings may hold U+2028
        if line.strip():
            entries.append(_entry(line, f"line {line_no} of {path}"))
    if not entries:
        raise DataError(f"manifest {path} lists no clips; re-run `kws prepare` or pick another manifest")
    return entries


def json_object(line: str, where: str, expected: str) -> dict[str, Any]:
    """One JSON-lines manifest line as a dict; a DataError starting with `where` ("line N of X") and ending
    with what a line should look like when it is not a JSON object."""
    try:
        obj: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{where} is not valid JSON ({exc.msg} at column {exc.colno}); expected {expected}"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{where} is not a JSON object but {line.strip()[:60]}; expected {expected}")
    return obj


def seconds_field(value: Any, key: str, where: str, fix: str) -> float:
    """A manifest line's `key` as seconds >= 0, or a DataError starting with `where` and ending with `fix`."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if isinstance(value, bool) or not math.isfinite(seconds) or seconds < 0:
        raise DataError(
            f'{where} has a "{key}" of {json.dumps(value)}, expected a number of seconds >= 0; {fix}'
        )
    return seconds


def _entry(line: str, where: str) -> Entry:
    """One manifest line -> Entry; `where` ("line N of X") starts every error message."""
    obj = json_object(line, where, EXPECTED_LINE)
    path = obj.get("audio_filepath")
    if not isinstance(path, str) or not path:
        found = "no" if path is None else f"an invalid ({json.dumps(path)})"
        raise DataError(f'{where} has {found} "audio_filepath" key; expected {EXPECTED_LINE}')
    label = obj.get("command", obj.get("label"))
    if label is None or isinstance(label, dict | list):
        found = "no" if label is None else f"an invalid ({json.dumps(label)})"
        raise DataError(f'{where} has {found} "command" (or "label") key; expected {EXPECTED_LINE}')
    # optional: the packed cache reads lengths from the wav headers
    seconds = seconds_field(
        obj.get("duration", 0.0), "duration", where, "fix the line or re-run `kws prepare`"
    )
    return Entry(path, seconds, str(label))


def write_manifest(path: Path, entries: list[Entry]) -> None:
    """Write a manifest atomically."""
    write_text_atomic(Path(path), "".join(e.to_json() + "\n" for e in entries))


def labels_of(entries: Sequence[Entry]) -> list[str]:
    """The distinct labels of `entries`, sorted: the label list of a model trained on them."""
    return sorted({e.label for e in entries})


def training_labels(entries: Sequence[Entry], manifest: Path) -> list[str]:
    """`labels_of` a training manifest, which must have at least two: one class is nothing to classify."""
    labels = labels_of(entries)
    if len(labels) < 2:
        raise DataError(
            f"the training manifest {manifest} has {len(labels)} class ({', '.join(labels)}); a classifier "
            "needs at least 2: add clips of other classes or pick another --train-manifest"
        )
    return labels


def check_labels(entries: Sequence[Entry], labels: Sequence[str], manifest: Path, fix: str) -> None:
    """A DataError naming the labels of `entries` that are not in `labels`, with an example clip; `fix`
    (a sentence) says what to do, which depends on the caller (training or evaluation)."""
    known = set(labels)
    unknown = sorted({e.label for e in entries if e.label not in known})
    if not unknown:
        return
    first = next(e for e in entries if e.label not in known)
    count = f"{len(unknown)} labels" if len(unknown) > 1 else "labels"
    raise DataError(
        f"{manifest} has {count} the model does not know: {', '.join(unknown)} "
        f"(e.g. {first.audio_filepath}); the model's labels are {', '.join(labels)}. {fix}"
    )
