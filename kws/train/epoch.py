"""One epoch of training and what its helpers share (`Run`): steps, log records, validation, checkpoints, and
the stop at a step boundary when Ctrl-C or SIGTERM asks for it. `kws.train.loop` sets a `Run` up and calls
`train_epoch` and `end_epoch` until the last step."""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import Tensor, nn

from kws.checkpoint import save_checkpoint
from kws.config import Config
from kws.console import TrainDisplay, stderr_console
from kws.data import ClipSet, StepGenerator, clips_in_step, epoch_order
from kws.errors import TrainingError
from kws.interrupt import Interrupted, InterruptFlag
from kws.train import distributed
from kws.train.averaging import WeightAverage
from kws.train.resume import LoopState, checkpoint_state
from kws.train.rundir import BEST, CURVES_FILE, LAST, MetricsLog, write_curves
from kws.train.step import TrainInputs, train_step
from kws.train.validation import validate

CHECKPOINT_EVERY_STEPS = 50  # at most one epoch-end last.pt (and curves.png) per this many steps


@dataclass
class Run:
    """What the loop's helpers work on: the training objects, the loop position, the log and the display."""

    cfg: Config
    run_dir: Path
    labels: list[str]
    device: torch.device
    precision: str
    model: nn.Module  # the plain module: checkpoints and validation
    step_model: nn.Module  # compiled and/or DDP-wrapped: training steps
    inputs: TrainInputs
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    generator: StepGenerator
    val_sets: dict[str, ClipSet]  # short name -> validation set
    n_steps_epoch: int
    total_steps: int
    st: LoopState
    log: MetricsLog
    display: TrainDisplay
    # Since the last log record: the loss summed on the device (no host sync per step), the first step
    # with a non-finite loss (-1: none), and when the record was written.
    interval_loss: Tensor = field(init=False)
    bad_step: Tensor = field(init=False)
    logged_at: float = field(init=False, default_factory=time.perf_counter)
    # where the weights started (kws.train.warm_start's record, None: random), kept in checkpoints
    init: dict[str, Any] | None = None
    interval_clips: int = 0  # over all ranks, since the last log record (the last batch may be short)
    saved_step: int = (
        -CHECKPOINT_EVERY_STEPS
    )  # the step of the last epoch-end last.pt (the first always writes)
    clips_done: int = 0  # over all ranks, by this process since it started
    average: WeightAverage | None = None  # trainer.ema_decay > 0: validated and saved instead of `model`

    def __post_init__(self) -> None:
        self.interval_loss = torch.full((), self.st.interval_loss, device=self.device)
        self.bad_step = torch.full((), -1, dtype=torch.long, device=self.device)

    @property
    def world(self) -> int:
        return distributed.world_size()

    @property
    def main(self) -> bool:
        return distributed.is_main()

    @property
    def global_batch(self) -> int:
        return self.cfg.trainer.batch_size * self.world

    @property
    def n_epochs(self) -> int:
        return math.ceil(self.total_steps / self.n_steps_epoch)

    @property
    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])


def train_epoch(
    run: Run, train_set: ClipSet, interrupt: InterruptFlag, on_step: Callable[[int], None] | None
) -> float:
    """Train from the loop's position to the end of its epoch (or of training); returns the seconds spent
    in training steps (mid-epoch validation excluded)."""
    st, tc = run.st, run.cfg.trainer
    order = epoch_order(train_set.n_clips, tc.batch_size, run.world, tc.seed, st.epoch)[:, distributed.rank()]
    # The ids stay on the host: ClipSet.batch needs each batch's widest clip on the host anyway.
    end_batch = min(run.n_steps_epoch, st.batch + run.total_steps - st.step)
    n_clips = train_set.n_clips
    sizes = [clips_in_step(n_clips, tc.batch_size, run.world, b) for b in range(run.n_steps_epoch)]
    run.display.start_epoch(st.epoch, run.n_epochs, sum(sizes), sum(sizes[: st.batch]))
    started, validating_s, lr = time.perf_counter(), 0.0, run.lr
    for ids in order[st.batch : end_batch]:
        if interrupt.requested:  # Ctrl-C or SIGTERM: stop at a step boundary, so that last.pt is consistent
            stop(run, interrupt.signum)
        lr = run.lr
        batch, generator = train_set.batch(ids), run.generator.at(st.step)
        loss = train_step(
            run.step_model,
            run.inputs,
            run.optimizer,
            run.scheduler,
            run.scaler,
            batch,
            generator,
            run.precision,
            label_smoothing=tc.label_smoothing,
            mixup_alpha=run.cfg.augment.mixup_alpha,
        )
        if run.average is not None:
            run.average.update(run.model)
        run.interval_loss += loss
        run.bad_step.masked_fill_((run.bad_step < 0) & ~loss.isfinite(), st.step + 1)
        step_clips = sizes[st.batch]
        run.interval_clips, run.clips_done = run.interval_clips + step_clips, run.clips_done + step_clips
        st.step += 1
        st.batch += 1
        run.display.advance(step_clips)
        if st.step % tc.log_every_n_steps == 0:
            log_interval(run, lr)
        if on_step is not None:
            on_step(st.step)
        if tc.val_every_n_steps and st.step % tc.val_every_n_steps == 0 and st.batch < run.n_steps_epoch:
            log_interval(run, lr)
            paused = time.perf_counter()
            validate_and_save(run)
            spent = time.perf_counter() - paused  # validation time is not training time
            validating_s, run.logged_at = validating_s + spent, run.logged_at + spent
    log_interval(run, lr)
    return time.perf_counter() - started - validating_s


def end_epoch(run: Run, started: float) -> dict[str, dict[str, float]]:
    """End of an epoch (or of training, mid-epoch): validate, log, checkpoint, redraw the curves. Returns
    the validation results."""
    st = run.st
    train_loss = st.epoch_loss / max(st.epoch_steps, 1)
    if st.batch == run.n_steps_epoch:
        st.epoch, st.batch, st.epoch_loss, st.epoch_steps = st.epoch + 1, 0, 0.0, 0
    val = validate_and_save(run)
    run.log.write(
        {
            "kind": "epoch",
            "epoch": st.epoch,
            "step": st.step,
            "train_loss": train_loss,
            "val": val,
            "wall_s": time.perf_counter() - started,
        }
    )
    run.display.print(epoch_line(st, run.n_epochs, train_loss, val))
    # Epochs of a few steps (fine-tuning on a few clips) would spend most of their time writing last.pt and
    # drawing curves: those wait for CHECKPOINT_EVERY_STEPS steps (a step count, so that every DDP process
    # decides alike) or the end. Ctrl-C and SIGTERM still write last.pt at the step they stop at (`stop`).
    if st.step - run.saved_step >= CHECKPOINT_EVERY_STEPS or st.step >= run.total_steps:
        save(run, LAST)
        run.saved_step = st.step
        if run.main:
            write_curves(run.run_dir / CURVES_FILE, run.log.records)
    run.logged_at = time.perf_counter()
    return val


def log_interval(run: Run, lr: float) -> None:
    """One `step` record: the mean loss over all processes since the last record (the only host sync)."""
    st = run.st
    if st.step == st.interval_start:
        return
    loss_sum = float(distributed.all_reduce_sum(run.interval_loss.clone()).item()) / run.world
    check_finite(distributed.all_reduce_max(run.bad_step), run.run_dir)  # every rank stops if any saw NaN
    now, n = time.perf_counter(), st.step - st.interval_start
    run.log.write(
        {
            "kind": "step",
            "step": st.step,
            "epoch": st.epoch,
            "loss": loss_sum / n,
            "lr": lr,
            "clips_per_s": run.interval_clips / max(now - run.logged_at, 1e-9),
        }
    )
    run.display.update(loss=loss_sum / n, lr=lr)
    st.epoch_loss, st.epoch_steps = st.epoch_loss + loss_sum, st.epoch_steps + n
    run.interval_loss.zero_()
    run.interval_clips = 0
    st.interval_start, st.interval_loss, run.logged_at = st.step, 0.0, now


def validate_and_save(run: Run) -> dict[str, dict[str, float]]:
    """Validate on every validation set, log it, and write best.pt when the first set's accuracy improved."""
    tc, st = run.cfg.trainer, run.st
    features = run.inputs.features
    model = run.model if run.average is None else run.average.model
    results = {n: validate(model, features, s, tc.batch_size, run.precision) for n, s in run.val_sets.items()}
    if results:
        run.log.write({"kind": "val", "step": st.step, "epoch": st.epoch, "val": results})
        accuracy = next(iter(results.values()))["accuracy"]
        improved = st.best_val_accuracy is None or accuracy > st.best_val_accuracy
        if improved:
            st.best_val_accuracy, st.best_epoch, st.best_step = accuracy, st.epoch, st.step
        run.display.update(val_accuracy=accuracy)
        save(run, *([BEST] if improved else []))
    return results


def save(run: Run, *names: str, agreed: bool = True) -> None:
    """Rank 0 writes the checkpoints `names`; with `agreed` every process then learns whether that failed
    (disk full), so that none of them trains on alone."""
    if agreed:
        distributed.run_where(run.main and bool(names), partial(write_checkpoints, run, names))
    elif run.main:
        write_checkpoints(run, names)


def write_checkpoints(run: Run, names: tuple[str, ...]) -> None:
    state = checkpoint_state(
        run.cfg,
        run.labels,
        run.model,
        run.optimizer,
        run.scheduler,
        run.scaler,
        run.st,
        run.world,
        run.device,
        init=run.init,
        average=None if run.average is None else run.average.model,
    )
    for name in names:
        save_checkpoint(run.run_dir / name, state)


def stop(run: Run, signum: int) -> NoReturn:
    """Write last.pt at this step boundary and raise `Interrupted(signum)`.

    No collective here: under DDP the ranks may notice the signal a step apart, and mismatched collectives
    would hang. The saved interval loss is this rank's (only the first logged loss after a DDP resume is
    approximate)."""
    check_finite(run.bad_step, run.run_dir)
    run.st.interval_loss = float(run.interval_loss.item())
    save(run, LAST, agreed=False)
    by = "" if signum == signal.SIGINT else f" by {signal.Signals(signum).name}"
    say(
        run.main, f"interrupted{by} at step {run.st.step}: wrote {run.run_dir / LAST}; continue with --resume"
    )
    raise Interrupted(signum)


def check_finite(bad_step: Tensor, run_dir: Path) -> None:
    step = int(bad_step.item())
    if step >= 0:
        raise TrainingError(
            f"the training loss became NaN or infinite at step {step}; stopped without saving, so "
            f"{run_dir / LAST} (if any) is the last good checkpoint. Lower optim.lr, train in --precision "
            "32, or check the data for broken clips"
        )


def epoch_line(st: LoopState, n_epochs: int, train_loss: float, val: dict[str, dict[str, float]]) -> str:
    parts = [
        f"epoch {st.epoch}/{n_epochs}" if st.batch == 0 else f"step {st.step}",
        f"train loss {train_loss:.4f}",
    ]
    parts += [f"{name} loss {m['loss']:.4f} acc {100 * m['accuracy']:.2f}%" for name, m in val.items()]
    if st.best_val_accuracy is not None and st.best_step == st.step:
        parts.append("(best)")
    return "  ".join(parts)


def say(main: bool, message: str) -> None:
    if main:
        stderr_console.print(message, highlight=False, soft_wrap=True)  # a log file keeps whole lines
