"""What a person watching training sees: a live epoch bar (clips/s, ETA, loss, lr, last validation accuracy),
one line per validation, and the final summary table. Silent on ranks other than 0."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from kws.console import RateColumn, stderr_console


@dataclass
class TrainResult:
    """What a finished (or stopped) run reports."""

    run_dir: Path
    epochs_done: int
    steps: int
    best_val_accuracy: float | None
    best_epoch: int | None
    best_step: int | None
    last_val: dict[str, dict[str, float]]  # validation manifest name -> {"loss", "accuracy"}
    train_s: float  # seconds spent in training steps (no validation, no checkpoints)
    total_s: float
    clips_per_s: float  # training clips per second over all processes
    checkpoints: dict[str, Path] = field(default_factory=dict)  # "last" | "best" -> path
    world_size: int = 1
    is_main: bool = True
    notes: list[str] = field(default_factory=list)


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
