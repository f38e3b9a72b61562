"""A new run that starts from a trained model (`kws train --init CHECKPOINT`, the recipe's fine-tuning):
the checkpoint's model and feature settings, its encoder weights, and the classifier rows of the labels it
shares with the new run; labels it does not know start as in a fresh model. A NeMo `.nemo` file works like
a kws checkpoint (`kws.nemo`).

`--init` is not `--resume`: it starts a new run (step 0, a new optimizer and schedule, the new run's labels)
from weights only; `--resume` continues a run where its last.pt stopped.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from kws.checkpoint import load_checkpoint
from kws.config import Config, config_from_dict
from kws.errors import CheckpointError, ConfigError
from kws.exported import is_exported, is_torchscript
from kws.files import file_sha256
from kws.model import Classifier, mismatch_line
from kws.train.rundir import BEST, LAST, read_run_config


@dataclass(frozen=True)
class InitSource:
    """The checkpoint a run starts from."""

    path: Path
    config: Config
    labels: list[str]
    weights: dict[str, Tensor]
    step: int
    origin: str  # "kws", or "nemo" for a NeMo model


def read_init(path: Path) -> InitSource:
    """Read the checkpoint `--init` names (kws or NeMo); CheckpointError when it is not one."""
    if is_exported(Path(path)) or (Path(path).is_file() and is_torchscript(Path(path))):
        raise CheckpointError(
            f"--init {path} is an exported model, which holds no trainable weights; pass the checkpoint it "
            "was exported from (.pt) or a NeMo .nemo file"
        )
    try:
        state = load_checkpoint(Path(path))
    except CheckpointError as exc:
        raise CheckpointError(
            f"--init (init.checkpoint): {exc}; or start from random weights without --init "
            "(--set init.checkpoint=null when a config sets it)"
        ) from None
    try:
        cfg = config_from_dict(state["config"], source=f"{path} (config)")
    except ConfigError as exc:
        raise CheckpointError(f"--init {path} holds a config this kws cannot read: {exc}") from None
    origin = (state.get("imported_from") or {}).get("format", "kws")
    return InitSource(
        Path(path), cfg, [str(x) for x in state["labels"]], state["model"], int(state["step"]), origin
    )


def check_new_run(run_dir: Path, overwrite: bool, init: Path) -> None:
    """`--init` starts a new run: a run dir holding a run is refused unless it is to be started over, and
    never started over when that would delete the checkpoint the run starts from."""
    if overwrite and Path(init).resolve() in {(Path(run_dir) / name).resolve() for name in (LAST, BEST)}:
        raise ConfigError(
            f"--overwrite would delete {init}, the checkpoint --init starts from; copy it out of {run_dir} "
            "first, or pick a new --run-dir"
        )
    if not overwrite and (Path(run_dir) / LAST).is_file():
        raise ConfigError(
            f"{run_dir} already holds a run, and --init starts a new one; pick a new --run-dir or pass "
            "--overwrite (to continue that run instead, use --resume without --init)"
        )


def _with_architecture(cfg: Config, other: Config, *sections: str) -> tuple[Config, list[str]]:
    """`cfg` with `other`'s model and features (its weights mean something only with them) and the other
    `sections`, keeping `cfg`'s training-time VTLP; and the sections that changed."""
    features = dataclasses.replace(
        other.features, vtlp_range=cfg.features.vtlp_range, vtlp_prob=cfg.features.vtlp_prob
    )
    taken = {"model": other.model, "features": features, **{k: getattr(other, k) for k in sections}}
    differ = [k for k, v in taken.items() if dataclasses.asdict(v) != dataclasses.asdict(getattr(cfg, k))]
    return dataclasses.replace(cfg, **taken), differ


def adopt_architecture(cfg: Config, source: InitSource) -> tuple[Config, str | None]:
    """`cfg` with the model and the feature settings of `source`, keeping the run's training-time VTLP;
    and a note naming what the run's config said otherwise."""
    adopted, differ = _with_architecture(cfg, source.config)
    note = (
        f"note: the {' and '.join(differ)} settings come from --init {source.path.name}, not the config"
        if differ
        else None
    )
    return adopted, note


@torch.no_grad()
def load_init_weights(
    model: Classifier, source: InitSource, labels: list[str], freeze: str | None
) -> dict[str, Any]:
    """Put `source`'s encoder into `model` and its classifier rows into the rows of the labels both lists
    hold (by name); the other rows keep `model`'s fresh initialisation. Returns the record checkpoints keep
    (where the weights came from, which labels were kept and which are new)."""
    encoder = {k.removeprefix("encoder."): v for k, v in source.weights.items() if k.startswith("encoder.")}
    try:
        model.encoder.load_state_dict(encoder)
    except RuntimeError as exc:
        first = mismatch_line(exc)
        raise CheckpointError(
            f"the encoder of --init {source.path} does not fit its own config ({first})"
        ) from None
    head_w, head_b = source.weights["head.weight"], source.weights["head.bias"]
    kept = [label for label in labels if label in source.labels]
    for i, label in enumerate(labels):
        if label in source.labels:
            j = source.labels.index(label)
            model.head.weight[i] = head_w[j].to(model.head.weight.dtype)
            model.head.bias[i] = head_b[j].to(model.head.bias.dtype)
    return {
        "checkpoint": str(source.path),
        "sha256": file_sha256(source.path),
        "format": source.origin,
        "step": source.step,
        "labels_kept": kept,
        "labels_new": [label for label in labels if label not in source.labels],
        "freeze": freeze,
    }


def describe(record: dict[str, Any]) -> str:
    """One line for the log: where the weights came from and what was kept."""
    new = record["labels_new"]
    shown = f" (new: {', '.join(new[:5])}{', ...' if len(new) > 5 else ''})" if new else ""
    frozen = "; encoder frozen" if record.get("freeze") == "encoder" else ""
    kept, total = len(record["labels_kept"]), len(record["labels_kept"]) + len(new)
    return (
        f"initialised from {record['checkpoint']} (step {record['step']}): encoder and {kept} of {total} "
        f"classifier rows{shown}{frozen}"
    )


def keep_run_architecture(cfg: Config, run_dir: Path) -> tuple[Config, str | None]:
    """On resume: a run started with --init keeps the model, features and init settings its config.yaml
    recorded (the checkpoint's, which last.pt's weights need), whatever `cfg` (e.g. the --config it was
    started with) says; and a note when they differed. Other runs: `cfg` unchanged."""
    recorded = read_run_config(run_dir) or {}
    if not (recorded.get("init") or {}).get("checkpoint"):
        return cfg, None
    try:
        run = config_from_dict(recorded, source=f"{Path(run_dir) / 'config.yaml'}")
    except ConfigError:
        return cfg, None  # check_run_dir reports an unreadable config
    kept, differ = _with_architecture(cfg, run, "init")
    note = (
        f"note: {run_dir} was started with --init {Path(str(run.init.checkpoint)).name}: resuming with "
        "its model, features and init settings (config.yaml), not the config's"
        if differ
        else None
    )
    return kept, note
