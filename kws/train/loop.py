"""The training loop: packed data -> augmentation -> features -> model -> Novograd, with validation,
checkpoints and exact resumption. `_train` reads top to bottom: check everything that needs no data, load the
data, build the training objects, claim the run dir, run the epochs (`kws.train.epoch`). The details live in
data, step, epoch, validation, resume, rundir, console and distributed.

One process, or one per GPU under `torchrun` (DDP): the batch size is per process, every process draws its
own disjoint share of each global batch, and only rank 0 writes files and prints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kws.config import Config, config_to_dict
from kws.console import TrainDisplay
from kws.data import ClipSet, StepGenerator, fits_on_device, load_packed, steps_per_epoch
from kws.errors import ConfigError
from kws.interrupt import InterruptFlag
from kws.manifest import read_manifest, training_labels
from kws.model import build_model
from kws.optim import build_optimizer, build_scheduler
from kws.train import distributed
from kws.train.averaging import WeightAverage
from kws.train.device import pick_device, pick_precision, set_cpu_threads
from kws.train.epoch import Run, end_epoch, say, train_epoch
from kws.train.resume import LoopState, read_last, restore, restore_average
from kws.train.rundir import BEST, CACHE_DIR, LAST, MetricsLog, check_run_dir, start_run_dir
from kws.train.step import TrainInputs, train_step
from kws.train.validation import set_names
from kws.train.warm_start import (
    adopt_architecture,
    check_new_run,
    describe,
    keep_run_architecture,
    load_init_weights,
    read_init,
)

# `TrainInputs` and `train_step` are the loop's step, also imported from here (bench/)
__all__ = ["TrainInputs", "TrainResult", "resolve_config", "train", "train_step"]


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
    init: dict[str, Any] | None = None  # where the weights started (kws.train.warm_start), None: random


def train(
    cfg: Config,
    run_dir: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train `cfg` in `run_dir`: a new run, the run in it continued from its last.pt (`resume`), or started
    over (`overwrite`). `on_step(step)` is called after every optimizer step (progress hooks, tests). Raises
    TrainingError, DataError, ConfigError or CheckpointError, before any data is decoded when no data is
    needed to tell; Ctrl-C or SIGTERM writes last.pt and raises `Interrupted` (a KeyboardInterrupt)."""
    started = time.perf_counter()
    device = pick_device(cfg.trainer.device)
    distributed.init(device.type)
    try:
        result = _train(cfg, Path(run_dir), device, resume, overwrite, on_step, started)
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
    overwrite: bool,
    on_step: Callable[[int], None] | None,
    started: float,
) -> TrainResult:
    tc = cfg.trainer
    main, world = distributed.is_main(), distributed.world_size()
    precision, warning = pick_precision(tc.precision, device)
    notes = [f"warning: {warning}"] if warning else []
    set_cpu_threads()

    # Every check that needs no data comes before any data is decoded, and the run dir changes only once
    # all of them passed: a refused or failed start leaves the run in it as it was. The resolved config
    # (absolute manifest paths, the label list) is what config.yaml and checkpoints hold.
    cfg = resolve_config(cfg)
    # --init: a new run on the checkpoint's model and features (config.yaml records them); a resumed run
    # has its weights in last.pt already.
    source, note = None, None
    if resume:
        cfg, note = keep_run_architecture(cfg, run_dir)
    elif cfg.init.checkpoint:
        check_new_run(run_dir, overwrite, Path(cfg.init.checkpoint))
        source = distributed.in_turn(partial(read_init, Path(cfg.init.checkpoint)))
        cfg, note = adopt_architecture(cfg, source)
    notes += [note] if note else []
    labels, config = list(cfg.data.labels or ()), config_to_dict(cfg)
    check = partial(check_run_dir, run_dir, config, resume=resume, overwrite=overwrite)
    changed = distributed.run_where(main, check) or []
    if changed:
        notes.append(f"resuming with a changed config: {', '.join(changed)}")
    # Rank 0 reads last.pt first: when it cannot, every process stops with that one error.
    saved = distributed.in_turn(partial(read_last, run_dir / LAST, cfg, labels, world)) if resume else None
    for note in notes:
        say(main, note)

    train_set, val_sets = load_data(cfg, run_dir, labels, device, main)

    # Model, features, augmentation, optimizer, schedule. The same seed gives every process the same init.
    torch.manual_seed(tc.seed)
    model = build_model(cfg.model, cfg.features.n_mfcc, len(labels))
    init = saved.get("init") if saved is not None else None
    if source is not None:
        init = load_init_weights(model, source, labels, cfg.init.freeze)
        say(main, describe(init))
    if cfg.init.freeze == "encoder":
        model.freeze_encoder()
    model = model.to(device)
    inputs = TrainInputs(cfg).to(device)
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], cfg.optim)
    n_steps_epoch = steps_per_epoch(train_set.n_clips, tc.batch_size, world)
    total_steps = n_steps_epoch * tc.epochs
    if tc.max_steps is not None:
        total_steps = min(tc.max_steps, total_steps)
    scheduler = build_scheduler(optimizer, cfg.schedule, total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16")
    st = LoopState()
    if saved is not None:
        st = restore(saved, run_dir / LAST, model, optimizer, scheduler, scaler, device)
        say(main, f"resuming {run_dir / LAST} at step {st.step} (epoch {st.epoch + 1}, batch {st.batch})")
    average = WeightAverage(model, tc.ema_decay) if tc.ema_decay > 0 else None
    if average is not None and saved is not None:
        restore_average(saved, run_dir / LAST, average.model)
    compiled: nn.Module = torch.compile(model) if tc.compile else model  # type: ignore[assignment]

    distributed.run_where(main, partial(start_run_dir, run_dir, config, overwrite=overwrite))
    run = Run(
        cfg=cfg,
        run_dir=run_dir,
        labels=labels,
        device=device,
        precision=precision,
        model=model,
        step_model=distributed.wrap_model(compiled, device),
        inputs=inputs,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        generator=StepGenerator(tc.seed, distributed.rank(), device),
        val_sets=val_sets,
        n_steps_epoch=n_steps_epoch,
        total_steps=total_steps,
        st=st,
        log=MetricsLog(run_dir, st.step if resume else None, enabled=main),
        display=TrainDisplay(main),
        init=init,
        average=average,
    )

    train_s, last_val = 0.0, {}
    with contextlib.closing(run.log), run.display, InterruptFlag() as interrupt:
        while st.step < total_steps:
            train_s += train_epoch(run, train_set, interrupt, on_step)
            last_val = end_epoch(run, started)

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
        clips_per_s=run.clips_done / train_s if train_s > 0 else 0.0,
        checkpoints={n: run_dir / f for n, f in (("last", LAST), ("best", BEST)) if (run_dir / f).is_file()},
        world_size=world,
        is_main=main,
        notes=notes,
        init=init,
    )


def load_data(
    cfg: Config, run_dir: Path, labels: list[str], device: torch.device, main: bool
) -> tuple[ClipSet, dict[str, ClipSet]]:
    """The train set and the validation sets by short name: each manifest decoded once into a packed cache
    (rank 0 first, see `distributed.in_turn`), then gathered batch by batch."""
    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else run_dir / CACHE_DIR
    manifests = [Path(m) for m in (str(cfg.data.train_manifest), *cfg.data.val_manifests)]
    packed = distributed.in_turn(lambda: [load_packed(m, cache_dir, labels) for m in manifests])
    for p in packed:
        say(main, p.summary())
    on_device = cfg.data.on_device and fits_on_device(packed[0].audio.nbytes, device)
    train_set = ClipSet(packed[0], device, on_device)
    val_sets = {
        name: ClipSet(p, device, on_device and fits_on_device(p.audio.nbytes, device))
        for name, p in zip(set_names(cfg.data.val_manifests), packed[1:], strict=True)
    }
    return train_set, val_sets


def resolve_config(cfg: Config) -> Config:
    """Absolute manifest and --init paths and an explicit label list (the sorted labels of the train
    manifest)."""
    data = cfg.data
    if not data.train_manifest:
        raise ConfigError(
            "no training manifest: pass --train-manifest or set data.train_manifest in the config"
        )
    train_manifest = Path(data.train_manifest).expanduser().resolve()
    manifest_labels = training_labels(read_manifest(train_manifest), train_manifest)
    labels = data.labels or tuple(manifest_labels)
    vals = tuple(str(Path(m).expanduser().resolve()) for m in data.val_manifests)
    for m in vals:
        if not Path(m).is_file():
            raise ConfigError(f"validation manifest {m} does not exist; check --val-manifest")
    data = dataclasses.replace(data, train_manifest=str(train_manifest), val_manifests=vals, labels=labels)
    init = cfg.init
    if init.checkpoint:
        init = dataclasses.replace(init, checkpoint=str(Path(init.checkpoint).expanduser().resolve()))
    return dataclasses.replace(cfg, data=data, init=init)
