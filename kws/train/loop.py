"""The training loop: packed data -> augmentation -> features -> model -> Novograd, with validation,
checkpoints and exact resumption. Reads top to bottom; the helpers live in data, validation, state,
checkpoint, rundir, console and distributed.

One process, or one per GPU under `torchrun` (DDP): the batch size is per process, every process draws its
own disjoint share of each global batch, and only rank 0 writes files and prints.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kws.augment.recipe import SpecAugment, WaveAugment
from kws.checkpoint import save_checkpoint
from kws.config import Config, config_to_dict
from kws.console import TrainDisplay, stderr_console
from kws.data import ClipSet, StepGenerator, epoch_order, fits_on_device, load_packed, steps_per_epoch
from kws.device import autocast, pick_device, pick_precision, set_cpu_threads
from kws.errors import ConfigError, TrainingError
from kws.features import FeatureExtractor
from kws.manifest import read_manifest
from kws.model import build_model
from kws.optim import build_optimizer, build_scheduler
from kws.train import distributed
from kws.train.interrupt import InterruptFlag
from kws.train.resume import LoopState, checkpoint_state, restore
from kws.train.rundir import BEST, CURVES_FILE, LAST, MetricsLog, claim_run_dir, write_curves
from kws.train.validation import set_names, validate


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


def train(
    cfg: Config, run_dir: Path, *, resume: bool = False, on_step: Callable[[int], None] | None = None
) -> TrainResult:
    """Train `cfg` in `run_dir` (resuming from its last.pt with `resume`). `on_step(step)` is called after
    every optimizer step (progress hooks, tests). Raises TrainingError, DataError, ConfigError or
    CheckpointError; Ctrl-C writes last.pt and raises KeyboardInterrupt."""
    started = time.perf_counter()
    device = pick_device(cfg.trainer.device)
    distributed.init(device.type)
    try:
        result = _train(cfg, Path(run_dir), device, resume, on_step, started)
        # Rank 0 still writes checkpoints and curves after the others are done; tearing the gloo group
        # down under it can abort a process ("terminate called without an active exception").
        distributed.barrier()
        return result
    finally:
        distributed.destroy()


def _train(
    cfg: Config,
    run_dir: Path,
    device: torch.device,
    resume: bool,
    on_step: Callable[[int], None] | None,
    started: float,
) -> TrainResult:
    tc = cfg.trainer
    rank, world, main = distributed.rank(), distributed.world_size(), distributed.is_main()
    notes: list[str] = []
    precision, warning = pick_precision(tc.precision, device)
    if warning:
        notes.append(f"warning: {warning}")
    set_cpu_threads()

    # The resolved config (absolute manifest paths, the label list) is what config.yaml and checkpoints hold.
    cfg = resolve_config(cfg)
    labels = list(cfg.data.labels or ())
    changed = distributed.run_where(main, lambda: claim_run_dir(run_dir, config_to_dict(cfg), resume)) or []
    if changed:
        notes.append(f"resuming with a changed config: {', '.join(changed)}")
    for note in notes:
        _say(main, note)

    # Data: each manifest decoded once into a packed cache, then gathered batch by batch.
    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else run_dir / "cache"
    manifests = [Path(m) for m in (str(cfg.data.train_manifest), *cfg.data.val_manifests)]
    packed = distributed.in_turn(lambda: [load_packed(m, cache_dir, labels) for m in manifests])
    for p in packed:
        _say(
            main,
            f"{'decoded' if p.built else 'memory-mapped'} {p.manifest.name}: {len(p)} clips "
            f"({p.n_unique} unique) {'into' if p.built else 'from'} the packed cache {p.cache}",
        )
    on_device = cfg.data.on_device and fits_on_device(packed[0].audio.nbytes, device)
    train_set = ClipSet(packed[0], device, on_device)
    val_sets = [ClipSet(p, device, on_device and fits_on_device(p.audio.nbytes, device)) for p in packed[1:]]
    val_names = set_names(cfg.data.val_manifests)

    # Model, features, augmentation, optimizer, schedule. The same seed gives every process the same init.
    torch.manual_seed(tc.seed)
    model = build_model(cfg.model, cfg.features.n_mfcc, len(labels)).to(device)
    inputs = TrainInputs(cfg).to(device)
    optimizer = build_optimizer(model.parameters(), cfg.optim)
    n_steps_epoch = steps_per_epoch(train_set.n_clips, tc.batch_size, world)
    total_steps = (
        n_steps_epoch * tc.epochs if tc.max_steps is None else min(tc.max_steps, n_steps_epoch * tc.epochs)
    )
    n_epochs = math.ceil(total_steps / n_steps_epoch)
    scheduler = build_scheduler(optimizer, cfg.schedule, total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16")
    st = LoopState()
    if resume:
        st = restore(
            run_dir / LAST,
            labels,
            model,
            optimizer,
            scheduler,
            scaler,
            device,
            world=world,
            batch_size=tc.batch_size,
        )
        _say(main, f"resuming {run_dir / LAST} at step {st.step} (epoch {st.epoch + 1}, batch {st.batch})")
    compiled: nn.Module = torch.compile(model) if tc.compile else model  # type: ignore[assignment]
    step_model = distributed.wrap_model(compiled, device)
    generator = StepGenerator(tc.seed, rank, device)
    global_batch = tc.batch_size * world
    log = MetricsLog(run_dir, st.step if resume else None, enabled=main)

    def checkpoint(*names: str, agreed: bool = True) -> None:
        """Rank 0 writes `names`; with `agreed` every process then learns whether that failed (disk full)."""

        def save() -> None:
            state = checkpoint_state(cfg, labels, model, optimizer, scheduler, scaler, st, world, device)
            for name in names:
                save_checkpoint(run_dir / name, state)

        if agreed:
            distributed.run_where(main and bool(names), save)
        elif main:
            save()

    def run_validation() -> dict[str, dict[str, float]]:
        results = {
            n: validate(model, inputs.features, s, tc.batch_size, precision)
            for n, s in zip(val_names, val_sets, strict=True)
        }
        if results:
            log.write({"kind": "val", "step": st.step, "epoch": st.epoch, "val": results})
            accuracy = next(iter(results.values()))["accuracy"]
            improved = st.best_val_accuracy is None or accuracy > st.best_val_accuracy
            if improved:
                st.best_val_accuracy, st.best_epoch, st.best_step = accuracy, st.epoch, st.step
            display.update(val_accuracy=accuracy)
            checkpoint(*([BEST] if improved else []))
        return results

    interval_loss = torch.full((), st.interval_loss, device=device)  # summed on the device: no sync per step
    bad_step = torch.full((), -1, dtype=torch.long, device=device)  # first step with a non-finite loss
    first_step, logged_at, train_s = st.step, time.perf_counter(), 0.0
    last_val: dict[str, dict[str, float]] = {}

    def flush_log(lr: float) -> None:
        """One `step` record: the mean loss over all processes since the last record (the only host sync)."""
        nonlocal logged_at
        if st.step == st.interval_start:
            return
        loss_sum = float(distributed.all_reduce_sum(interval_loss.clone()).item()) / world
        check_finite(distributed.all_reduce_max(bad_step), run_dir)  # every rank stops if any saw NaN
        now, n = time.perf_counter(), st.step - st.interval_start
        log.write(
            {
                "kind": "step",
                "step": st.step,
                "epoch": st.epoch,
                "loss": loss_sum / n,
                "lr": lr,
                "clips_per_s": n * global_batch / max(now - logged_at, 1e-9),
            }
        )
        display.update(loss=loss_sum / n, lr=lr)
        st.epoch_loss, st.epoch_steps = st.epoch_loss + loss_sum, st.epoch_steps + n
        interval_loss.zero_()
        st.interval_start, st.interval_loss, logged_at = st.step, 0.0, now

    lr = float(scheduler.get_last_lr()[0])
    with TrainDisplay(main) as display, InterruptFlag() as interrupt:
        while st.step < total_steps:
            order = epoch_order(train_set.n_clips, tc.batch_size, world, tc.seed, st.epoch)[:, rank]
            order = order.to(train_set.audio.device)  # one copy an epoch, not one a step
            end_batch = min(n_steps_epoch, st.batch + total_steps - st.step)
            display.start_epoch(st.epoch, n_epochs, n_steps_epoch * global_batch, st.batch * global_batch)
            segment_start = time.perf_counter()
            for ids in order[st.batch : end_batch]:
                if interrupt.requested:  # Ctrl-C: stop at a step boundary, so that last.pt is consistent
                    # No collective here: under DDP the ranks may notice Ctrl-C a step apart, and mismatched
                    # collectives would hang. The saved interval loss is this rank's (only the first logged
                    # loss after a DDP resume is approximate).
                    check_finite(bad_step, run_dir)
                    st.interval_loss = float(interval_loss.item())
                    checkpoint(LAST, agreed=False)
                    _say(
                        main, f"interrupted at step {st.step}: wrote {run_dir / LAST}; continue with --resume"
                    )
                    raise KeyboardInterrupt
                lr = float(scheduler.get_last_lr()[0])
                batch, step_generator = train_set.batch(ids), generator.at(st.step)
                loss = train_step(
                    step_model, inputs, optimizer, scheduler, scaler, batch, step_generator, precision
                )
                interval_loss += loss
                bad_step.masked_fill_((bad_step < 0) & ~loss.isfinite(), st.step + 1)
                st.step += 1
                st.batch += 1
                display.advance(global_batch)
                if st.step % tc.log_every_n_steps == 0:
                    flush_log(lr)
                if on_step is not None:
                    on_step(st.step)
                if tc.val_every_n_steps and st.step % tc.val_every_n_steps == 0 and st.batch < n_steps_epoch:
                    flush_log(lr)
                    paused = time.perf_counter()
                    last_val = run_validation()
                    spent = time.perf_counter() - paused  # validation time is not training time
                    segment_start, logged_at = segment_start + spent, logged_at + spent
            flush_log(lr)
            train_s += time.perf_counter() - segment_start

            # End of an epoch (or of training, mid-epoch): validate, log, checkpoint, redraw the curves.
            train_loss = st.epoch_loss / max(st.epoch_steps, 1)
            if st.batch == n_steps_epoch:
                st.epoch, st.batch, st.epoch_loss, st.epoch_steps = st.epoch + 1, 0, 0.0, 0
            last_val = run_validation()
            log.write(
                {
                    "kind": "epoch",
                    "epoch": st.epoch,
                    "step": st.step,
                    "train_loss": train_loss,
                    "val": last_val,
                    "wall_s": time.perf_counter() - started,
                }
            )
            display.print(epoch_line(st, n_epochs, train_loss, last_val))
            checkpoint(LAST)
            if main:
                write_curves(run_dir / CURVES_FILE, log.records)
            logged_at = time.perf_counter()
    log.close()

    clips = (st.step - first_step) * global_batch
    checkpoints = {
        name: run_dir / f for name, f in (("last", LAST), ("best", BEST)) if (run_dir / f).is_file()
    }
    return TrainResult(
        run_dir=run_dir,
        epochs_done=st.epoch,
        steps=st.step,
        best_val_accuracy=st.best_val_accuracy,
        best_epoch=st.best_epoch,
        best_step=st.best_step,
        last_val=last_val,
        train_s=train_s,
        total_s=time.perf_counter() - started,
        clips_per_s=clips / train_s if train_s > 0 else 0.0,
        checkpoints=checkpoints,
        world_size=world,
        is_main=main,
        notes=notes,
    )


class TrainInputs(nn.Module):
    """Audio `(batch, samples)` -> training features `(batch, n_mfcc, n_frames)`: time shift and white noise,
    MFCC and crop/pad (float32, also under bf16/fp16), SpecCutout and SpecAugment, batched on the device."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        # `augment.noise_dir: auto` takes the noise recordings of the train manifest's dataset folder.
        dataset_dir = Path(cfg.data.train_manifest).parent if cfg.data.train_manifest else None
        self.wave_augment = WaveAugment(cfg.augment, cfg.features.sample_rate, dataset_dir)
        self.features = FeatureExtractor(cfg.features)
        self.spec_augment = SpecAugment(cfg.augment)

    @torch.no_grad()  # no parameters here: no graph needed
    def forward(self, audio: Tensor, lengths: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        audio = self.wave_augment(audio, lengths, generator)
        feats, feat_lengths = self.features(audio, lengths, generator)
        return self.spec_augment(feats, feat_lengths, generator), feat_lengths


def train_step(
    model: nn.Module,
    inputs: TrainInputs,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    batch: tuple[Tensor, Tensor, Tensor],
    generator: torch.Generator,
    precision: str,
) -> Tensor:
    """One optimizer step on (audio, lengths, label ids) -> the loss: 0-dim, on the device, not synced."""
    audio, lengths, targets = batch
    feats, feat_lengths = inputs(audio, lengths, generator)
    with autocast(audio.device, precision):
        logits = model(feats, feat_lengths)
    loss = F.cross_entropy(logits.float(), targets)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return loss.detach()


def check_finite(bad_step: Tensor, run_dir: Path) -> None:
    step = int(bad_step.item())
    if step >= 0:
        raise TrainingError(
            f"the training loss became NaN or infinite at step {step}; stopped without saving, so "
            f"{run_dir / LAST} (if any) is the last good checkpoint. Lower optim.lr, train in --precision "
            "32, or check the data for broken clips"
        )


def resolve_config(cfg: Config) -> Config:
    """Absolute manifest paths and an explicit label list (the sorted labels of the train manifest)."""
    data = cfg.data
    if not data.train_manifest:
        raise ConfigError(
            "no training manifest: pass --train-manifest or set data.train_manifest in the config"
        )
    train_manifest = Path(data.train_manifest).expanduser().resolve()
    labels = data.labels or tuple(sorted({e.label for e in read_manifest(train_manifest)}))
    vals = tuple(str(Path(m).expanduser().resolve()) for m in data.val_manifests)
    for m in vals:
        if not Path(m).is_file():
            raise ConfigError(f"validation manifest {m} does not exist; check --val-manifest")
    data = dataclasses.replace(data, train_manifest=str(train_manifest), val_manifests=vals, labels=labels)
    return dataclasses.replace(cfg, data=data)


def apply_options(
    cfg: Config,
    *,
    train_manifest: Path | None = None,
    val_manifests: list[Path] | None = None,
    **trainer: Any,
) -> Config:
    """Command-line options over the config: manifests into `data`, the rest into `trainer` (None: keep)."""
    data = cfg.data
    if train_manifest is not None:
        data = dataclasses.replace(data, train_manifest=str(train_manifest))
    if val_manifests:
        data = dataclasses.replace(data, val_manifests=tuple(str(m) for m in val_manifests))
    changes = {k: v for k, v in trainer.items() if v is not None}
    return dataclasses.replace(cfg, data=data, trainer=dataclasses.replace(cfg.trainer, **changes))


def epoch_line(st: LoopState, n_epochs: int, train_loss: float, val: dict[str, dict[str, float]]) -> str:
    parts = [
        f"epoch {st.epoch}/{n_epochs}" if st.batch == 0 else f"step {st.step}",
        f"train loss {train_loss:.4f}",
    ]
    parts += [f"{name} loss {m['loss']:.4f} acc {100 * m['accuracy']:.2f}%" for name, m in val.items()]
    if st.best_val_accuracy is not None and st.best_step == st.step:
        parts.append("(best)")
    return "  ".join(parts)


def _say(main: bool, message: str) -> None:
    if main:
        stderr_console.print(message, highlight=False)
