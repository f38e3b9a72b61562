"""Rich progress bars with rate and ETA, shared by every long-running step.

Bars render on stderr so that stdout keeps only results (tables, summaries) a user may pipe.

What a person watching training sees: a live epoch bar (clips/s, ETA, loss, lr, last validation accuracy),
one line per validation, and the final summary table. Silent on ranks other than 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from kws.train.loop import TrainResult

stderr_console = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Items per second, e.g. `312.4 clips/s`."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        text = f"{speed:,.1f} {self.unit}/s" if speed else f"-- {self.unit}/s"
        return Text(text, style="progress.data.speed")


def item_progress(unit: str = "clips", transient: bool = False) -> Progress:
    """A bar for counted work: `description ━━━━ 120/300 40% 85.2 clips/s 0:00:03 eta 0:00:05`."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=stderr_console,
        transient=transient,
    )


def byte_progress() -> Progress:
    """A bar for downloads: bytes done / total, rate, ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=stderr_console,
    )


class TrainDisplay:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn("clips"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=stderr_console,
            disable=not enabled,
        )
        self.task: TaskID | None = None
        self.loss = self.lr = self.val = "--"

    def __enter__(self) -> TrainDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start_epoch(self, epoch: int, n_epochs: int, total_clips: int, done_clips: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(
            f"epoch {epoch + 1}/{n_epochs}", total=total_clips, completed=done_clips, stats=self._stats()
        )

    def advance(self, clips: int) -> None:
        if self.task is not None:
            self.progress.advance(self.task, clips)

    def update(
        self, loss: float | None = None, lr: float | None = None, val_accuracy: float | None = None
    ) -> None:
        if loss is not None:
            self.loss = f"{loss:.4f}"
        if lr is not None:
            self.lr = f"{lr:.3g}"
        if val_accuracy is not None:
            self.val = f"{100 * val_accuracy:.2f}%"
        if self.task is not None:
            self.progress.update(self.task, stats=self._stats())

    def _stats(self) -> str:
        return f"loss {self.loss}  lr {self.lr}  val acc {self.val}"

    def print(self, message: str) -> None:
        if self.enabled:
            self.progress.console.print(message, highlight=False)


def summary_table(result: TrainResult) -> Table:
    table = Table(title=f"kws train: {result.run_dir}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    if result.best_val_accuracy is not None:
        table.add_row(
            "best validation accuracy",
            f"{100 * result.best_val_accuracy:.2f}% (epoch {result.best_epoch}, step {result.best_step})",
        )
    for name, m in result.last_val.items():
        table.add_row(f"last {name}", f"accuracy {100 * m['accuracy']:.2f}%, loss {m['loss']:.4f}")
    table.add_row("epochs / steps", f"{result.epochs_done} / {result.steps}")
    table.add_row("total time", _duration(result.total_s))
    processes = f" ({result.world_size} processes)" if result.world_size > 1 else ""
    table.add_row("training speed", f"{result.clips_per_s:,.0f} clips/s{processes}")
    for name, path in result.checkpoints.items():
        table.add_row(f"{name} checkpoint", str(path))
    return table


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(round(seconds)), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}:{m:02d}:{s:02d}" if hours else f"{m}:{s:02d}" if minutes else f"{seconds:.1f} s"
