"""Driving the command line in-process, with the sound card and the keyboard replaced: `kws listen-errors
--play` sessions in tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import numpy as np
import pytest

from kws import cli
from kws.audio import SAMPLE_RATE
from kws.evaluate import listen


class Recorder:
    """An AudioOutput that remembers what it was asked to play."""

    def __init__(self) -> None:
        self.played: list[np.ndarray] = []
        self.stopped = 0

    def play(self, samples: np.ndarray, sample_rate: int) -> None:
        assert sample_rate == SAMPLE_RATE and samples.dtype == np.int16
        self.played.append(samples.copy())

    def stop(self) -> None:
        self.stopped += 1


def scripted(keys: list[str]) -> listen.KeySource:
    it: Iterator[str] = iter(keys)
    return lambda: next(it, "q")


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["kws", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
        raise SystemExit(0)
    return int(exit_info.value.code or 0)
