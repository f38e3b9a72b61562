"""JSON-lines manifests: one `{"audio_filepath", "duration", "command"}` object a line (RECIPE.md)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from kws.errors import DataError
from kws.files import write_text_atomic


@dataclass(frozen=True)
class Entry:
    audio_filepath: str
    duration: float  # seconds
    label: str

    def to_json(self) -> str:
        obj = {"audio_filepath": self.audio_filepath, "duration": self.duration, "command": self.label}
        return json.dumps(obj)


def read_manifest(path: Path) -> list[Entry]:
    """Read a manifest; `label` is accepted as a synonym of `command`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest {path} does not exist; run `kws prepare` or check the path")
    entries = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                label = obj["command"] if "command" in obj else obj["label"]
                entries.append(Entry(str(obj["audio_filepath"]), float(obj.get("duration", 0.0)), str(label)))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise DataError(
                    f"{path}:{line_no} is not a manifest line ({type(exc).__name__}: {exc}); expected "
                    '{"audio_filepath": ..., "duration": ..., "command": ...}'
                ) from None
    if not entries:
        raise DataError(f"manifest {path} lists no clips; re-run `kws prepare` or pick another manifest")
    return entries


def write_manifest(path: Path, entries: list[Entry]) -> None:
    """Write a manifest atomically."""
    write_text_atomic(Path(path), "".join(e.to_json() + "\n" for e in entries))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
