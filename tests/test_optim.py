"""kws.optim: Novograd against the formula, and both learning-rate schedules at their landmarks."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from kws.config import OptimConfig, ScheduleConfig
from kws.optim import Novograd, build_optimizer, build_scheduler, lr_at


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x), y)


def test_two_steps_match_the_formula() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    lr, (b1, b2), eps, wd = 0.05, (0.95, 0.5), 1e-8, 0.001
    opt = Novograd(model.parameters(), lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)

    # the hand computation, per tensor, in float64
    params = {name: p.detach().double().clone() for name, p in model.named_parameters()}
    m = {name: torch.zeros_like(p) for name, p in params.items()}
    v: dict[str, torch.Tensor] = {}
    for step in range(2):
        opt.zero_grad()
        loss_of(model, x, y).backward()
        grads = {name: p.grad.double() for name, p in model.named_parameters()}
        opt.step()
        for name, p in params.items():
            g = grads[name]
            n = (g * g).sum()
            v[name] = n if step == 0 else b2 * v[name] + (1 - b2) * n  # first step: v = ||g||^2
            g = g / (v[name].sqrt() + eps) + wd * p  # weight decay on the bias too
            m[name] = b1 * m[name] + g
            params[name] = p - lr * m[name]
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.detach().double(), params[name], atol=1e-6, rtol=0)
            assert opt.state[p]["exp_avg_sq"].shape == ()  # one scalar per tensor
            torch.testing.assert_close(opt.state[p]["exp_avg_sq"].double(), v[name], atol=1e-6, rtol=1e-6)


def test_lowers_the_loss_on_a_toy_problem() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 10)
    y = (x[:, 0] + x[:, 1] > 0).long() + 2 * (x[:, 2] > 0).long()
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = Novograd(model.parameters(), lr=0.05)
    first = loss_of(model, x, y).item()
    for _ in range(100):
        opt.zero_grad()
        loss_of(model, x, y).backward()
        opt.step()
    assert loss_of(model, x, y).item() < 0.3 * first


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        (dict(lr=-0.1), "-0.1"),
        (dict(eps=-1.0), "-1.0"),
        (dict(weight_decay=-0.001), "-0.001"),
        (dict(betas=(1.0, 0.5)), "(1.0, 0.5)"),
        (dict(betas=(0.9, -0.5)), "(0.9, -0.5)"),
    ],
)
def test_bad_arguments_are_value_errors_quoting_the_value(kwargs: dict, bad: str) -> None:
    with pytest.raises(ValueError) as info:
        Novograd(nn.Linear(2, 2).parameters(), **kwargs)
    assert bad in str(info.value)


def test_state_dict_round_trips() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    model = nn.Linear(4, 3)
    opt = Novograd(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        loss_of(model, x, y).backward()
        opt.step()
    twin = copy.deepcopy(model)
    twin_opt = Novograd(twin.parameters(), lr=0.5)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert twin_opt.param_groups[0]["lr"] == 0.1
    for m, o in ((model, opt), (twin, twin_opt)):
        o.zero_grad()
        loss_of(m, x, y).backward()
        o.step()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)


def test_parameters_without_gradients_are_left_alone() -> None:
    model = nn.Linear(2, 2)
    frozen = model.bias.detach().clone()
    opt = Novograd(model.parameters())
    model(torch.randn(3, 2)).sum().backward()
    model.bias.grad = None
    opt.step()
    assert torch.equal(model.bias.detach(), frozen) and model.bias not in opt.state


def test_build_optimizer_uses_the_config() -> None:
    cfg = OptimConfig(lr=0.01, betas=(0.98, 0.5), weight_decay=0.0, eps=1e-6)
    opt = build_optimizer(nn.Linear(2, 2).parameters(), cfg)
    group = opt.param_groups[0]
    assert (group["lr"], group["betas"], group["weight_decay"], group["eps"]) == (
        0.01,
        (0.98, 0.5),
        0.0,
        1e-6,
    )
    with pytest.raises(ValueError, match="adam"):
        build_optimizer(nn.Linear(2, 2).parameters(), OptimConfig(name="adam"))


BASE, MIN = 0.05, 0.001
S = 1000  # total steps: W = int(0.05 * S) = 50 warmup steps, H = int(0.45 * S) + W = 500
COSINE = ScheduleConfig(name="cosine", warmup_ratio=0.05, min_lr=MIN)
HOLD_POLY = ScheduleConfig(name="hold_poly", warmup_ratio=0.05, hold_ratio=0.45, min_lr=MIN, power=2.0)


@pytest.mark.parametrize("cfg", [COSINE, HOLD_POLY], ids=["cosine", "hold_poly"])
def test_warmup_is_linear_from_base_over_w_plus_1(cfg: ScheduleConfig) -> None:
    assert lr_at(0, S, cfg, BASE) == pytest.approx(BASE / 51)
    assert lr_at(25, S, cfg, BASE) == pytest.approx(BASE * 26 / 51)
    assert lr_at(49, S, cfg, BASE) == pytest.approx(BASE * 50 / 51)  # last warmup step
    assert lr_at(50, S, cfg, BASE) == pytest.approx(BASE)  # end of warmup: the base rate


@pytest.mark.parametrize("cfg", [COSINE, HOLD_POLY], ids=["cosine", "hold_poly"])
def test_after_the_end_the_rate_is_min_lr(cfg: ScheduleConfig) -> None:
    assert lr_at(S, S, cfg, BASE) == MIN
    assert lr_at(5 * S, S, cfg, BASE) == MIN


def test_cosine_landmarks() -> None:
    assert lr_at(525, S, COSINE, BASE) == pytest.approx(MIN + (BASE - MIN) * 0.5)  # halfway through decay
    quarter = MIN + (BASE - MIN) * 0.5 * (1 + math.cos(math.pi * 0.25))
    assert lr_at(50 + 950 // 4, S, COSINE, BASE) == pytest.approx(quarter, rel=1e-3)
    last = MIN + (BASE - MIN) * 0.5 * (1 + math.cos(math.pi * 949 / 950))
    assert lr_at(999, S, COSINE, BASE) == pytest.approx(last)
    assert MIN < lr_at(999, S, COSINE, BASE) < MIN + 1e-6


def test_hold_then_polynomial_landmarks() -> None:
    assert lr_at(300, S, HOLD_POLY, BASE) == BASE  # holding
    assert lr_at(499, S, HOLD_POLY, BASE) == BASE  # last step of the hold
    assert lr_at(500, S, HOLD_POLY, BASE) == pytest.approx(BASE)  # end of hold: decay starts at base
    assert lr_at(750, S, HOLD_POLY, BASE) == pytest.approx((BASE - MIN) * 0.25 + MIN)  # middle: (1/2)^2
    assert lr_at(999, S, HOLD_POLY, BASE) == pytest.approx((BASE - MIN) * (1 / 500) ** 2 + MIN)


def test_rates_never_increase_after_warmup() -> None:
    for cfg in (COSINE, HOLD_POLY):
        rates = [lr_at(s, S, cfg, BASE) for s in range(50, 1200)]
        assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="linear"):
        lr_at(10, S, ScheduleConfig(name="linear"), BASE)
    with pytest.raises(ValueError, match="0"):
        lr_at(0, 0, COSINE, BASE)


def test_lambda_lr_follows_lr_at() -> None:
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(params, lr=BASE)
    scheduler = build_scheduler(opt, HOLD_POLY, 100)
    seen = []
    for _ in range(105):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    assert seen == pytest.approx([lr_at(s, 100, HOLD_POLY, BASE) for s in range(105)])


def test_lambda_lr_resumes_from_its_state() -> None:
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(params, lr=BASE)
    scheduler = build_scheduler(opt, HOLD_POLY, 100)
    for _ in range(70):
        opt.step()
        scheduler.step()
    opt2 = torch.optim.SGD(params, lr=BASE)
    resumed = build_scheduler(opt2, HOLD_POLY, 100)
    opt2.load_state_dict(opt.state_dict())
    resumed.load_state_dict(scheduler.state_dict())
    for step in range(70, 80):
        assert opt2.param_groups[0]["lr"] == pytest.approx(lr_at(step, 100, HOLD_POLY, BASE))
        opt2.step()
        resumed.step()


def test_a_tensor_whose_gradient_starts_later_is_updated_as_if_alone() -> None:
    # Novograd is per tensor: one optimizer over [a, b] where b has a gradient only from the second step on
    # must give what two separate optimizers give (the state of b starts at its first gradient).
    torch.manual_seed(0)
    a, b = torch.randn(5, 3), torch.randn(4)
    pair = [a.clone().requires_grad_(), b.clone().requires_grad_()]
    alone = [a.clone().requires_grad_(), b.clone().requires_grad_()]
    opt = Novograd(pair, lr=0.1)
    opt_a, opt_b = Novograd([alone[0]], lr=0.1), Novograd([alone[1]], lr=0.1)
    for step in range(4):
        for params in (pair, alone):
            params[0].grad = torch.full_like(a, float(step + 1)) + params[0].detach()
            params[1].grad = None if step == 0 else params[1].detach() * (step + 2)
        opt.step()
        opt_a.step()
        if step > 0:
            opt_b.step()
    for got, want in zip(pair, alone, strict=True):
        assert torch.equal(got.detach(), want.detach())
    assert opt.state[pair[1]]["step"] == 3 and opt.state[pair[0]]["step"] == 4
