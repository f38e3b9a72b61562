"""The recipe's augmentations, batched on the input's device: time shift and white noise on the waveform,
SpecCutout and SpecAugment on the features. They act only in training mode; in eval mode they return their
input unchanged.

Randomness comes from an optional `torch.Generator`; it must live on the same device as the tensors (a CUDA
batch needs a CUDA generator), as `torch.rand(..., generator=g, device=x.device)` requires. Masks are built
from `arange` comparisons, so there is no Python loop over clips.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kws.augment.config import AugmentConfig
from kws.augment.stages import WaveStages
from kws.masks import valid_mask


def _randint(
    low: Tensor | int,
    high: Tensor | int,
    shape: tuple[int, ...],
    device: torch.device,
    generator: torch.Generator | None,
) -> Tensor:
    """Integers uniform in [low, high], both included; `low`/`high` may be tensors broadcasting to `shape`."""
    u = torch.rand(shape, generator=generator, device=device)
    low_t = torch.as_tensor(low, device=device)
    span = (torch.as_tensor(high, device=device) - low_t + 1).to(u.dtype)
    return low_t + (u * span).floor().long()


def time_shift(audio: Tensor, valid: Tensor, shifts: Tensor, max_shift: int) -> Tensor:
    """Shift each clip by `shifts[i]` samples (at most max_shift either way) within its length, zero-filled.

    `audio` `(batch, samples)`, `valid` its `(batch, samples)` 0/1 mask of samples before each clip's length
    -> same shape. A positive shift moves the sound earlier, as NeMo's ShiftPerturbation; samples at or
    beyond a clip's length stay zero, so the clip's length is unchanged.
    """
    # zero the padding, then read through a margin of zeros: no index falls outside, no clamping
    padded = F.pad(audio * valid, (max_shift, max_shift))
    index = (
        torch.arange(audio.shape[1], device=audio.device)
        + (shifts.clamp(-max_shift, max_shift) + max_shift)[:, None]
    )
    return torch.gather(padded, 1, index) * valid


def band_mask(starts: Tensor, widths: Tensor, size: int) -> Tensor:
    """`(..., n)` bands [start, start + width) -> `(..., size)` bool, True inside any of the n bands."""
    pos = torch.arange(size, device=starts.device)
    inside = (pos >= starts[..., None]) & (pos < (starts + widths)[..., None])
    return inside.any(-2)


class WaveAugment(nn.Module):
    """Time shift (U(-time_shift_ms, time_shift_ms), floored to samples) then white noise (integer dB level).

    `forward(audio (batch, samples), lengths (batch,), generator)` -> audio of the same shape.
    Before them run the robustness stages named in `cfg.order` (kws/augment/stages.py; none in the recipe,
    which then draws exactly the recipe's random numbers). `dataset_dir` resolves `noise.dir: auto`.
    """

    def __init__(self, cfg: AugmentConfig, sample_rate: int, dataset_dir: Path | None = None) -> None:
        super().__init__()
        self.stages = WaveStages(cfg, sample_rate, dataset_dir)
        if cfg.time_shift_ms < 0:
            raise ValueError(f"time_shift_ms must be >= 0, got {cfg.time_shift_ms}")
        if cfg.white_noise_db is not None and cfg.white_noise_db[0] > cfg.white_noise_db[1]:
            raise ValueError(f"white_noise_db must be (low, high) with low <= high, got {cfg.white_noise_db}")
        self.time_shift_ms = cfg.time_shift_ms
        self.white_noise_db = cfg.white_noise_db
        self.sample_rate = sample_rate

    def forward(self, audio: Tensor, lengths: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not self.training:
            return audio
        if self.stages.active:
            audio = self.stages(audio, lengths, generator)
        batch, width = audio.shape
        valid = valid_mask(lengths.to(audio.device), width, audio.dtype)
        if self.time_shift_ms > 0:
            u = torch.rand(batch, generator=generator, device=audio.device)
            shift_ms = (u * 2 - 1) * self.time_shift_ms
            # floor(ms * rate / 1000): within -80..79 samples for 5 ms at 16 kHz
            shifts = torch.floor(shift_ms * self.sample_rate / 1000).long()
            audio = time_shift(audio, valid, shifts, math.ceil(self.time_shift_ms * self.sample_rate / 1000))
        if self.white_noise_db is not None:
            low, high = self.white_noise_db
            level_db = _randint(low, high, (batch,), audio.device, generator)
            scale = torch.pow(10.0, level_db.to(audio.dtype) / 20)
            noise = torch.randn(batch, width, generator=generator, device=audio.device, dtype=audio.dtype)
            audio = audio.addcmul(noise.mul_(scale[:, None]), valid)  # no noise in the padding
        return audio


class SpecAugment(nn.Module):
    """SpecCutout (rectangles) then SpecAugment (frequency and time bands), masked values set to 0.

    `forward(feats (batch, n_features, frames), lengths (batch,), generator)` -> feats of the same shape.
    As in the reference, a band's start is drawn first, uniform over the positions where the widest band
    fits, then its width uniform in 0..max (0 masks nothing). Time bands start within a clip's length.
    """

    def __init__(self, cfg: AugmentConfig) -> None:
        super().__init__()
        for name in (
            "cutout_rects",
            "cutout_freq",
            "cutout_time",
            "freq_masks",
            "freq_width",
            "time_masks",
            "time_width",
        ):
            if getattr(cfg, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)}")
        self.cfg = cfg

    def masks(
        self,
        shape: tuple[int, int, int],
        lengths: Tensor,
        device: torch.device,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The `(batch, n_features, frames)` bool mask of the values to zero (True = masked)."""
        batch, n_feat, n_time = shape
        cfg = self.cfg
        mask = torch.zeros(shape, dtype=torch.bool, device=device)
        if cfg.cutout_rects > 0:
            r = (batch, cfg.cutout_rects)
            f0 = _randint(0, max(n_feat - cfg.cutout_freq, 0), r, device, generator)
            t0 = _randint(0, max(n_time - cfg.cutout_time, 0), r, device, generator)
            fw = _randint(0, cfg.cutout_freq, r, device, generator)
            tw = _randint(0, cfg.cutout_time, r, device, generator)
            pos_f = torch.arange(n_feat, device=device)
            pos_t = torch.arange(n_time, device=device)
            in_f = (pos_f >= f0[..., None]) & (pos_f < (f0 + fw)[..., None])  # (batch, rects, n_feat)
            in_t = (pos_t >= t0[..., None]) & (pos_t < (t0 + tw)[..., None])  # (batch, rects, n_time)
            # A value is cut when some rectangle covers it: a boolean "matrix product" over the rectangles.
            mask |= torch.einsum("brf,brt->bft", in_f.float(), in_t.float()) > 0
        if cfg.freq_masks > 0:
            m = (batch, cfg.freq_masks)
            f0 = _randint(0, max(n_feat - cfg.freq_width, 0), m, device, generator)
            fw = _randint(0, cfg.freq_width, m, device, generator)
            mask |= band_mask(f0, fw, n_feat)[:, :, None]
        if cfg.time_masks > 0:
            m = (batch, cfg.time_masks)
            last = (lengths.to(device) - cfg.time_width).clamp(min=1)[:, None]
            t0 = _randint(0, last, m, device, generator)
            tw = _randint(0, cfg.time_width, m, device, generator)
            mask |= band_mask(t0, tw, n_time)[:, None, :]
        return mask

    def forward(self, feats: Tensor, lengths: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not self.training or (
            self.cfg.cutout_rects == 0 and self.cfg.freq_masks == 0 and self.cfg.time_masks == 0
        ):
            return feats
        mask = self.masks(tuple(feats.shape), lengths, feats.device, generator)  # type: ignore[arg-type]
        return feats.masked_fill(mask, 0.0)
