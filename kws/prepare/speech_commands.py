"""Google Speech Commands v1/v2: fetch the archive (or take one on disk, or an extracted tree), then split.

Where the data comes from, first match wins:
- `source`: an extracted tree in the Speech Commands layout, used in place: its manifests (and, for
  `--classes sub`, its `_silence_/` clips) are written into that folder, nothing is copied, and
  `data_root` is not used.
- `DATA_ROOT/google_speech_recognition_v{1,2}/` already there: used as it is (delete it to extract again).
- `archive`: a .tar.gz on disk, verified and extracted.
- otherwise the archive is downloaded from `url` (default: the official one) to `DATA_ROOT/<file name>`,
  resumed if an earlier download was interrupted, verified, kept, and extracted.
Verification is against the official SHA-256 of the chosen version unless `sha256` names another archive;
`verify=False` skips it.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from kws.console import byte_progress
from kws.errors import ConfigError, DataError, DownloadError
from kws.prepare.archive import extract_tar
from kws.prepare.download import download
from kws.prepare.splits import ManifestOptions, PrepareResult, build_manifests, check_options


@dataclass(frozen=True)
class Release:
    url: str
    sha256: str


RELEASES = {
    1: Release(
        "http://download.tensorflow.org/data/speech_commands_v0.01.tar.gz",
        "743935421bb51cccdb6bdd152e04c5c70274e935c82119ad7faeec31780d811d",
    ),
    2: Release(
        "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
        "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
    ),
}


def dataset_dir_for(data_root: Path, version: int) -> Path:
    return Path(data_root) / f"google_speech_recognition_v{version}"


def prepare_speech_commands(
    data_root: Path,
    version: int,
    opts: ManifestOptions,
    *,
    url: str | None,
    archive: Path | None,
    sha256: str | None,
    verify: bool,
    source: Path | None,
) -> PrepareResult:
    """Make sure the tree of Speech Commands `version` is on disk, then write its manifests."""
    check_options(opts)
    if version not in RELEASES:
        raise ConfigError(f"unknown --version {version}; Speech Commands has versions 1 and 2")
    if sum(x is not None for x in (url, archive, source)) > 1:
        raise ConfigError("--url, --archive and --source each name where the data comes from; pass only one")
    if sha256 is not None and not verify:
        raise ConfigError("--sha256 asks for a check and --no-verify skips it; pass only one of them")
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise ConfigError(f"--sha256 {sha256!r} is not a SHA-256 (64 hex digits); check the value")
    release = RELEASES[version]
    expected = (sha256 or release.sha256).lower() if verify else None

    if source is not None:
        if not Path(source).is_dir():
            raise DataError(f"--source {source} is not a folder; pass an extracted Speech Commands tree")
        result = build_manifests(Path(source), opts)
        result.notes.insert(0, f"Using the tree in {source} in place; its manifests are written there.")
        return result

    notes: list[str] = []
    dataset_dir = dataset_dir_for(data_root, version)
    if dataset_dir.is_dir():
        if url is not None or archive is not None:
            notes.append(f"{dataset_dir} is already extracted; delete it to extract the archive again.")
    else:
        if archive is not None:
            _verify_file(Path(archive), expected, delete=False)
        else:
            archive = _fetch(url or release.url, Path(data_root), version, expected, notes)
        extract_tar(Path(archive), dataset_dir)
        notes.append(f"Extracted {Path(archive).name} into {dataset_dir}.")
    result = build_manifests(dataset_dir, opts)
    result.notes[:0] = notes
    return result


def _fetch(url: str, data_root: Path, version: int, expected: str | None, notes: list[str]) -> Path:
    """Download `url` into `data_root` unless a complete copy is already there."""
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    dest = data_root / (name or f"speech_commands_v0.0{version}.tar.gz")
    if dest.is_file():
        _verify_file(dest, expected, delete=True)
        notes.append(f"Using {dest}, downloaded earlier.")
        return dest
    result = download(url, dest, expected_sha256=expected)
    if result.restarted:
        notes.append("The server ignored the request to resume, so the download restarted from the start.")
    elif result.resumed_from:
        notes.append(f"Resumed the download at byte {result.resumed_from:,}.")
    notes.append(
        f"Downloaded {dest} (SHA-256 {result.sha256}{', verified' if expected else ', not verified'})."
    )
    return dest


def _verify_file(path: Path, expected: str | None, *, delete: bool) -> None:
    if not path.is_file():
        raise DataError(f"archive {path} does not exist; check --archive")
    if expected is None:
        return
    actual = _sha256_with_progress(path)
    if actual != expected:
        if delete:
            path.unlink()
        fate = "it was deleted, run again to download it anew" if delete else "it was not extracted"
        raise DownloadError(
            f"the SHA-256 of {path} is {actual}, expected {expected}; {fate}. "
            "Pass --sha256 HEX for a different archive, or --no-verify to skip the check"
        )


def _sha256_with_progress(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f, byte_progress() as bar:
        task = bar.add_task(f"checking {path.name}", total=path.stat().st_size)
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            bar.advance(task, len(block))
    return digest.hexdigest()
