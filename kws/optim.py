"""Novograd (Ginsburg et al., 2019), exactly as the recipe uses it (RECIPE.md, Optimization).

Per parameter tensor, with the gradient g and its squared norm n = ||g||^2:
    v = n                          on the first step
    v = b2 * v + (1 - b2) * n      afterwards          (v is one scalar per tensor)
    g = g / (sqrt(v) + eps) + wd * p                   (weight decay after normalisation, on every tensor)
    m = b1 * m + g                                     (no bias correction)
    p = p - lr * m
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from kws.config import OptimConfig


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
            norms_sq = [n.square() for n in torch._foreach_norm(grads)]  # ||g||^2, one scalar tensor each
            exp_avgs, exp_avg_sqs = [], []
            for p, n in zip(params, norms_sq, strict=True):
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = n.to(p.dtype).clone()  # first step: v = n
                else:
                    state["exp_avg_sq"].mul_(b2).add_(n.to(p.dtype), alpha=1 - b2)
                state["step"] += 1
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
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
