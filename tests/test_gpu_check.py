"""bench/gpu_check.sh: its syntax and its refusals (the whole CPU dry run takes minutes: run it by hand)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.helpers import REPO

SCRIPT = REPO / "bench" / "gpu_check.sh"


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=30
    )


def test_the_script_parses() -> None:
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_bad_arguments_are_refused_before_anything_runs(tmp_path: Path) -> None:
    results = tmp_path / "results.txt"
    proc = run("--fast", KWS_GPU_CHECK_RESULTS=str(results))
    assert proc.returncode == 2 and "usage: bash bench/gpu_check.sh [--dry-run]" in proc.stderr
    proc = run(KWS_GPU_CHECK_DEVICE="tpu", KWS_GPU_CHECK_RESULTS=str(results))
    assert proc.returncode == 2 and "KWS_GPU_CHECK_DEVICE must be cuda or cpu, got 'tpu'" in proc.stderr
    assert not results.exists()
