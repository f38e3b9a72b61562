"""Atomic file writes: write to a temporary name in the same folder, then rename, so that a crash or
Ctrl-C never leaves a half-written file under the real name."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kws.errors import KWSError


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is renamed to `path`, on failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def ensure_folder(folder: Path, purpose: str, error: type[KWSError]) -> None:
    """Create `folder` (and its parents), or raise `error` naming it and `purpose` in one line."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # --data-root is a file, or a folder we may not write to
        in_the_way = isinstance(exc, FileExistsError | NotADirectoryError)
        why = "a file is in the way" if in_the_way else exc.strerror
        raise error(
            f"cannot create the folder {folder} {purpose} ({why or exc}); "
            "check --data-root: it must be a folder you can write to"
        ) from None
