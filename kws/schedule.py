"""Learning-rate schedules as pure functions of the optimizer step (RECIPE.md, Optimization).

With S total steps and W = int(warmup_ratio * S) warmup steps, step s (0-based) gets
    warmup (s < W):   base * (s + 1) / (W + 1)
    cosine:           min + (base - min) * 0.5 * (1 + cos(pi * (s - W) / (S - W)))
    hold_poly:        base until H = int(hold_ratio * S) + W,
                      then (base - min) * (1 - (s - H) / (S - H)) ** power + min
    after S:          min
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from kws.config import ScheduleConfig


def lr_at(step: int, total_steps: int, cfg: ScheduleConfig, base_lr: float) -> float:
    """The learning rate of optimizer step `step` of `total_steps`."""
    if cfg.name not in ("cosine", "hold_poly"):
        raise ValueError(f"unknown schedule {cfg.name!r}; expected 'cosine' or 'hold_poly'")
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if step >= total_steps:
        return cfg.min_lr
    warmup = int(cfg.warmup_ratio * total_steps)
    if step < warmup:
        return base_lr * (step + 1) / (warmup + 1)
    if cfg.name == "cosine":
        progress = (step - warmup) / (total_steps - warmup)
        return cfg.min_lr + (base_lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
    hold_end = int(cfg.hold_ratio * total_steps) + warmup
    if step < hold_end:
        return base_lr
    progress = (step - hold_end) / (total_steps - hold_end)
    return (base_lr - cfg.min_lr) * (1 - progress) ** cfg.power + cfg.min_lr


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR whose step s sets lr = lr_at(s, ...); call `scheduler.step()` after each optimizer step.

    LambdaLR multiplies each group's initial lr by the lambda, so the lambda divides by that base again.
    """
    lr_at(0, total_steps, cfg, 1.0)  # fail now, not at the first step, on a bad name or step count
    bases = [group.get("initial_lr", group["lr"]) for group in optimizer.param_groups]

    def factor(base: float) -> Callable[[int], float]:
        return lambda step: lr_at(step, total_steps, cfg, base) / base if base > 0 else 0.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor(b) for b in bases])
