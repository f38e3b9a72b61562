"""Checkpoints that describe themselves: config, labels, weights, optimizer, scheduler, scaler, RNG states and
the position in the data order, so that evaluation rebuilds the model from the file alone and a resumed run
continues exactly where it stopped.

Files are written to a temporary name and renamed, and only hold plain containers and tensors, so they load
with `torch.load(weights_only=True)` (no arbitrary code runs when a checkpoint is opened).
"""

from __future__ import annotations

import random
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from kws import __version__
from kws.errors import CheckpointError, ConfigError
from kws.files import atomic_path
from kws.nemo.archive import is_nemo

if TYPE_CHECKING:
    from kws.config import Config

REQUIRED_KEYS = ("kws_version", "config", "labels", "model", "step", "epoch")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` (see `kws.train.loop`) to `path` atomically, adding the kws version and git commit."""
    state = {"kws_version": __version__, "git_commit": git_commit(), **state}
    with atomic_path(Path(path)) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a kws checkpoint, or a NeMo `.nemo` model as one (`kws.nemo`); a missing, damaged or foreign
    file is a CheckpointError saying which."""
    path = Path(path)
    if is_nemo(path):
        from kws.nemo.importer import nemo_checkpoint  # config, features, model: only for .nemo files

        return nemo_checkpoint(path)
    if path.is_dir():
        inside = _checkpoints_in(path, every=True)
        if not inside:
            raise CheckpointError(
                f"checkpoint {path} is a directory with no .pt file in it; pass a checkpoint `kws train` "
                "wrote, e.g. runs/<name>/best.pt"
            )
        raise CheckpointError(
            f"checkpoint {path} is a directory; pass a checkpoint in it: {', '.join(inside)}"
        )
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist; check the path (train writes last.pt, best.pt)"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files: pickle, zip, EOF, runtime errors
        others = [p for p in _checkpoints_in(path.parent) if Path(p).name != path.name]
        fix = (
            f"use another checkpoint, e.g. {' or '.join(others)}"
            if others
            else "copy it again or train again"
        )
        # PyTorch's own message is a page of advice about weights_only=False, which kws never needs and
        # which would run arbitrary code: say in a few words what is wrong with the file instead.
        raise CheckpointError(
            f"cannot read checkpoint {path}: it is damaged or not a kws checkpoint "
            f"({_what_is_wrong(path, exc)}); {fix}"
        ) from None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        found = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path} is not a kws checkpoint (expected keys {', '.join(REQUIRED_KEYS)}; found {found})"
        )
    return state


def _checkpoints_in(folder: Path, every: bool = False) -> list[str]:
    """best.pt and last.pt in `folder` when there (what `kws train` writes); with `every`, else up to three
    other .pt files. As paths to type."""
    written = [str(folder / name) for name in ("best.pt", "last.pt") if (folder / name).is_file()]
    if written or not every:
        return written
    try:
        return [str(p) for p in sorted(folder.glob("*.pt")) if p.is_file()][:3]
    except OSError:
        return []


def _what_is_wrong(path: Path, exc: Exception) -> str:
    text = str(exc)
    if path.stat().st_size == 0:
        return "the file is empty"
    if "central directory" in text or isinstance(exc, EOFError):
        return "the file is cut short, as by a full disk or an interrupted copy"
    if "This file can still be loaded" in text or "GLOBAL" in text:
        return "it holds Python objects other than tensors and plain containers"
    if "zip" in text.lower() or "Unsupported operand" in text or "invalid load key" in text:
        return "not a file written by torch.save"
    return type(exc).__name__


def git_commit() -> str | None:
    """The commit of the kws source tree, or None outside a git checkout (best effort)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Every global RNG, in a form `weights_only` loading accepts. Of the CUDA generators only the training
    `device`'s (None off CUDA): reading the others would create a CUDA context on every GPU."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device is not None and device.type == "cuda" else None,
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore what `rng_state(device)` saved; the CUDA generator only when `device` is a CUDA device."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device is None or device.type != "cuda":
        return
    cuda = state.get("cuda")
    if isinstance(cuda, list):  # older checkpoints: one state per GPU
        index = device.index or 0
        cuda = cuda[index] if index < len(cuda) else None
    if cuda is not None:
        torch.cuda.set_rng_state(cuda.cpu(), device)


@dataclass
class LoadedModel:
    """A trained model ready for inference, rebuilt from a checkpoint alone."""

    model: nn.Module  # eval mode, on device: (batch, n_mfcc, frames), lengths -> (batch, n_classes)
    features: nn.Module  # FeatureExtractor in eval mode, on device: (batch, samples), lengths -> features
    labels: list[str]
    config: Config
    checkpoint: Path
    step: int
    epoch: int


def load_for_inference(path: Path, device: torch.device) -> LoadedModel:
    """Rebuild model, features, labels and config from `path` (CheckpointError on a bad file)."""
    from kws.config import config_from_dict
    from kws.features import FeatureExtractor
    from kws.model import build_model

    state = load_checkpoint(path, map_location="cpu")
    try:
        cfg = config_from_dict(state["config"], source=f"{path} (config)")
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {path} holds a config this kws cannot read: {exc}") from None
    labels = [str(x) for x in state["labels"]]
    model = build_model(cfg.model, cfg.features.n_mfcc, len(labels))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"the weights in {path} do not fit its model config: {exc}") from None
    features = FeatureExtractor(cfg.features)
    return LoadedModel(
        model=model.to(device).eval(),
        features=features.to(device).eval(),
        labels=labels,
        config=cfg,
        checkpoint=Path(path),
        step=int(state["step"]),
        epoch=int(state["epoch"]),
    )
