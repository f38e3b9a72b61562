"""What the tests share: the repository's paths, the real `kws` command in a subprocess, and (in the modules
beside this one) tiny datasets, a local Speech Commands server, report checks and a headless Chromium.
Fixtures built on them live in tests/conftest.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
SMOKE = CONFIGS / "smoke.yaml"


# `python -c` with these modules made unimportable first (`import torch` raises), then the entry point
WITHOUT_MODULES = (
    "import sys\n"
    "for name in sys.argv.pop(1).split(','):\n"
    "    sys.modules[name] = None\n"
    "sys.argv[0] = 'kws'\n"
    "from kws.cli import main\n"
    "main()\n"
)


def kws(
    *args: str | Path,
    cwd: Path | None = None,
    timeout: float = 300,
    columns: int = 120,
    without: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point (`python -m kws` runs `kws.cli:main`, as the `kws` script does)
    with this checkout first on the import path, plain output (no colour) `columns` wide, captured as text.
    `without`: modules that cannot be imported in that process (as if they were not installed)."""
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "CLICOLOR_FORCE")}
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        NO_COLOR="1",
        TERM="dumb",
        COLUMNS=str(columns),
    )
    entry = ["-c", WITHOUT_MODULES, ",".join(without)] if without else ["-m", "kws"]
    return subprocess.run(
        [sys.executable, *entry, *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def kws_here(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str | Path,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """`kws(...)` in this process: the same entry point and error boundary, without a new interpreter's
    seconds of imports; for commands that fail fast or do little work."""
    from kws import cli

    if cwd is not None:
        monkeypatch.chdir(cwd)
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setattr(sys, "argv", ["kws", *map(str, args)])
    capsys.readouterr()
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["kws", *map(str, args)], code, out, err)
