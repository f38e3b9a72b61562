"""Atomic file writes: write to a temporary name in the same folder, then rename, so that a crash or
Ctrl-C never leaves a half-written file under the real name. Folders are built the same way, and the
temporary folders a killed process leaves behind are recognised and removed by the next run."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kws.errors import KWSError

HASH_BLOCK = 1 << 20  # bytes read at a time while hashing
# A folder being built is `.<name>.<tag>-<host>-<pid>` beside its final place, renamed when complete (names
# without the host come from older kws versions).
_TEMP_FOLDER = re.compile(r"^\.(?P<name>.+)\.(?P<tag>tmp|extract)-(?:(?P<host>.+)-)?(?P<pid>\d+)$")
STALE_FOREIGN_S = 24 * 3600  # another machine's folder (a shared disk) untouched this long is abandoned


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


def write_json_if_changed(path: Path, obj: Any) -> None:
    """write_json_atomic, unless `path` already holds `obj`: a re-run leaves the file and its mtime alone."""
    try:
        unchanged = json.loads(Path(path).read_text(encoding="utf-8")) == obj
    except (OSError, ValueError):
        unchanged = False
    if not unchanged:
        write_json_atomic(path, obj)


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


def file_digest(path: Path, on_read: Callable[[int], None] | None = None) -> hashlib._Hash:
    """The SHA-256 state after reading the whole file in blocks (a resumed download goes on hashing the bytes
    it appends); `on_read(n_bytes)` is called after each block, for a progress bar."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(HASH_BLOCK), b""):
            digest.update(block)
            if on_read is not None:
                on_read(len(block))
    return digest


def file_sha256(path: Path, on_read: Callable[[int], None] | None = None) -> str:
    """Hex SHA-256 of a file; `on_read` as for `file_digest`."""
    return file_digest(path, on_read).hexdigest()


def temp_folder(final: Path, tag: str = "tmp") -> Path:
    """Where to build the folder `final` before renaming it into place: this process's own name beside it."""
    final = Path(final)
    return final.with_name(f".{final.name}.{tag}-{socket.gethostname()}-{os.getpid()}")


def remove_stale_folders(parent: Path, name: str | None = None) -> list[Path]:
    """Remove the temporary folders in `parent` (of the folder `name` only, when given) that killed processes
    left behind; returns them. A folder is stale when its process, on this machine, is gone, or, written from
    another machine sharing the disk, when it has not changed for STALE_FOREIGN_S. A live build (this process,
    a parallel run, a DDP rank of another node) is never touched."""
    parent, host = Path(parent), socket.gethostname()
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for folder in parent.iterdir():
        match = _TEMP_FOLDER.match(folder.name)
        if not match or not folder.is_dir() or (name is not None and match["name"] != name):
            continue
        if match["host"] in (None, host):
            stale = not _pid_alive(int(match["pid"]))
        else:
            try:
                newest = max([p.stat().st_mtime for p in folder.iterdir()] + [folder.stat().st_mtime])
            except OSError:  # renamed or removed meanwhile by its owner
                continue
            stale = time.time() - newest > STALE_FOREIGN_S
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                removed.append(folder)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to another user
        return True
    return True


def read_text(path: Path, what: str, error: type[KWSError], fix: str) -> str:
    """The UTF-8 text of `path`, or `error` saying in one line why it cannot be read and what to do:
    `cannot read <what> <path>: it is a directory; <fix>`."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except IsADirectoryError:
        why = "is a directory"
    except FileNotFoundError:
        why = "does not exist"
    except UnicodeDecodeError as exc:
        why = f"is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}; a binary file?)"
    except OSError as exc:
        why = f"cannot be opened ({exc.strerror or exc})"
    raise error(f"cannot read {what} {path}: it {why}; {fix}")
