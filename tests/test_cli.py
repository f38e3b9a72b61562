"""The command line's contract: fast help without torch, the version, and one error boundary."""

from __future__ import annotations

import subprocess
import sys

import pytest

import kws
from kws import cli
from kws.errors import DataError
from tests.helpers import kws as run_kws


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; sys.argv = ['kws', '--help']\n"
        "from kws.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "prepare" in proc.stdout and "listen-errors" in proc.stdout
    assert proc.stdout.strip().endswith("False")


def test_version() -> None:
    proc = subprocess.run([sys.executable, "-m", "kws", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"kws {kws.__version__}"


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (DataError("manifest x does not exist; run `kws prepare`"), "error: manifest x does not exist"),
        (PermissionError(13, "Permission denied", "/data/x.wav"), "error: Permission denied: /data/x.wav"),
    ],
)
def test_errors_become_one_line_and_exit_1(
    raised: Exception, expected: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing_app(**_: object) -> None:
        raise raised

    monkeypatch.setattr(cli, "app", failing_app)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1 and "Traceback" not in err


def test_ctrl_c_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(**_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "app", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 130


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["trian"], "No such command 'trian'"),
        (["train", "--epochs", "three"], "'--epochs'"),
        (["evaluate"], "Missing argument 'checkpoint'"),
        (["evaluate", "runs/x/best.pt"], "Missing argument 'manifests'"),
        (["train", "--bogus"], "No such option: --bogus"),
        (["prepare", "--version", "three"], "'--version'"),
        (["listen-errors", "a", "b"], "unexpected extra argument"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str], fragment: str) -> None:
    proc = run_kws(*args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], proc.stderr
    assert "--help`" in lines[0]  # where to look next


def test_bare_kws_prints_the_help() -> None:
    proc = run_kws()
    assert proc.returncode in (0, 2)
    assert "Traceback" not in proc.stdout + proc.stderr and "error:" not in proc.stdout + proc.stderr
    assert "prepare" in proc.stdout and "listen-errors" in proc.stdout


def test_ctrl_c_inside_a_command_prints_interrupted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Typer itself turns a KeyboardInterrupt raised in a command into exit code 130."""

    def interrupted_prepare(**_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(sys, "argv", ["kws", "prepare"])
    monkeypatch.setattr("kws.prepare.splits.ManifestOptions", interrupted_prepare)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "interrupted\n"
