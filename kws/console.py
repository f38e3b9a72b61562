"""Everything the user sees while and after kws works: progress bars, the live training display, tables.

Progress renders on stderr so that stdout keeps only results (tables, summaries) a user may pipe. On a
terminal it is a rich bar that drops columns until it fits the width (at 80 columns a bar with every
column would be cut to `131… 0:00… eta 0:0…`); when stderr is a file or pipe (a log, CI, nohup) it is
plain lines instead, at most every `REPORT_EVERY_S` or every tenth of the work:
`decoding train.json: 4,000/9,000 clips (44%), 1,200 clips/s, eta 0:04`.

What a person watching training sees: a live epoch bar (clips/s, ETA, loss, lr, last validation accuracy),
one line per validation, and the final summary table. Silent on ranks other than 0.

Library modules return data; `kws.cli` prints it with the tables here (`prepare_table`, `train_table`,
`evaluation_renderables`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, RenderableType
from rich.filesize import decimal
from rich.measure import Measurement
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
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from kws.detect.decode import Detection
    from kws.evaluate.scoring import EvalOutcome
    from kws.prepare.splits import PrepareResult
    from kws.train.loop import TrainResult

stderr_console = Console(stderr=True)

REPORT_EVERY_S = 10.0  # plain progress: a line at least this often...
REPORT_STEP = 0.1  # ...and at each further tenth of the work...
MIN_GAP_S = 1.0  # ...but not more often than this, so that fast work does not flood a log


def _clock(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}:{m:02d}:{s:02d}" if hours else f"{m}:{s:02d}"


def _rate(speed: float, unit: str) -> str:
    return f"{speed:,.0f} {unit}/s" if speed >= 100 else f"{speed:,.1f} {unit}/s"


class RateColumn(ProgressColumn):
    """Items per second, e.g. `312.4 clips/s`."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(_rate(speed, self.unit) if speed else f"-- {self.unit}/s", style="progress.data.speed")


class EtaColumn(ProgressColumn):
    """Time left as one short cell, `eta 0:05` (`eta --` while unknown)."""

    def render(self, task: Task) -> Text:
        left = 0.0 if task.finished else task.time_remaining
        return Text(f"eta {'--' if left is None else _clock(left)}", style="progress.remaining")


class FittingProgress(Progress):
    """A rich Progress with several layouts, richest first: each refresh uses the first one whose rows fit
    the console's width, so narrow terminals lose columns (elapsed time, counts, the bar) instead of
    getting every cell cut short."""

    def __init__(self, layouts: Sequence[Sequence[ProgressColumn]], **kwargs: Any) -> None:
        self.layouts = [tuple(columns) for columns in layouts]
        super().__init__(*layouts[0], **kwargs)

    def make_tasks_table(self, tasks: Any) -> Table:
        tasks = list(tasks)
        if not hasattr(self, "live") or not tasks:  # rich renders once while it builds the display
            return super().make_tasks_table(tasks)
        wide = self.console.options.update_width(10_000)  # measure the natural width, not the clamped one
        for columns in self.layouts:
            self.columns = columns
            table = super().make_tasks_table(tasks)
            if Measurement.get(self.console, wide, table).maximum <= self.console.width:
                break
        return table


class PlainProgress(Progress):
    """Progress as plain lines, for a stderr that is not a terminal (a log file, CI, a pipe): rich keeps the
    tasks' counts and speeds with its live display off, and each update may print one line."""

    def __init__(
        self, console: Console, unit: str, *, as_bytes: bool = False, final_line: bool = True
    ) -> None:
        super().__init__(console=console, disable=True)
        self.unit = unit
        self.as_bytes = as_bytes
        self.final_line = final_line  # off where the caller prints its own summary (training's epoch line)
        self._reported: dict[TaskID, tuple[float, int]] = {}  # time and tenth of the work of the last line
        self._start_completed: dict[TaskID, float] = {}  # a resumed download's first part: not this run's

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        self._start_completed[task_id] = self._tasks[task_id].completed  # a resumed download's first part
        return task_id

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None and self.final_line:  # work of unknown size (a download without a length)
            for task in self.tasks:  # is done when the block ends
                if task.total is None:
                    self._print(self._done_line(task))

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._report(task_id)

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._report(task_id)

    def _print(self, line: str) -> None:
        self.console.print(line, highlight=False, soft_wrap=True, markup=False)

    def _report(self, task_id: TaskID) -> None:
        task, now = self._tasks[task_id], self.get_time()
        last, last_step = self._reported.setdefault(
            task_id, (now if task.start_time is None else task.start_time, 0)
        )
        if task.finished:
            if self.final_line and last_step >= 0:
                self._print(self._done_line(task))
            self._reported[task_id] = (now, -1)  # -1: the final line is out
            return
        step = int(task.percentage / 100 / REPORT_STEP) if task.total else 0
        if now - last >= REPORT_EVERY_S or (step > last_step and now - last >= MIN_GAP_S):
            self._print(self._line(task))
            self._reported[task_id] = (now, step)

    def _amount(self, value: float) -> str:
        """`4,000 clips` or `1.2 GB`."""
        return decimal(int(value)) if self.as_bytes else f"{value:,.0f} {self.unit}"

    def _rate(self, speed: float) -> str:
        return f"{decimal(int(speed))}/s" if self.as_bytes else _rate(speed, self.unit)

    def _line(self, task: Task) -> str:
        """`decoding train.json: 4,000/9,000 clips (44%), 1,200 clips/s, eta 0:04[, loss ...]`"""
        parts = [self._amount(task.completed)]
        if task.total:
            share = f"({task.completed / task.total:.0%})"
            if self.as_bytes:  # `500.0 MB/1.4 GB`: each amount with its own unit
                parts = [f"{parts[0]}/{self._amount(task.total)} {share}"]
            else:
                parts = [f"{task.completed:,.0f}/{task.total:,.0f} {self.unit} {share}"]
        if task.speed:
            parts.append(self._rate(task.speed))
        if task.time_remaining is not None:
            parts.append(f"eta {_clock(task.time_remaining)}")
        if task.fields.get("stats"):
            parts.append(str(task.fields["stats"]))
        return f"{task.description}: {', '.join(parts)}"

    def _done_line(self, task: Task) -> str:
        """`decoding train.json: 9,000 clips in 0:07 (1,286 clips/s)`"""
        elapsed = task.finished_time or task.elapsed or 0.0
        done = task.completed - self._start_completed.get(task.id, 0.0)
        rate = f" ({self._rate(done / elapsed)})" if elapsed > 0 else ""
        return f"{task.description}: {self._amount(task.completed)} in {_clock(elapsed)}{rate}"


def _is_live(console: Console) -> bool:
    return console.is_terminal or console.is_jupyter


def item_progress(
    unit: str = "clips", transient: bool = False, console: Console | None = None
) -> FittingProgress | PlainProgress:
    """Progress of counted work: `description ━━━━ 120/300 40% 85.2 clips/s 0:00:03 eta 0:05` on a wide
    terminal, fewer columns on a narrow one, plain lines in a log."""
    console = console or stderr_console
    if not _is_live(console):
        return PlainProgress(console, unit)
    desc = TextColumn("[bold]{task.description}")
    done, rate, eta = TaskProgressColumn(), RateColumn(unit), EtaColumn()
    layouts = [
        [desc, BarColumn(), MofNCompleteColumn(), done, rate, TimeElapsedColumn(), eta],
        [desc, BarColumn(bar_width=20), MofNCompleteColumn(), done, rate, eta],
        [desc, BarColumn(bar_width=10), done, rate, eta],
        [desc, done, eta],
    ]
    return FittingProgress(layouts, console=console, transient=transient)


def byte_progress(console: Console | None = None) -> FittingProgress | PlainProgress:
    """Progress of a download or a pass over a file: bytes done / total, rate, ETA."""
    console = console or stderr_console
    if not _is_live(console):
        return PlainProgress(console, "B", as_bytes=True)
    desc = TextColumn("[bold]{task.description}")
    speed, eta = TransferSpeedColumn(), EtaColumn()
    layouts = [
        [desc, BarColumn(), DownloadColumn(), speed, eta],
        [desc, BarColumn(bar_width=20), DownloadColumn(), speed, eta],
        [desc, BarColumn(bar_width=10), TaskProgressColumn(), speed, eta],
        [desc, TaskProgressColumn(), eta],
    ]
    return FittingProgress(layouts, console=console)


class TrainDisplay:
    """The live epoch bar of training, with loss, learning rate and the last validation accuracy."""

    def __init__(self, enabled: bool, console: Console | None = None) -> None:
        self.enabled = enabled
        console = console or stderr_console
        self.progress: FittingProgress | PlainProgress
        if _is_live(console):
            desc, stats = TextColumn("[bold]{task.description}"), TextColumn("{task.fields[stats]}")
            rate, eta, done = RateColumn("clips"), EtaColumn(), TaskProgressColumn()
            layouts: list[list[ProgressColumn]] = [
                [desc, BarColumn(), MofNCompleteColumn(), rate, TimeElapsedColumn(), eta, stats],
                [desc, BarColumn(bar_width=20), rate, eta, stats],
                [desc, BarColumn(bar_width=10), done, eta, stats],
                [desc, done, stats],
            ]
            self.progress = FittingProgress(layouts, console=console, disable=not enabled)
        else:  # the epoch line that ends each epoch is the summary: no final progress line
            self.progress = PlainProgress(console, "clips", final_line=False)
        self.task: TaskID | None = None
        self.loss = self.lr = self.val = "--"

    def __enter__(self) -> TrainDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start_epoch(self, epoch: int, n_epochs: int, total_clips: int, done_clips: int) -> None:
        if not self.enabled:
            return
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
            self.progress.console.print(message, highlight=False, soft_wrap=True)  # whole lines in a log


# ---------------------------------------------------------------- tables: what the commands print


def prepare_table(result: PrepareResult) -> Table:
    """`kws prepare`: per split, clips, classes, smallest and largest class, total hours."""
    table = Table(title=f"Manifests in {result.dataset_dir}")
    for name in ("split", "clips", "classes", "smallest class", "largest class", "hours"):
        table.add_column(name, justify="right" if name in ("clips", "classes", "hours") else "left")
    for s in result.stats:
        table.add_row(
            s.split,
            f"{s.n_clips:,}",
            str(s.n_classes),
            f"{s.smallest[0]} ({s.smallest[1]:,})",
            f"{s.largest[0]} ({s.largest[1]:,})",
            f"{s.hours:.2f}",
        )
    return table


def train_table(result: TrainResult) -> Table:
    """`kws train`: best and last validation, steps, time, speed and the checkpoints written."""
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
    if result.init is not None:
        n_kept, n_new = len(result.init["labels_kept"]), len(result.init["labels_new"])
        kept = f"{n_kept} of {n_kept + n_new} labels kept"
        frozen = ", encoder frozen" if result.init.get("freeze") == "encoder" else ""
        table.add_row("initialised from", f"{result.init['checkpoint']} ({kept}{frozen})")
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


def evaluation_renderables(outcomes: Sequence[EvalOutcome]) -> list[RenderableType]:
    """`kws evaluate`: per manifest a headline, the most frequent confusions and the worst classes; for
    several manifests, then one row each side by side."""
    items: list[RenderableType] = []
    for o in outcomes:
        r = o.report
        lo, hi = r.accuracy_ci95
        items.append(
            f"\n[bold]{o.manifest.name}[/]: accuracy [bold]{r.accuracy:.2%}[/] (95% CI {lo:.2%} - {hi:.2%}), "
            f"top-{r.top_k} {r.top_k_accuracy:.2%}, {r.num_samples:,} clips, "
            f"{len(r.misclassified):,} errors, "
            f"{r.low_confidence_count:,} low-confidence errors (confidence <= {r.low_confidence_threshold:g})"
        )
        if o.confusions:
            table = Table(title=f"{len(o.confusions)} most frequent confusions", title_justify="left")
            for name in ("true", "predicted", "count", "% of true class"):
                table.add_column(name, justify="right" if name[0] in "c%" else "left")
            for true, predicted, count in o.confusions:
                support = r.per_class[true].support
                table.add_row(true, predicted, str(count), f"{count / support:.1%}" if support else "-")
            items.append(table)
        worst = Table(title=f"worst {len(o.worst_classes)} classes", title_justify="left")
        for name in ("class", "recall", "precision", "F1", "support"):
            worst.add_column(name, justify="left" if name == "class" else "right")
        for label, m in o.worst_classes:
            worst.add_row(label, f"{m.recall:.1%}", f"{m.precision:.1%}", f"{m.f1:.3f}", str(m.support))
        items.append(worst)
        items.append(f"report: {o.out_dir} ({o.seconds:.1f} s); listen: kws listen-errors {o.out_dir}")
    if len(outcomes) > 1:
        items.append(_side_by_side(outcomes))
    return items


def _side_by_side(outcomes: Sequence[EvalOutcome]) -> Table:
    side = Table(
        title="\nall manifests",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    top = f"top-{outcomes[0].report.top_k}"
    for name in ("manifest", "clips", "accuracy", "95% CI", top, "errors", "low-conf"):
        side.add_column(name, justify="left" if name == "manifest" else "right", no_wrap=True)
    for o in outcomes:
        r = o.report
        lo, hi = r.accuracy_ci95
        side.add_row(
            o.manifest.stem,
            f"{r.num_samples:,}",
            f"{r.accuracy:.2%}",
            f"{100 * lo:.1f}-{100 * hi:.1f}%",
            f"{r.top_k_accuracy:.2%}",
            f"{len(r.misclassified):,}",
            f"{r.low_confidence_count:,}",
        )
    return side


def detection_line(detection: Detection, live: bool = False) -> str:
    """One detection as a line: `12.34 s  go  0.97  recording.wav` (live: the time since the start)."""
    where = "" if live else f"  {detection.audio_filepath}"
    return f"{detection.time_s:9.2f} s  {detection.label:<12} {detection.score:.3f}{where}"
