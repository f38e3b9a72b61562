"""Stopping cleanly on a signal: Ctrl-C (SIGINT) and SIGTERM (what schedulers and `kill` send before a hard
stop) both become `Interrupted`, a KeyboardInterrupt carrying the signal, so the code that cleans up after
Ctrl-C cleans up after SIGTERM too and the CLI exits 128 + the signal (130, 143). Training checks an
`InterruptFlag` at step boundaries to save a consistent `last.pt` first; `kws prepare` simply stops."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Stopped by a signal; the CLI exits with 128 + `signum` (130 for Ctrl-C, 143 for SIGTERM).

    A KeyboardInterrupt, so that code which already handles Ctrl-C handles SIGTERM the same way."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


class InterruptFlag:
    """Within the block, SIGINT and SIGTERM set `requested` (and `signum`) instead of stopping the process,
    so the loop can stop at a step boundary and save; a second signal raises `Interrupted` at once."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int = signal.SIGINT
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise Interrupted(signum)
        self.requested, self.signum = True, signum

    def __enter__(self) -> InterruptFlag:
        for signum in SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave the signals alone
                break
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            # None: a handler not installed from Python; the default action is the closest we can restore
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises `Interrupted(SIGTERM)`, a KeyboardInterrupt: the code that cleans up
    after Ctrl-C runs for it too, and the CLI exits 143. Outside the main thread, a no-op."""
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: signals are not ours to handle
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
