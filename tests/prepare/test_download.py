"""kws.prepare.download against a local HTTP server: fetch, verify, resume, restart, and the errors."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kws.errors import DownloadError
from kws.files import HASH_BLOCK, file_digest, file_sha256
from kws.prepare.download import download, partial_path
from tests.helpers.speech_commands import LocalServer

PAYLOAD = os.urandom(300_000)  # several read chunks, so "halfway" is a real partial file
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server(tmp_path: Path):
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "data.tar.gz").write_bytes(PAYLOAD)
    with LocalServer(tmp_path / "www") as srv:
        yield srv


def test_download_verifies_and_renames_into_place(server: LocalServer, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "data.tar.gz"
    result = download(server.url("data.tar.gz"), dest, expected_sha256=SHA.upper())
    assert dest.read_bytes() == PAYLOAD
    assert result.sha256 == SHA and result.resumed_from == 0 and not result.restarted
    assert not partial_path(dest).exists()
    assert server.range_headers() == []


def test_resume_after_the_connection_drops(server: LocalServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.tar.gz"
    server.mode = "drop"
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        download(server.url("data.tar.gz"), dest, expected_sha256=SHA)
    kept = partial_path(dest).stat().st_size
    assert 0 < kept < len(PAYLOAD) and not dest.exists()

    server.mode = "normal"
    result = download(server.url("data.tar.gz"), dest, expected_sha256=SHA)
    assert server.range_headers() == [f"bytes={kept}-"]
    assert result.resumed_from == kept and not result.restarted
    assert dest.read_bytes() == PAYLOAD


def test_a_server_that_ignores_range_restarts_the_download(server: LocalServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.tar.gz"
    partial_path(dest).write_bytes(b"x" * 1000)  # not even a prefix of the real file
    server.mode = "ignore_range"
    result = download(server.url("data.tar.gz"), dest, expected_sha256=SHA)
    assert server.range_headers() == ["bytes=1000-"]
    assert result.restarted and result.resumed_from == 0
    assert dest.read_bytes() == PAYLOAD


def test_a_206_for_other_bytes_than_asked_for_is_not_written_as_the_start(
    server: LocalServer, tmp_path: Path
) -> None:
    dest = tmp_path / "data.tar.gz"
    partial_path(dest).write_bytes(PAYLOAD[:1000])
    server.mode = "wrong_range"  # answers bytes 500- to "bytes=1000-"
    result = download(server.url("data.tar.gz"), dest, expected_sha256=SHA)
    assert server.range_headers() == ["bytes=1000-"] and len(server.requests) == 2  # then no Range
    assert result.restarted and result.resumed_from == 0
    assert dest.read_bytes() == PAYLOAD


def test_a_data_root_that_is_a_file_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "root").write_text("not a folder")
    url = "http://127.0.0.1:1/x.tar.gz"  # a closed port: the folder is made before anything is fetched
    args = ["prepare", "--url", url, "--no-verify", "--data-root", str(tmp_path / "root")]
    proc = subprocess.run(
        [sys.executable, "-m", "kws", *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "--data-root" in proc.stderr


def test_a_partial_file_longer_than_the_remote_one_starts_over(server: LocalServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.tar.gz"
    partial_path(dest).write_bytes(PAYLOAD + b"junk")  # the server answers 416
    result = download(server.url("data.tar.gz"), dest, expected_sha256=SHA)
    assert server.range_headers() == [f"bytes={len(PAYLOAD) + 4}-"]
    assert dest.read_bytes() == PAYLOAD and result.resumed_from == 0


def test_a_complete_partial_file_is_verified_and_renamed_without_downloading_again(
    server: LocalServer, tmp_path: Path
) -> None:
    dest = tmp_path / "data.tar.gz"
    partial_path(dest).write_bytes(PAYLOAD)  # an earlier run stopped after the last byte, before the rename
    result = download(server.url("data.tar.gz"), dest, expected_sha256=SHA)
    assert server.range_headers() == [f"bytes={len(PAYLOAD)}-"], "one request, answered 416, nothing fetched"
    assert result.resumed_from == len(PAYLOAD) and result.sha256 == SHA
    assert dest.read_bytes() == PAYLOAD and not partial_path(dest).exists()


def test_a_complete_partial_file_with_the_wrong_checksum_is_deleted(
    server: LocalServer, tmp_path: Path
) -> None:
    dest = tmp_path / "data.tar.gz"
    partial_path(dest).write_bytes(os.urandom(len(PAYLOAD)))  # the right size, other bytes
    with pytest.raises(DownloadError, match="the download was deleted"):
        download(server.url("data.tar.gz"), dest, expected_sha256=SHA)
    assert not partial_path(dest).exists() and not dest.exists()


def test_checksum_mismatch_keeps_nothing(server: LocalServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.tar.gz"
    with pytest.raises(DownloadError, match=f"SHA-256 .* is {SHA}, expected {'0' * 64}"):
        download(server.url("data.tar.gz"), dest, expected_sha256="0" * 64)
    assert list(tmp_path.glob("data.tar.gz*")) == []


def test_no_expected_checksum_skips_verification(server: LocalServer, tmp_path: Path) -> None:
    assert download(server.url("data.tar.gz"), tmp_path / "d.tgz").sha256 == SHA


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:1/x.tar.gz", "cannot reach http://127.0.0.1:1/x.tar.gz"),
        ("nonsense", "not a URL kws can download"),
    ],
)
def test_unreachable_or_invalid_url(url: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=message):
        download(url, tmp_path / "x.tar.gz")
    assert not partial_path(tmp_path / "x.tar.gz").exists()


def test_missing_file_names_the_http_status(server: LocalServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(server.url("missing.tar.gz"), tmp_path / "x.tar.gz")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to simulate a full disk")
def test_disk_full_is_a_clear_error(server: LocalServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.tar.gz"
    partial_path(dest).symlink_to("/dev/full")  # every write fails with ENOSPC
    with pytest.raises(DownloadError, match="disk full .* free some space"):
        download(server.url("data.tar.gz"), dest, expected_sha256=SHA)


def test_file_sha256_reports_progress_and_a_digest_goes_on_hashing(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(PAYLOAD * 4)  # more than one block
    reads: list[int] = []
    assert file_sha256(path, reads.append) == hashlib.sha256(PAYLOAD * 4).hexdigest()
    assert sum(reads) == len(PAYLOAD) * 4 and len(reads) == -(-len(PAYLOAD) * 4 // HASH_BLOCK)
    digest = file_digest(path)
    digest.update(b"appended")
    assert digest.hexdigest() == hashlib.sha256(PAYLOAD * 4 + b"appended").hexdigest()
