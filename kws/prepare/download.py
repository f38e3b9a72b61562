"""HTTP download with a byte progress bar, resume by HTTP Range, and SHA-256 verification.

Bytes go to `<dest>.part`; only a complete, verified file is renamed to `dest`. An interrupted download
leaves the `.part` file, and the next call asks the server for the rest (`Range: bytes=N-`); a server that
ignores Range answers with the whole file (200), and the download restarts from the first byte; a 206 that
starts at another byte than the one asked for is discarded and the whole file asked for again. A `.part`
file that already holds every byte (the server answers 416 with `Content-Range: bytes */<its size>`) is
verified and renamed without fetching anything.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from kws import __version__
from kws.console import byte_progress
from kws.errors import DownloadError
from kws.files import ensure_folder, file_digest

CHUNK = 1 << 16  # bytes per read
TIMEOUT_S = 60.0  # seconds without data before giving up
HTTP_RANGE_NOT_SATISFIABLE = 416


@dataclass(frozen=True)
class Download:
    path: Path
    sha256: str
    resumed_from: int = 0  # bytes kept from an earlier, interrupted download
    restarted: bool = False  # a partial file existed but the server ignored Range, so it was discarded


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def download(
    url: str, dest: Path, *, expected_sha256: str | None = None, timeout_s: float = TIMEOUT_S
) -> Download:
    """Fetch `url` into `dest`, resuming `<dest>.part` when there is one; verify the SHA-256 when given.

    On a checksum mismatch the download is deleted; on a network error the `.part` file is kept."""
    dest = Path(dest)
    part = partial_path(dest)
    ensure_folder(dest.parent, f"for {dest.name}", DownloadError)
    offset = part.stat().st_size if part.is_file() else 0
    try:
        response = _open(url, offset, timeout_s)
    except _NotSatisfiable as exc:
        if exc.total == offset:  # every byte arrived before an earlier run stopped: only verify and rename
            return _finish(url, dest, file_digest(part), expected_sha256, offset, restarted=False)
        part.unlink()  # the partial file does not fit the remote one: start over
        offset, response = 0, _open(url, 0, timeout_s)
    restarted = False
    start = _first_byte(response)
    if start != offset:
        restarted = bool(offset)
        if start != 0:  # a 206 for other bytes than those asked for: ask again for the whole file
            response.close()
            response = _open(url, 0, timeout_s)
            if _first_byte(response) != 0:
                response.close()
                raise DownloadError(
                    f"{url} answers with parts of the file other than those asked for (HTTP 206, "
                    f"Content-Range {response.headers.get('Content-Range')!r}); check --url, or download "
                    "the archive yourself and pass --archive PATH"
                )
        offset = 0
    with response:
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        try:
            digest = file_digest(part) if offset else hashlib.sha256()  # resuming: the bytes already there
            f = part.open("ab" if offset else "wb")
        except OSError as exc:
            raise _write_error(part, offset, exc) from None
        done = offset
        with f, byte_progress() as bar:
            task = bar.add_task(f"downloading {dest.name}", total=total, completed=offset)
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (http.client.HTTPException, OSError) as exc:
                    raise _stopped(url, done, total, exc) from None
                if not chunk:
                    break
                try:
                    f.write(chunk)
                except OSError as exc:
                    raise _write_error(part, done, exc) from None
                digest.update(chunk)
                done += len(chunk)
                bar.advance(task, len(chunk))
    if total is not None and done < total:
        raise _stopped(url, done, total, "connection closed")
    return _finish(url, dest, digest, expected_sha256, offset, restarted)


def _finish(
    url: str, dest: Path, digest: hashlib._Hash, expected_sha256: str | None, offset: int, restarted: bool
) -> Download:
    """Check the complete `.part` file's digest, then rename it to `dest` (or delete it on a mismatch)."""
    part = partial_path(dest)
    sha256 = digest.hexdigest()
    if expected_sha256 is not None and sha256 != expected_sha256.lower():
        part.unlink()
        raise DownloadError(
            f"the SHA-256 of {url} is {sha256}, expected {expected_sha256.lower()}; "
            "the download was deleted. Check --url, or pass --sha256 HEX for a different archive "
            "(--no-verify skips the check)"
        )
    os.replace(part, dest)
    return Download(dest, sha256, resumed_from=offset, restarted=restarted)


class _NotSatisfiable(Exception):
    """HTTP 416 to a resumed request; `total` is the remote size from `Content-Range: bytes */N`, if sent."""

    def __init__(self, total: int | None) -> None:
        super().__init__(total)
        self.total = total


def _open(url: str, offset: int, timeout_s: float) -> http.client.HTTPResponse:
    """Send the GET (with `Range` when resuming); _NotSatisfiable when the server answers 416."""
    headers = {"User-Agent": f"kws/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        request = urllib.request.Request(url, headers=headers)
        response: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=timeout_s)
        return response
    except urllib.error.HTTPError as exc:
        if exc.code == HTTP_RANGE_NOT_SATISFIABLE and offset:
            match = re.fullmatch(r"bytes \*/(\d+)", (exc.headers.get("Content-Range") or "").strip())
            raise _NotSatisfiable(int(match.group(1)) if match else None) from None
        raise DownloadError(f"{url} answered HTTP {exc.code} {exc.reason}; check --url") from None
    except urllib.error.URLError as exc:
        raise DownloadError(
            f"cannot reach {url} ({exc.reason}); check the network and --url, "
            "or download the archive yourself and pass --archive PATH"
        ) from None
    except ValueError as exc:
        raise DownloadError(f"{url!r} is not a URL kws can download ({exc}); check --url") from None
    except (http.client.HTTPException, OSError) as exc:
        raise DownloadError(f"cannot download {url} ({exc}); check the network and --url") from None


def _first_byte(response: http.client.HTTPResponse) -> int:
    """The first byte this response carries: the Content-Range start of a 206 (-1 when it has none), 0 for
    anything else (a 200 carries the whole file)."""
    if response.status != 206:
        return 0
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else -1


def _stopped(url: str, done: int, total: int | None, why: object) -> DownloadError:
    of_total = f" of {total:,}" if total is not None else ""
    return DownloadError(
        f"the download of {url} stopped after {done:,}{of_total} bytes ({why}); "
        "run the same command again to resume it"
    )


def _write_error(part: Path, done: int, exc: OSError) -> DownloadError:
    if exc.errno == errno.ENOSPC:
        return DownloadError(
            f"disk full while writing {part} ({done:,} bytes so far); free some space and run the same "
            "command again to resume"
        )
    return DownloadError(f"cannot write {part}: {exc.strerror or exc}; check the folder's permissions")
