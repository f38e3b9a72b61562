"""`kws prepare` for Speech Commands, end to end: exit codes, messages, files on disk.

The main paths run `python -m kws` in a subprocess (`kws`); the rest call `kws.cli.main` in this process
(`kws_inline`: the same error boundary, without an interpreter start each time). The archive is built by
the test and served from 127.0.0.1; nothing else is contacted."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from kws.cli import main
from kws.manifest import read_manifest
from tests.helpers import REPO, kws
from tests.helpers.speech_commands import (
    LocalServer,
    SpeechCommandsTree,
    copy_tree,
    make_malicious_tar_gz,
    make_tar_gz,
    write_wav,
)

ARCHIVE = "speech_commands_v0.01.tar.gz"
DATASET = "google_speech_recognition_v1"
SPLIT_NAMES = ("train", "validation", "test")


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


Run = Callable[..., Result]


@pytest.fixture(scope="module")
def www(template: SpeechCommandsTree, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("www")
    make_tar_gz(template.root, folder / ARCHIVE)
    return folder


@pytest.fixture
def server(www: Path):
    with LocalServer(www) as srv:
        yield srv


@pytest.fixture
def kws_inline(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Run:
    """`kws ARGS` through `kws.cli.main`, in tmp_path: the same exit codes and output as `kws`."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "120")

    def run(*args: str | Path) -> Result:
        monkeypatch.setattr(sys, "argv", ["kws", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def manifest_paths(dataset: Path) -> set[str]:
    return {e.audio_filepath for s in SPLIT_NAMES for e in read_manifest(dataset / f"{s}_manifest.json")}


def assert_one_line_error(proc: Result | subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def test_download_verify_extract_and_manifests_then_nothing_to_do(
    server: LocalServer, www: Path, template: SpeechCommandsTree, tmp_path: Path, kws_inline: Run
) -> None:
    sha = hashlib.sha256((www / ARCHIVE).read_bytes()).hexdigest()
    args = ["prepare", "--url", server.url(ARCHIVE), "--sha256", sha, "--data-root", tmp_path / "data"]
    proc = kws(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "downloading" in proc.stderr and "verified" in proc.stdout
    for word in (*SPLIT_NAMES, "smallest class", "hours"):
        assert word in proc.stdout
    dataset = tmp_path / "data" / DATASET
    assert manifest_paths(dataset) == {str((dataset / c).resolve()) for c in template.clips}
    assert (tmp_path / "data" / ARCHIVE).is_file() and not (tmp_path / "data" / f"{ARCHIVE}.part").exists()

    again = kws(*args, cwd=tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert len(server.requests) == 1  # the second run neither downloads nor extracts

    other = kws_inline(*args, "--classes", "sub")
    assert other.returncode == 0 and "nothing to do" not in other.stdout
    assert {e.label for e in read_manifest(dataset / "train_manifest.json")} >= {"silence", "unknown"}


def test_a_kept_archive_is_reused_and_a_corrupt_one_deleted(
    server: LocalServer, www: Path, tmp_path: Path, kws_inline: Run
) -> None:
    sha = hashlib.sha256((www / ARCHIVE).read_bytes()).hexdigest()
    args = ["prepare", "--url", server.url(ARCHIVE), "--sha256", sha]
    assert kws_inline(*args).returncode == 0
    shutil.rmtree(tmp_path / "data" / DATASET)
    proc = kws_inline(*args)  # extracts the archive downloaded before, without a request
    assert proc.returncode == 0 and "downloaded earlier" in proc.stdout and len(server.requests) == 1
    shutil.rmtree(tmp_path / "data" / DATASET)
    (tmp_path / "data" / ARCHIVE).write_bytes(b"damaged")
    assert_one_line_error(kws_inline(*args), "SHA-256", "deleted")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == []


def test_an_interrupted_download_resumes_with_range(server: LocalServer, tmp_path: Path) -> None:
    args = ["prepare", "--url", server.url(ARCHIVE), "--no-verify", "--data-root", tmp_path / "data"]
    server.mode = "drop"
    assert_one_line_error(kws(*args, cwd=tmp_path), "stopped after", "run the same command again to resume")
    kept = (tmp_path / "data" / f"{ARCHIVE}.part").stat().st_size
    assert kept > 0 and not (tmp_path / "data" / DATASET).exists()

    server.mode = "normal"
    proc = kws(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert server.range_headers() == [f"bytes={kept}-"]
    assert f"Resumed the download at byte {kept:,}" in proc.stdout
    assert (tmp_path / "data" / DATASET / "train_manifest.json").is_file()


def test_a_server_ignoring_range_restarts_the_download(
    server: LocalServer, tmp_path: Path, kws_inline: Run
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / f"{ARCHIVE}.part").write_bytes(b"stale partial download")
    server.mode = "ignore_range"
    proc = kws_inline("prepare", "--url", server.url(ARCHIVE), "--no-verify", "--data-root", "data")
    assert proc.returncode == 0, proc.stderr
    assert server.range_headers() and "restarted from the start" in proc.stdout
    assert (tmp_path / "data" / DATASET / "test_manifest.json").is_file()


def test_checksum_mismatch_leaves_nothing_in_place(
    server: LocalServer, tmp_path: Path, kws_inline: Run
) -> None:
    # --url without --sha256 is checked against the official SHA-256, which the test archive cannot match
    proc = kws_inline("prepare", "--url", server.url(ARCHIVE), "--data-root", "data")
    assert_one_line_error(proc, "SHA-256", "743935421bb51cccdb6bdd152e04c5c70274e935c82119ad7faeec31780d811d")
    assert list((tmp_path / "data").iterdir()) == []


def test_a_malicious_archive_is_refused_naming_the_member(tmp_path: Path, kws_inline: Run) -> None:
    archive, bad = make_malicious_tar_gz(tmp_path / "evil.tar.gz", "dotdot")
    proc = kws_inline("prepare", "--archive", archive, "--no-verify", "--data-root", "data")
    assert_one_line_error(proc, f"member {bad!r}", "refusing to extract")
    assert list((tmp_path / "data").iterdir()) == [] and not (tmp_path / "evil.txt").exists()


def test_archive_on_disk_and_exclude(
    www: Path, template: SpeechCommandsTree, tmp_path: Path, kws_inline: Run
) -> None:
    exclude = tmp_path / "exclude.txt"
    exclude.write_text(f"{template.clips[0]}\n{template.clips[1]}\n")
    proc = kws_inline("prepare", "--archive", www / ARCHIVE, "--no-verify", "--exclude", exclude)
    assert proc.returncode == 0, proc.stderr
    assert f"Excluded 2 clips listed in {exclude}" in proc.stdout
    dataset = tmp_path / "data" / DATASET  # the default --data-root, in the working folder
    listed = manifest_paths(dataset)
    assert len(listed) == len(template.clips) - 2
    assert str((dataset / template.clips[0]).resolve()) not in listed


def test_source_tree_is_used_in_place(template: SpeechCommandsTree, tmp_path: Path, kws_inline: Run) -> None:
    tree = copy_tree(template, tmp_path / "mine")
    proc = kws_inline("prepare", "--source", tree.root, "--classes", "sub", "--rebalance")
    assert proc.returncode == 0, proc.stderr
    assert "in place" in proc.stdout and (tree.root / "train_manifest.json").is_file()
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("problem", ["sample_rate", "empty_folder", "missing_list"])
def test_bad_trees_give_one_line_errors(
    problem: str, template: SpeechCommandsTree, tmp_path: Path, kws_inline: Run
) -> None:
    tree = copy_tree(template, tmp_path / "sc")
    if problem == "sample_rate":
        bad = write_wav(tree.root / "yes" / "0bad0bad_nohash_0.wav", np.zeros(4000, np.int16), rate=44_100)
        expected = [str(bad.resolve()), "44100 Hz", "expected 16000 Hz"]
    elif problem == "empty_folder":
        (tree.root / "sheila").mkdir()
        expected = ["label folder", "sheila has no wav files"]
    else:
        (tree.root / "testing_list.txt").unlink()
        expected = ["testing_list.txt is missing"]
    assert_one_line_error(kws_inline("prepare", "--source", tree.root), *expected)


def test_bad_command_lines_give_one_line_errors(tmp_path: Path, kws_inline: Run) -> None:
    assert_one_line_error(kws("prepare", "--version", "3", cwd=tmp_path), "unknown --version 3", "1 and 2")
    url = "http://127.0.0.1:1/x.tar.gz"
    assert_one_line_error(kws("prepare", "--url", url, "--no-verify", cwd=tmp_path), f"cannot reach {url}")
    assert_one_line_error(kws_inline("prepare", "--sha256", "abc"), "not a SHA-256")
    assert_one_line_error(kws_inline("prepare", "--url", url, "--source", "x"), "pass only one")
    assert not (tmp_path / "data" / DATASET).exists()


def test_reference_script_takes_the_reference_flags(template: SpeechCommandsTree, tmp_path: Path) -> None:
    copy_tree(template, tmp_path / "data" / DATASET)  # already extracted: the script must not download
    script = REPO / "data_scripts" / "process_speech_commands_data.py"
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120"}
    args = ["--data_root", "data", "--data_version", "1", "--class_split", "sub", "--rebalance"]
    proc = subprocess.run(
        [sys.executable, script, *args], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    labels = {e.label for e in read_manifest(tmp_path / "data" / DATASET / "train_manifest.json")}
    assert {"silence", "unknown", "yes"} <= labels


# ---------------------------------------------------------------- incomplete and refused extractions (item 7)


def test_an_archive_with_the_wrong_layout_leaves_nothing_and_a_good_one_then_extracts(
    www: Path, template: SpeechCommandsTree, tmp_path: Path, kws_inline: Run
) -> None:
    tree = copy_tree(template, tmp_path / "odd")
    (tree.root / "testing_list.txt").unlink()
    bad = make_tar_gz(tree.root, tmp_path / "odd.tar.gz")
    proc = kws_inline("prepare", "--archive", bad, "--no-verify", "--data-root", "data")
    assert_one_line_error(proc, "odd.tar.gz is not a Speech Commands archive", "testing_list.txt is not at")
    assert list((tmp_path / "data").iterdir()) == []  # no folder that a later run would take as extracted

    proc = kws_inline("prepare", "--archive", www / ARCHIVE, "--no-verify", "--data-root", "data")
    assert proc.returncode == 0, proc.stderr
    assert f"Extracted {ARCHIVE}" in proc.stdout and "already extracted" not in proc.stdout
    assert (tmp_path / "data" / DATASET / ".kws_extracted").is_file()


def test_an_incomplete_extraction_is_removed_and_extracted_again(
    www: Path, template: SpeechCommandsTree, tmp_path: Path, kws_inline: Run
) -> None:
    dataset = tmp_path / "data" / DATASET
    (dataset / "yes").mkdir(parents=True)  # what an interrupted extraction into place left behind
    (dataset / "yes" / "leftover.wav").write_bytes(b"RIFF")
    stale = tmp_path / "data" / f".{DATASET}.extract-99999999"  # a killed run's temporary folder
    (stale / "no").mkdir(parents=True)
    proc = kws_inline("prepare", "--archive", www / ARCHIVE, "--no-verify", "--data-root", "data")
    assert proc.returncode == 0, proc.stderr
    note = f"note: {Path('data') / DATASET} is incomplete (an interrupted extraction?); extracting again"
    assert note in proc.stdout
    assert not (dataset / "yes" / "leftover.wav").exists() and not stale.exists()
    assert manifest_paths(dataset) == {str((dataset / c).resolve()) for c in template.clips}


def test_a_complete_tree_is_kept_and_only_dead_runs_temporary_folders_are_removed(
    template: SpeechCommandsTree, tmp_path: Path, kws_inline: Run
) -> None:
    copy_tree(template, tmp_path / "data" / DATASET)  # extracted by hand: split lists, no marker
    dead = tmp_path / "data" / f".{DATASET}.extract-99999999"
    alive = tmp_path / "data" / f".{DATASET}.extract-1"  # pid 1 runs: another kws extracting right now
    dead.mkdir()
    alive.mkdir()
    proc = kws_inline("prepare", "--data-root", "data")
    assert proc.returncode == 0, proc.stderr
    assert "incomplete" not in proc.stdout and not dead.exists() and alive.is_dir()


def test_a_source_tree_is_never_deleted(
    template: SpeechCommandsTree, tmp_path: Path, kws_inline: Run
) -> None:
    tree = copy_tree(template, tmp_path / "data" / DATASET)  # even where kws would extract, and incomplete
    (tree.root / "validation_list.txt").unlink()
    (tree.root / "testing_list.txt").unlink()
    assert_one_line_error(kws_inline("prepare", "--source", tree.root), "is missing")
    assert all((tree.root / clip).is_file() for clip in tree.clips)
