"""Checkpoints with random weights, written as `kws train` writes them, for tests that need a model but not
a trained one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from kws.checkpoint import rng_state, save_checkpoint
from kws.config import Config, config_to_dict
from kws.model import build_model


def random_checkpoint(
    path: Path, cfg: Config, labels: Sequence[str], *, step: int, seed: int = 0, batchnorm_stats: bool = False
) -> Path:
    """`cfg`'s model with random weights (`seed`) at `step`, epoch 1. `batchnorm_stats`: non-default
    BatchNorm statistics and affine parameters, so that whatever folds or copies them must carry them."""
    torch.manual_seed(seed)
    model = build_model(cfg.model, cfg.features.n_mfcc, len(labels))
    if batchnorm_stats:
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm1d):
                    m.running_mean.normal_(0.0, 0.3)
                    m.running_var.uniform_(0.5, 2.0)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0.0, 0.1)
    state = {"config": config_to_dict(cfg), "labels": list(labels), "model": model.state_dict(), "step": step}
    save_checkpoint(path, {**state, "epoch": 1, "rng": rng_state()})
    return path
