"""Stopping training cleanly: a signal sets a flag that the loop checks at step boundaries, so it can save a
consistent `last.pt` before it exits."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any


class InterruptFlag:
    """Within the block, Ctrl-C (SIGINT) sets `requested` instead of raising, so the loop can stop at a step
    boundary and save; a second Ctrl-C raises at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> InterruptFlag:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self._previous = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
