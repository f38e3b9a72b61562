"""Schedules: lr_at at the recipe's landmarks, and the LambdaLR adapter driving an optimizer."""

from __future__ import annotations

import math

import pytest
import torch

from kws.config import ScheduleConfig
from kws.optim import build_scheduler, lr_at

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
