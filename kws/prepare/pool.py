"""Worker processes that never outlive the command.

A `kws prepare` killed by SIGKILL, or stopped by SIGTERM, must not leave workers behind that go on writing
files into the dataset. On Linux each worker asks the kernel for SIGKILL when its parent dies
(prctl PR_SET_PDEATHSIG); elsewhere, and for a parent that died before the worker started, a worker checks
before each task that its parent is still the one that started it.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
EXIT_ORPHAN = 1

_parent_pid: int | None = None  # set in each worker by _start_worker


def _start_worker(parent_pid: int) -> None:
    global _parent_pid
    _parent_pid = parent_pid
    # Ctrl-C reaches the whole process group: the parent alone decides, and stops the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # no libc prctl: the check below still works
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    exit_if_orphaned()  # the parent may have died before prctl took effect


def exit_if_orphaned() -> None:
    """In a worker: exit at once when the process that started it is gone. Call it before each task."""
    if _parent_pid is not None and os.getppid() != _parent_pid:
        os._exit(EXIT_ORPHAN)


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of `workers` processes that die with this one. Spawned, not forked: the caller's progress bar
    runs a refresh thread, and fork copies locks it may hold. Tasks should call `exit_if_orphaned` first."""
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(os.getpid(),),
    )
