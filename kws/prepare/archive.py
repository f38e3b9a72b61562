"""Safe extraction of a .tar.gz into a folder that appears only once it is complete.

Every member is checked before it is written: absolute paths, `..`, links that point outside the
destination, and devices or fifos are refused with an error naming the member. The archive is unpacked
into a temporary sibling folder that is renamed into place at the end, so an interrupted or refused
extraction never leaves a half-filled dataset behind; the temporary folder of a killed run (its process gone)
is removed by the next one.
"""

from __future__ import annotations

import errno
import os
import shutil
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO

from kws.console import byte_progress
from kws.errors import ArchiveError, DataError
from kws.files import ensure_folder, remove_stale_folders, temp_folder

COPY_BUFFER = 1 << 20  # bytes


class _CountingReader:
    """A binary file that reports how many compressed bytes were read (for the progress bar)."""

    def __init__(self, f: IO[bytes], on_read: Callable[[int], None]) -> None:
        self._f = f
        self._on_read = on_read

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self._on_read(len(data))
        return data


def remove_stale_extractions(dest: Path) -> list[Path]:
    """Delete the temporary folders of extractions into `dest` whose process is gone (killed runs); returns
    them. Those of a running process (another kws extracting right now) are left alone."""
    return remove_stale_folders(Path(dest).parent, Path(dest).name)


def extract_tar(archive: Path, dest: Path, check: Callable[[Path], None] | None = None) -> Path:
    """Extract `archive` into `dest` (which must not exist yet), safely; returns `dest`.

    When the archive holds one top-level folder that contains everything, that folder becomes `dest`.
    `check(tree)` may refuse the extracted tree (raising a KWSError) before it is moved into place."""
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise DataError(f"{dest} already exists; remove it to extract {archive.name} again")
    ensure_folder(dest.parent, f"to extract {archive.name}", DataError)
    remove_stale_extractions(dest)
    tmp = temp_folder(dest, "extract")
    try:
        tmp.mkdir()
        with archive.open("rb") as raw, byte_progress() as bar:
            task = bar.add_task(f"extracting {archive.name}", total=archive.stat().st_size)
            reader = _CountingReader(raw, lambda n: bar.advance(task, n))
            with tarfile.open(fileobj=reader, mode="r|*") as tar:  # type: ignore[call-overload]
                for member in tar:
                    _extract_member(tar, member, tmp, archive)
        _check_links(tmp, archive)
        tree = _single_top_folder(tmp)
        if check is not None:
            check(tree)
        os.replace(tree, dest)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise ArchiveError(
            f"cannot read {archive}: {exc}; it is corrupt or not a tar.gz, delete it and download it again"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DataError(
                f"disk full while extracting {archive.name} into {dest.parent}; free some space"
            ) from None
        raise DataError(f"cannot extract {archive} into {dest.parent}: {exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _refuse(archive: Path, member: tarfile.TarInfo | str, why: str) -> ArchiveError:
    name = member if isinstance(member, str) else member.name
    return ArchiveError(
        f"refusing to extract {archive.name}: member {name!r} {why}; "
        "the archive is unsafe or damaged, get it from a trusted source"
    )


def _inside(root: Path, path: str) -> bool:
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(path)]) == real_root


def _safe_name(archive: Path, member: tarfile.TarInfo, name: str, what: str) -> str:
    """`./yes/a.wav` -> `yes/a.wav`; absolute paths and `..` components are refused."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise _refuse(archive, member, f"has an absolute {what}")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(archive, member, f"has a {what} with '..'")
    return "/".join(parts)


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path, archive: Path) -> None:
    name = _safe_name(archive, member, member.name, "path")
    if not name:
        return  # the archive's own "." entry
    target = root / name
    if not _inside(root, str(target.parent)):  # a parent folder is a link to somewhere else
        raise _refuse(archive, member, "would be written through a link that points outside the archive")
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    if not (member.isreg() or member.issym() or member.islnk()):
        raise _refuse(archive, member, "is a device, fifo or other special file")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():  # links already checked could be re-aimed through the new one
        raise _refuse(archive, member, "replaces a symlink extracted before it")
    if target.exists():  # a later member replaces an earlier file; never write through it
        if target.is_dir():
            raise _refuse(archive, member, "replaces a folder")
        target.unlink()
    if member.issym():
        if os.path.isabs(member.linkname) or not _inside(root, str(target.parent / member.linkname)):
            raise _refuse(archive, member, f"is a symlink to {member.linkname!r}, outside the archive")
        os.symlink(member.linkname, target)
    elif member.islnk():
        source = root / _safe_name(archive, member, member.linkname, "link target")
        if not _inside(root, str(source)) or not source.is_file():
            raise _refuse(
                archive, member, f"is a hard link to {member.linkname!r}, not a file in the archive"
            )
        os.link(source, target)
    else:
        src = tar.extractfile(member)
        if src is None:
            raise _refuse(archive, member, "has no data")
        with src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst, COPY_BUFFER)
        os.chmod(target, (member.mode & 0o755) | 0o600)  # no setuid/setgid/sticky, always owner-readable
        os.utime(target, (member.mtime, member.mtime))


def _check_links(root: Path, archive: Path) -> None:
    """Refuse any symlink that, now that every member is on disk, resolves outside `root`."""
    for folder, dirs, files in os.walk(root):
        for entry in [*dirs, *files]:
            path = os.path.join(folder, entry)
            if os.path.islink(path) and not _inside(root, path):
                name = Path(path).relative_to(root).as_posix()
                raise _refuse(archive, name, f"is a symlink to {os.readlink(path)!r}, outside the archive")


def _single_top_folder(tmp: Path) -> Path:
    entries = list(tmp.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return tmp
