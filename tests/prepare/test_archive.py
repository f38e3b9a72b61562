"""kws.prepare.archive: a faithful extraction of a good archive; a refusal naming the member of a bad one."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from kws.errors import ArchiveError, DataError
from kws.prepare.archive import extract_tar
from tests.helpers.speech_commands import build_speech_commands_tree, make_malicious_tar_gz, make_tar_gz


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _tar(archive: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return archive


def _symlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


def test_extracts_the_official_layout_exactly(tmp_path: Path) -> None:
    tree = build_speech_commands_tree(
        tmp_path / "src", words=("yes", "no"), n_speakers=3, n_noise=1, noise_s=1.0
    )
    archive = make_tar_gz(tree.root, tmp_path / "sc.tar.gz")
    dest = extract_tar(archive, tmp_path / "data" / "google_speech_recognition_v1")
    assert _files(dest) == _files(tree.root)
    assert [p.name for p in (tmp_path / "data").iterdir()] == [dest.name]  # no temporary folder left


def test_a_single_top_level_folder_becomes_the_destination(tmp_path: Path) -> None:
    info = tarfile.TarInfo("speech_commands/validation_list.txt")
    archive = _tar(tmp_path / "a.tar.gz", [(info, b"yes/a_nohash_0.wav\n")])
    dest = extract_tar(archive, tmp_path / "out")
    assert (dest / "validation_list.txt").read_text() == "yes/a_nohash_0.wav\n"


def test_links_inside_the_archive_are_kept(tmp_path: Path) -> None:
    members = [
        (tarfile.TarInfo("yes/a.wav"), b"RIFF"),
        _symlink("yes/b.wav", "a.wav"),
        (tarfile.TarInfo("x"), b""),
    ]
    archive = _tar(tmp_path / "a.tar.gz", members)
    dest = extract_tar(archive, tmp_path / "out")
    assert (dest / "yes" / "b.wav").is_symlink() and (dest / "yes" / "b.wav").read_bytes() == b"RIFF"


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "device"])
def test_malicious_members_are_refused_by_name(kind: str, tmp_path: Path) -> None:
    archive, bad = make_malicious_tar_gz(tmp_path / "evil.tar.gz", kind)
    out = tmp_path / "data" / "sc"
    with pytest.raises(ArchiveError, match=f"member {bad!r}"):
        extract_tar(archive, out)
    assert not out.exists() and list((tmp_path / "data").iterdir()) == []
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/kws-evil.txt").exists()


def test_a_link_chain_that_escapes_only_on_disk_is_refused(tmp_path: Path) -> None:
    # "x" -> "." looks harmless, and "x/up" -> ".." is lexically inside ("x/.." == "."), but on disk
    # x/up sits in the root, so ".." leaves it: only a check against the real paths catches this.
    archive = _tar(tmp_path / "a.tar.gz", [_symlink("x", "."), _symlink("x/up", "..")])
    with pytest.raises(ArchiveError, match="member 'x/up'"):
        extract_tar(archive, tmp_path / "out")


def test_a_later_member_cannot_re_aim_a_checked_link(tmp_path: Path) -> None:
    # s -> e/../../.. is inside while e -> d/q/r; re-aiming e -> d would make s point above the root.
    folder = tarfile.TarInfo("d/q/r")
    folder.type = tarfile.DIRTYPE
    members = [(folder, None), _symlink("e", "d/q/r"), _symlink("s", "e/../../.."), _symlink("e", "d")]
    archive = _tar(tmp_path / "a.tar.gz", members)
    with pytest.raises(ArchiveError, match="member 'e' replaces a symlink"):
        extract_tar(archive, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz"]


def test_writing_through_a_link_to_outside_is_refused(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    link = _symlink("d", "../../outside")
    archive = _tar(tmp_path / "a.tar.gz", [link, (tarfile.TarInfo("d/f.txt"), b"owned")])
    with pytest.raises(ArchiveError, match="member 'd'"):
        extract_tar(archive, tmp_path / "out")
    assert list((tmp_path / "outside").iterdir()) == []


def test_a_corrupt_archive_is_a_clear_error(tmp_path: Path) -> None:
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(b"\x1f\x8b" + b"not really gzip" * 100)
    with pytest.raises(ArchiveError, match="corrupt or not a tar.gz"):
        extract_tar(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_existing_destination_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    archive = _tar(tmp_path / "a.tar.gz", [(tarfile.TarInfo("f.txt"), b"x")])
    with pytest.raises(DataError, match="already exists"):
        extract_tar(archive, tmp_path / "out")
