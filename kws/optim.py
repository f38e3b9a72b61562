"""The optimizer and its learning-rate schedules, exactly as the recipe uses them (RECIPE.md, Optimization).

Novograd (Ginsburg et al., 2019).

Per parameter tensor, with the gradient g and its squared norm n = ||g||^2:
    v = n                          on the first step
    v = b2 * v + (1 - b2) * n      afterwards          (v is one scalar per tensor)
    g = g / (sqrt(v) + eps) + wd * p                   (weight decay after normalisation, on every tensor)
    m = b1 * m + g                                     (no bias correction)
    p = p - lr * m

Schedules, pure functions of the optimizer step.
With S total steps and W = int(warmup_ratio * S) warmup steps, step s (0-based) gets
    warmup (s < W):   base * (s + 1) / (W + 1)
    cosine:           min + (base - min) * 0.5 * (1 + cos(pi * (s - W) / (S - W)))
    hold_poly:        base until H = int(hold_ratio * S) + W,
                      then (base - min) * (1 - (s - H) / (S - H)) ** power + min
    after S:          min
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from kws.config import OptimConfig, ScheduleConfig


class Novograd(torch.optim.Optimizer):
    """Layer-wise normalised SGD with momentum; state: `exp_avg` (like p), `exp_avg_sq` (one scalar)."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.05,
        betas: tuple[float, float] = (0.95, 0.5),
        eps: float = 1e-8,
        weight_decay: float = 0.001,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Invalid betas: {betas}; expected two values in [0, 1)")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            b1, b2 = group["betas"]
            eps, wd, lr = group["eps"], group["weight_decay"], group["lr"]
            grads: list[Tensor] = []
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError("Novograd does not support sparse gradients")
                grads.append(p.grad.float() if p.grad.dtype != p.dtype else p.grad)
            # ||g||^2, one scalar tensor each; foreach kernels throughout: on a GPU the step is a few
            # launches, not several per tensor (the launches, not the arithmetic, bound a small model's step)
            norms_sq = torch._foreach_norm(grads)
            torch._foreach_mul_(norms_sq, norms_sq)
            old_v, old_n = [], []
            for p, n in zip(params, norms_sq, strict=True):
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = n.to(p.dtype).clone()  # first step: v = n
                else:
                    old_v.append(state["exp_avg_sq"])
                    old_n.append(n.to(p.dtype))  # a no-op (no kernel) when the dtypes agree
                state["step"] += 1
            if old_v:
                torch._foreach_mul_(old_v, b2)
                torch._foreach_add_(old_v, old_n, alpha=1 - b2)
            exp_avgs = [self.state[p]["exp_avg"] for p in params]
            exp_avg_sqs = [self.state[p]["exp_avg_sq"] for p in params]
            denoms = torch._foreach_add(torch._foreach_sqrt(exp_avg_sqs), eps)
            updates = torch._foreach_div(grads, denoms)
            if wd != 0:
                torch._foreach_add_(updates, params, alpha=wd)
            torch._foreach_mul_(exp_avgs, b1)
            torch._foreach_add_(exp_avgs, updates)
            torch._foreach_add_(params, exp_avgs, alpha=-lr)
        return loss


def build_optimizer(params: Iterable[Tensor] | Iterable[dict[str, Any]], cfg: OptimConfig) -> Novograd:
    """The optimizer the config names (only Novograd, the recipe's)."""
    if cfg.name != "novograd":
        raise ValueError(f"unknown optimizer {cfg.name!r}; kws implements 'novograd'")
    return Novograd(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


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
