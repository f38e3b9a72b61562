"""An exponential moving average of the weights (`trainer.ema_decay`), kept beside the model being trained.

After every step each parameter of the average moves a fraction 1 - decay towards the model's (one fused
`lerp` over all of them, on the training device: no host synchronisation), and the BatchNorm statistics are
copied. Validation, best.pt's choice and the checkpoints' `model` are the average's, so `kws evaluate`,
`kws export` and fine-tuning use it unchanged; the weights being trained are kept as `train_model` for an
exact `--resume`. With decay 0 (the default, the recipe) there is no average.
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
        """Move the average towards `model`'s weights after an optimizer step."""
        averaged: list[torch.Tensor] = [p for p in self.model.parameters() if p.is_floating_point()]
        current = [p.detach() for p in model.parameters() if p.is_floating_point()]
        torch._foreach_lerp_(averaged, current, 1.0 - self.decay)
        for mine, theirs in zip(self.model.buffers(), model.buffers(), strict=True):
            mine.copy_(theirs)
