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
from kws.model import build_model


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
    init: dict[str, Any] | None = None,
    average: nn.Module | None = None,
) -> dict[str, Any]:
    """A checkpoint's contents. With a weight average (trainer.ema_decay), `model` holds the average (what
    inference and fine-tuning load) and `train_model` the weights being trained (what --resume continues)."""
    weights = {"model": model.state_dict()}
    if average is not None:
        weights = {"model": average.state_dict(), "train_model": model.state_dict()}
    return {
        "config": config_to_dict(cfg),
        "labels": labels,
        **weights,
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
        "init": init,  # None: random initialisation; else kws.train.warm_start's record
    }


def read_last(path: Path, cfg: Config, labels: list[str], world: int = 1) -> dict[str, Any]:
    """Read `path` (a last.pt) and check that this run can continue it, before any data is decoded: the same
    labels, `world` processes of `cfg.trainer.batch_size` clips as when it was written (the data order
    depends on both), and weights that fit `cfg.model`. The state stays on the CPU; `restore` puts it into
    the training objects."""
    batch_size = cfg.trainer.batch_size
    if not path.is_file():
        raise CheckpointError(f"nothing to resume: {path} does not exist; drop --resume to start a new run")
    state = load_checkpoint(path, map_location="cpu")
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
    for key in ("optimizer", "scheduler", "scaler", "rng", "loop"):
        if key not in state:
            raise CheckpointError(
                f"{path} has no {key!r}: it is not a training checkpoint of kws train; start a new run dir"
            )
    with torch.device("meta"), warnings.catch_warnings():  # shapes only: no memory, no initialisation
        warnings.simplefilter("ignore", UserWarning)  # "copying ... to a meta parameter is a no-op"
        for key in ("model", "train_model")[: 1 + ("train_model" in state)]:
            _load_model(build_model(cfg.model, cfg.features.n_mfcc, len(labels)), state, path, key)
    return state


def _load_model(model: nn.Module, state: dict[str, Any], path: Path, key: str = "model") -> None:
    try:
        model.load_state_dict(state[key])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(
            f"{path} does not fit this config ({_first_line(exc)}); resume with the run's config"
        ) from None


def _first_line(exc: Exception) -> str:
    """load_state_dict lists every mismatch on its own line; the error stays one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines[:2]) if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:200] + " ..."  # a list of 50 missing keys is not a message


def restore(
    state: dict[str, Any],
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    device: torch.device,
) -> LoopState:
    """Load `state` (what `read_last` read from `path`) into the training objects; returns the loop state to
    continue from."""
    fresh_groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    _load_model(model, state, path, "train_model" if "train_model" in state else "model")
    try:
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(
            f"the optimizer state in {path} does not fit this config ({_first_line(exc)}); resume with the "
            "run's config"
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


def restore_average(state: dict[str, Any], path: Path, average: nn.Module) -> None:
    """The weight average of `state` into `average`, when the run had one (else it starts from the weights
    just restored)."""
    if "train_model" in state:
        _load_model(average, state, path)
