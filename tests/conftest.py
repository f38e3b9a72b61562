"""Fixtures shared by the test modules; the helpers they are built on are in tests/helpers/."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from tests.helpers import kws_here
from tests.helpers.speech_commands import SpeechCommandsTree, build_speech_commands_tree
from tests.helpers.tiny_dataset import make_tiny_dataset


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> SpeechCommandsTree:
    """A small Speech-Commands-shaped tree (real wavs, both split lists), built once per module."""
    return build_speech_commands_tree(tmp_path_factory.mktemp("template") / "sc")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The default tiny keyword dataset (tests/helpers/tiny_dataset.py), manifests by split name, built once
    per module; a module that needs another size defines its own `data`."""
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def run_kws(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`run_kws(*args, cwd=...)`: the `kws` command in this process (tests.helpers.kws_here)."""
    return partial(kws_here, monkeypatch, capsys)
