"""What the user sees while kws works: progress that fits an 80-column terminal, plain lines in a log."""

from __future__ import annotations

import io
import re

import pytest
from rich.cells import cell_len
from rich.console import Console

from kws import console as kws_console
from kws.console import FittingProgress, PlainProgress, TrainDisplay, byte_progress, item_progress

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Clock:
    """A clock the test moves, so rates and ETAs are the long, realistic ones."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def terminal(width: int) -> Console:
    return Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)


def drive(progress: FittingProgress | PlainProgress, description: str, total: int, clock: Clock) -> None:
    progress.get_time = clock  # the tasks read it when they are added
    with progress:
        task = progress.add_task(description, total=total)
        for _ in range(5):
            clock.now += 1.37
            progress.advance(task, total // 9)
        progress.console.print(progress.get_renderable())  # the frame as it stands, once more


def screen_lines(console: Console) -> list[str]:
    text = ANSI.sub("", console.file.getvalue())  # type: ignore[attr-defined]
    return [line for line in re.split(r"[\r\n]", text) if line.strip()]


@pytest.mark.parametrize("width", [80, 100, 200])
def test_progress_bars_fit_the_terminal_without_cut_cells(width: int) -> None:
    con = terminal(width)
    drive(item_progress("clips", console=con), "decoding train_manifest.json", 9000, Clock())
    drive(byte_progress(console=con), "downloading speech_commands_v0.01.tar.gz", 1_400_000_000, Clock())
    display = TrainDisplay(True, console=con)
    with display:
        display.start_epoch(9, 30, 9000, 0)
        display.update(loss=0.41234, lr=0.0123, val_accuracy=0.9)
        display.advance(1024)
        con.print(display.progress.get_renderable())
    lines = screen_lines(con)
    assert "…" not in "".join(lines)  # no cell cut short...
    assert all(line.startswith(("decoding", "downloading", "epoch")) for line in lines), (
        lines
    )  # ...or wrapped
    assert max(cell_len(line.rstrip()) for line in lines) <= width
    text = "\n".join(lines)
    assert "eta 0:0" in text and "clips/s" in text and "MB/s" in text and "val acc 90.00%" in text
    if width >= 200:  # room for everything: counts and the elapsed time too
        assert "5000/9000" in text and "0:00:06" in text


def test_without_a_terminal_progress_is_plain_periodic_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kws_console, "MIN_GAP_S", 0.5)
    log = Console(file=io.StringIO(), width=80)  # a file: not a terminal
    bar = item_progress("clips", console=log)
    assert isinstance(bar, PlainProgress)
    clock = Clock()
    bar.get_time = clock
    with bar:
        task = bar.add_task("decoding train.json", total=9000)
        for _ in range(9):
            clock.now += 1.0
            bar.advance(task, 1000)
    lines = log.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert "\x1b" not in "".join(lines) and "━" not in "".join(lines)
    assert lines[3] == "decoding train.json: 4,000/9,000 clips (44%), 1,000 clips/s, eta 0:05"
    assert lines[-1] == "decoding train.json: 9,000 clips in 0:09 (1,000 clips/s)"
    assert len(lines) == 9  # one per tenth of the work (1 s apart here), then the summary


def test_plain_lines_are_rare_when_work_is_fast_and_timed_when_slow() -> None:
    log = Console(file=io.StringIO(), width=80)
    bar = byte_progress(console=log)
    clock = Clock()
    bar.get_time = clock
    with bar:
        task = bar.add_task("downloading x.tar.gz", total=1_000_000_000, completed=100_000_000)
        for _ in range(3):  # 30 % in 0.3 s: too fast for a line per tenth
            clock.now += 0.1
            bar.advance(task, 100_000_000)
        clock.now += kws_console.REPORT_EVERY_S  # stalled: a line anyway
        bar.advance(task, 1)
        bar.update(task, completed=1_000_000_000)
    lines = log.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 2, lines
    assert lines[0].startswith("downloading x.tar.gz: 400.0 MB/1.0 GB (40%)")
    assert lines[1].startswith("downloading x.tar.gz: 1.0 GB in 0:10")


def test_train_display_in_a_log_prints_stats_and_no_summary_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kws_console, "MIN_GAP_S", 0.0)
    log = Console(file=io.StringIO(), width=80)
    display = TrainDisplay(True, console=log)
    with display:
        display.start_epoch(0, 3, 100, 0)
        display.update(loss=0.5, lr=0.01)
        display.advance(50)
        display.advance(50)
        display.print("epoch 1/3 done")
        long_line = "epoch 2/3  train loss 0.1234  validation_manifest loss 0.2345 acc 98.76%  (best) " * 2
        display.print(long_line)  # wider than the log's 80 columns: still one line, never cut or wrapped
    lines = log.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert lines[0].startswith("epoch 1/3: 50/100 clips (50%)") and lines[0].endswith(
        "loss 0.5000  lr 0.01  val acc --"
    )
    assert lines[1:] == ["epoch 1/3 done", long_line]
    silent = Console(file=io.StringIO(), width=80)
    with TrainDisplay(False, console=silent) as other_rank:
        other_rank.start_epoch(0, 3, 100, 0)
        other_rank.advance(100)
        other_rank.print("epoch 1/3 done")
    assert silent.file.getvalue() == ""  # type: ignore[attr-defined]
