"""Rich progress bars with rate and ETA, shared by every long-running step.

Bars render on stderr so that stdout keeps only results (tables, summaries) a user may pipe."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

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
