"""An exponential moving average of the weights (`trainer.ema_decay`), kept beside the model being trained.

After every step each parameter of the average moves a fraction 1 - decay towards the model's (one fused
`lerp` over all of them, on the training device: no host synchronisation), and the BatchNorm statistics are
copied. Validation, best.pt's choice and the checkpoints' `model` are the average's, so `kws evaluate`,
`kws export` and fine-tuning use it unchanged; the weights being trained are kept as `train_model` for an
exact `--resume`. With decay 0 (the default, the recipe) there is no average. The average starts from the
initial weights, which keep a share decay ** step of it: choose a decay whose horizon, 1 / (1 - decay)
steps, is well below the run's length.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()  # starts from the weights as they are
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards `model`'s weights after an optimizer step; copy everything else."""
        pairs = list(zip(self.model.parameters(), model.parameters(), strict=True))
        floats: list[tuple[torch.Tensor, torch.Tensor]] = [
            (a, p.detach()) for a, p in pairs if p.is_floating_point()
        ]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [p for _, p in floats], 1.0 - self.decay)
        copied: list[tuple[torch.Tensor, torch.Tensor]] = [
            (a, p.detach()) for a, p in pairs if not p.is_floating_point()
        ]
        copied += zip(self.model.buffers(), model.buffers(), strict=True)
        if copied:
            torch._foreach_copy_([a for a, _ in copied], [b for _, b in copied])
