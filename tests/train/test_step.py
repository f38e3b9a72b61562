"""kws.train.step: label smoothing and mixup (issue 15's recipe options), held to the plain step's numbers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kws.audio import CLIP_SAMPLES
from kws.config import Config, ConfigError, apply_overrides
from kws.model import build_model
from kws.optim import build_optimizer, build_scheduler
from kws.train.step import TrainInputs, mixup, train_step

N_LABELS = 5


def one_step(cfg: Config, seed: int = 0, **options: float) -> tuple[float, torch.Tensor]:
    """The loss of one step from fixed weights and audio, and the first weight after it."""
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.features.n_mfcc, N_LABELS).train()
    optimizer = build_optimizer(model.parameters(), cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.schedule, 100)
    g = torch.Generator().manual_seed(1)
    batch = (
        0.1 * torch.randn(8, CLIP_SAMPLES, generator=g),
        torch.full((8,), CLIP_SAMPLES),
        torch.arange(8) % 5,
    )
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    gen = torch.Generator().manual_seed(seed)
    loss = train_step(
        model, TrainInputs(cfg).train(), optimizer, scheduler, scaler, batch, gen, "32", **options
    )
    return float(loss), next(model.parameters()).detach().clone()


def test_the_defaults_are_the_recipes_plain_cross_entropy() -> None:
    cfg = Config()
    plain, w_plain = one_step(cfg)
    off, w_off = one_step(cfg, label_smoothing=0.0, mixup_alpha=0.0)
    assert plain == off and torch.equal(w_plain, w_off)


def test_label_smoothing_is_the_smoothed_cross_entropy() -> None:
    logits, targets = torch.randn(6, N_LABELS), torch.tensor([0, 1, 2, 3, 4, 0])
    smoothed = F.cross_entropy(logits, targets, label_smoothing=0.1)
    by_hand = 0.9 * F.cross_entropy(logits, targets) + 0.1 * (-logits.log_softmax(1).mean(1)).mean()
    assert float(smoothed) == pytest.approx(float(by_hand), rel=1e-6)
    plain, w_plain = one_step(Config())
    smooth, w_smooth = one_step(Config(), label_smoothing=0.1)
    assert smooth != plain and not torch.equal(w_smooth, w_plain)  # the step uses it


def test_mixup_mixes_each_clip_with_another_by_one_beta_weight() -> None:
    feats = torch.randn(16, 4, 10)
    mixed, order, lam = mixup(feats, 0.4, torch.Generator().manual_seed(3))
    assert 0.0 < lam < 1.0 and sorted(order.tolist()) == list(range(16))
    assert torch.allclose(mixed, lam * feats + (1 - lam) * feats[order])
    again, order2, lam2 = mixup(feats, 0.4, torch.Generator().manual_seed(3))
    assert lam2 == lam and torch.equal(order2, order) and torch.equal(again, mixed), "reproducible per step"
    lams = [mixup(feats, 0.4, torch.Generator().manual_seed(s))[2] for s in range(400)]
    mean = sum(lams) / len(lams)
    assert mean == pytest.approx(0.5, abs=0.05)  # Beta(a, a) is symmetric
    assert sum(lam < 0.1 or lam > 0.9 for lam in lams) > 0.4 * len(lams)  # and U-shaped for a < 1


def test_a_mixup_step_is_reproducible_and_differs_from_the_plain_step() -> None:
    cfg = Config()
    plain, w_plain = one_step(cfg)
    mixed, w_mixed = one_step(cfg, mixup_alpha=0.4)
    assert mixed == one_step(cfg, mixup_alpha=0.4)[0] and not torch.equal(w_plain, w_mixed)


def test_the_options_are_checked_in_the_config() -> None:
    cfg = apply_overrides(Config(), ["trainer.label_smoothing=0.1", "augment.mixup_alpha=0.2"])
    assert cfg.trainer.label_smoothing == 0.1 and cfg.augment.mixup_alpha == 0.2
    with pytest.raises(ConfigError, match=r"`trainer.label_smoothing` must be in \[0, 1\), got 1"):
        apply_overrides(Config(), ["trainer.label_smoothing=1.0"])
    with pytest.raises(ConfigError, match="`augment.mixup_alpha` must be >= 0"):
        apply_overrides(Config(), ["augment.mixup_alpha=-0.5"])
