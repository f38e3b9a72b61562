"""What a training run carries across an interruption: the loop's position (`LoopState`), the checkpoint
contents built from it, and their restoration for `--resume`."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kws.checkpoint import load_checkpoint, rng_state, set_rng_state
from kws.config import Config, config_to_dict
from kws.errors import CheckpointError


@dataclass
class LoopState:
    """Where the loop is; saved in every checkpoint so that a resumed run continues exactly."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # epochs done (= the 0-based epoch in progress)
    batch: int = 0  # batches done in the epoch in progress
    epoch_loss: float = 0.0  # sum of the logged losses of the epoch in progress
    epoch_steps: int = 0
    interval_start: int = 0  # step of the last log line
    # loss sum since then, averaged over the processes (saved when interrupted mid-interval); every process
    # restarts from it, so the next log line's sum over processes / world stays the mean loss
    interval_loss: float = 0.0
    best_val_accuracy: float | None = None
    best_epoch: int | None = None
    best_step: int | None = None


def checkpoint_state(
    cfg: Config,
    labels: list[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    st: LoopState,
    world: int,
    device: torch.device | None = None,
) -> dict[str, Any]:
    return {
        "config": config_to_dict(cfg),
        "labels": labels,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": st.epoch,
        "step": st.step,
        "rng": rng_state(device),
        "data_position": {
            "epoch": st.epoch,
            "batch": st.batch,
            "seed": cfg.trainer.seed,
            "world_size": world,
            "batch_size": cfg.trainer.batch_size,
        },
        "best_val_accuracy": st.best_val_accuracy,
        "loop": dataclasses.asdict(st),
    }


def restore(
    path: Path,
    labels: list[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    *,
    world: int = 1,
    batch_size: int | None = None,
) -> LoopState:
    """Load `path` (a last.pt) into the training objects; returns the loop state to continue from. The run
    must have `world` processes of `batch_size` clips, as when it was written: the data order depends on
    both."""
    fresh_groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    if not path.is_file():
        raise CheckpointError(f"nothing to resume: {path} does not exist; drop --resume to start a new run")
    state = load_checkpoint(path, map_location=device)
    if list(state["labels"]) != labels:
        raise CheckpointError(
            f"{path} was trained on the labels {state['labels']}, not {labels}; use a new --run-dir"
        )
    position = state.get("data_position") or {}
    saved_world, saved_batch = position.get("world_size", world), position.get("batch_size", batch_size)
    if saved_world != world or (batch_size is not None and saved_batch != batch_size):
        raise CheckpointError(
            f"{path.name} was written by {saved_world} processes with batch {saved_batch}, not {world} with "
            f"batch {batch_size}; resume with the same --nproc_per_node and --batch-size, or start a new "
            "run dir"
        )
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(
            f"{path} does not fit this config ({exc}); resume with the run's config"
        ) from None
    st = LoopState(**state["loop"])
    # Hyperparameters and the schedule come from the config, not the file: the schedule is a pure function
    # of the step, and a resumed run may change them on purpose (--resume --set optim.lr=...).
    for group, initial in zip(optimizer.param_groups, fresh_groups, strict=True):
        group.update(initial)
    scheduler.last_epoch = st.step - 1
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended here
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()  # sets the learning rate of step `st.step`
    set_rng_state(state["rng"], device)
    return st
