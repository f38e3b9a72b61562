"""Google Speech Commands v1/v2: fetch the archive (or take one on disk, or an extracted tree), then split.

Where the data comes from, first match wins:
- `source`: an extracted tree in the Speech Commands layout, used in place: its manifests (and, for
  `--classes sub`, its `_silence_/` clips) are written into that folder, nothing is copied, and
  `data_root` is not used.
- `DATA_ROOT/google_speech_recognition_v{1,2}/` already there: used as it is (delete it to extract again),
  unless it is incomplete: no `.kws_extracted` marker (written last by a successful extraction) and no split
  lists (so not a tree extracted by hand or by an older kws either). Such a folder, left by an interrupted
  or refused extraction, is removed and extracted again.
- `archive`: a .tar.gz on disk, verified and extracted.
- otherwise the archive is downloaded from `url` (default: the official one) to `DATA_ROOT/<file name>`,
  resumed if an earlier download was interrupted, verified, kept, and extracted.
Verification is against the official SHA-256 of the chosen version unless `sha256` names another archive;
`verify=False` skips it.
"""

from __future__ import annotations

import re
import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from kws.console import byte_progress
from kws.errors import ArchiveError, ConfigError, DataError, DownloadError
from kws.files import file_sha256, write_text_atomic
from kws.prepare.archive import extract_tar, remove_stale_extractions
from kws.prepare.download import download
from kws.prepare.splits import LIST_FILES, ManifestOptions, PrepareResult, build_manifests, check_options

EXTRACTED = ".kws_extracted"  # written last into a tree extracted from an archive: the tree is complete


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
    remove_stale_extractions(dataset_dir)
    if dataset_dir.is_dir() and not is_complete(dataset_dir):
        notes.append(f"note: {dataset_dir} is incomplete (an interrupted extraction?); extracting again")
        shutil.rmtree(dataset_dir)
    if dataset_dir.is_dir():
        if url is not None or archive is not None:
            notes.append(f"{dataset_dir} is already extracted; delete it to extract the archive again.")
    else:
        if archive is not None:
            _verify_file(Path(archive), expected, delete=False)
        else:
            archive = _fetch(url or release.url, Path(data_root), version, expected, notes)
        name = Path(archive).name
        extract_tar(Path(archive), dataset_dir, check=lambda tree: _check_layout(tree, name))
        write_text_atomic(dataset_dir / EXTRACTED, f"{name}\n")
        notes.append(f"Extracted {name} into {dataset_dir}.")
    result = build_manifests(dataset_dir, opts)
    result.notes[:0] = notes
    return result


def is_complete(dataset_dir: Path) -> bool:
    """Whether the tree is whole: extracted by kws to the end, or holding the split lists of one extracted by
    hand (or by a kws from before the marker)."""
    return (dataset_dir / EXTRACTED).is_file() or all(
        (dataset_dir / name).is_file() for name in LIST_FILES.values()
    )


def _check_layout(tree: Path, archive_name: str) -> None:
    """Refuse an archive whose top level is not a Speech Commands tree, before it takes the dataset's
    place (a tree without its split lists would be taken for an interrupted extraction)."""
    missing = [name for name in LIST_FILES.values() if not (tree / name).is_file()]
    if missing:
        found = sorted(p.name for p in tree.iterdir())
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "") if found else "nothing"
        verb = "is" if len(missing) == 1 else "are"
        raise ArchiveError(
            f"{archive_name} is not a Speech Commands archive: {' and '.join(missing)} {verb} not at its "
            f"top level (found {shown}); pass the official archive, or extract it yourself and pass the "
            "tree with --source"
        )


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
    with byte_progress() as bar:
        task = bar.add_task(f"checking {path.name}", total=path.stat().st_size)
        return file_sha256(path, lambda n: bar.advance(task, n))
