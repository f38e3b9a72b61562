"""One optimizer step: audio -> augmented features -> model -> loss -> Novograd, with mixed precision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kws.augment.recipe import SpecAugment, WaveAugment
from kws.config import Config
from kws.features import FeatureExtractor
from kws.train.device import autocast


class TrainInputs(nn.Module):
    """Audio `(batch, samples)` -> training features `(batch, n_mfcc, n_frames)`: time shift and white noise,
    MFCC and crop/pad (float32, also under bf16/fp16), SpecCutout and SpecAugment, batched on the device."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        # `augment.noise.dir: auto` takes the noise recordings of the train manifest's dataset folder.
        dataset_dir = Path(cfg.data.train_manifest).parent if cfg.data.train_manifest else None
        self.wave_augment = WaveAugment(cfg.augment, cfg.features.sample_rate, dataset_dir)
        self.features = FeatureExtractor(cfg.features)
        self.spec_augment = SpecAugment(cfg.augment)

    @torch.no_grad()  # no parameters here: no graph needed
    def forward(self, audio: Tensor, lengths: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        audio = self.wave_augment(audio, lengths, generator)
        feats, feat_lengths = self.features(audio, lengths, generator)
        return self.spec_augment(feats, feat_lengths, generator), feat_lengths


def train_step(
    model: nn.Module,
    inputs: TrainInputs,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    batch: tuple[Tensor, Tensor, Tensor],
    generator: torch.Generator,
    precision: str,
    *,
    label_smoothing: float = 0.0,
    mixup_alpha: float = 0.0,
) -> Tensor:
    """One optimizer step on (audio, lengths, label ids) -> the loss: 0-dim, on the device, not synced.
    `label_smoothing` (trainer.label_smoothing) and `mixup_alpha` (augment.mixup_alpha) are off by default,
    as in the recipe."""
    audio, lengths, targets = batch
    feats, feat_lengths = inputs(audio, lengths, generator)
    lam, order = 1.0, None
    if mixup_alpha > 0:
        feats, order, lam = mixup(feats, mixup_alpha, generator)
    with autocast(audio.device, precision):
        logits = model(feats, feat_lengths)
    loss = F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
    if order is not None:
        other = F.cross_entropy(logits.float(), targets[order], label_smoothing=label_smoothing)
        loss = lam * loss + (1 - lam) * other
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return loss.detach()


def mixup(feats: Tensor, alpha: float, generator: torch.Generator) -> tuple[Tensor, Tensor, float]:
    """Features `(batch, n_mfcc, frames)` mixed with the batch in another order: `lam * x + (1 - lam) *
    x[order]`, lam ~ Beta(alpha, alpha), both drawn from `generator` (reproducible per step). Returns the
    mixed features, the order and lam. The lengths need no mixing: after crop/pad they are all n_frames."""
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device).item())
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    order = torch.randperm(feats.shape[0], generator=generator, device=generator.device).to(feats.device)
    return lam * feats + (1 - lam) * feats[order], order, lam
