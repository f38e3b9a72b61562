"""The recipe together: features -> augmentation -> model -> Novograd -> schedule learn a toy task."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from kws.augment.recipe import SpecAugment, WaveAugment
from kws.config import load_config
from kws.features import FeatureExtractor
from kws.model import build_model, count_parameters
from kws.optim import build_optimizer, build_scheduler
from tests.helpers import SMOKE

N_CLASSES, PER_CLASS, STEPS = 4, 4, 150


@pytest.fixture
def one_thread() -> Iterator[None]:
    # The tensors are tiny: a second OpenMP thread does not help, and on a busy machine its barriers make
    # every operation wait for a descheduled thread (seconds become minutes).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def synthetic_clips(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """16 clips of 0.6-1 s: class c is a chirp around its own pitch, with random phase, level and length."""
    n = N_CLASSES * PER_CLASS
    labels = torch.arange(N_CLASSES).repeat_interleave(PER_CLASS)
    lengths = (9600 + torch.rand(n, generator=generator) * 6400).long()
    t = torch.arange(16000) / 16000
    f0 = torch.tensor([300.0, 600.0, 1200.0, 2400.0])[labels] * (
        1 + 0.05 * torch.rand(n, generator=generator)
    )
    phase = 2 * math.pi * torch.rand(n, 1, generator=generator)
    level = 0.1 + 0.4 * torch.rand(n, 1, generator=generator)
    audio = level * torch.sin(2 * math.pi * f0[:, None] * (t + 0.3 * t**2) + phase)
    audio = audio * (torch.arange(16000) < lengths[:, None])
    return audio, lengths, labels


@pytest.mark.usefixtures("one_thread")
def test_tiny_model_overfits_16_clips_of_4_classes(seed: int = 0) -> None:
    cfg = load_config(SMOKE)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    audio, lengths, labels = synthetic_clips(generator)

    features = FeatureExtractor(cfg.features)
    wave_aug = WaveAugment(cfg.augment, cfg.features.sample_rate)
    spec_aug = SpecAugment(cfg.augment)
    model = build_model(cfg.model, cfg.features.n_mfcc, N_CLASSES)
    assert count_parameters(model) < 10_000
    optimizer = build_optimizer(model.parameters(), cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.schedule, STEPS)

    for module in (features, wave_aug, spec_aug, model):
        module.train()
    losses = []
    for _ in range(STEPS):
        with torch.no_grad():
            feats, feat_lengths = features(wave_aug(audio, lengths, generator), lengths, generator)
            feats = spec_aug(feats, feat_lengths, generator)
        loss = nn.functional.cross_entropy(model(feats, feat_lengths), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())

    assert optimizer.param_groups[0]["lr"] == cfg.schedule.min_lr
    assert sum(losses[-10:]) < 0.2 * sum(losses[:10])
    for module in (features, model):
        module.eval()
    with torch.no_grad():
        predictions = model(*features(audio, lengths)).argmax(-1)
    assert (predictions == labels).all(), f"train accuracy {(predictions == labels).float().mean():.2f}"
