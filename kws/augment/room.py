"""Simulated rooms: synthetic impulse responses convolved with whole batches through the FFT.

An impulse response is a unit direct path at t = 0 followed by a reverberant tail of Gaussian noise whose
energy decays by 60 dB in RT60 seconds (Schroeder's statistical model of a diffuse field), scaled so that
direct energy / tail energy equals the drawn direct-to-reverberant ratio (DRR). Cheap, and it covers the
range from a small dry office to a reverberant hall without a library of measured responses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from kws.augment.perturb import chosen, fast_fft_size, uniform
from kws.masks import valid_mask

DECAY_DB = 60.0  # the definition of RT60
ENERGY_FLOOR = 1e-10


@dataclass(frozen=True)
class RoomDraw:
    rt60_s: Tensor  # (batch,)
    drr_db: Tensor  # (batch,)
    active: Tensor  # (batch,) bool


def draw_room(
    batch: int,
    rt60_s: tuple[float, float],
    drr_db: tuple[float, float],
    prob: float,
    device: torch.device,
    generator: torch.Generator | None,
) -> RoomDraw:
    return RoomDraw(
        uniform(*rt60_s, batch, device, generator),
        uniform(*drr_db, batch, device, generator),
        chosen(prob, batch, device, generator),
    )


def impulse_responses(
    draw: RoomDraw, n_taps: int, sample_rate: int, generator: torch.Generator | None
) -> Tensor:
    """`(batch, n_taps)` impulse responses: 1 at t = 0, then exp-decaying noise with the drawn RT60 and DRR.

    The amplitude envelope exp(-t * ln(10^3) / RT60) is the energy decay 10^(-6 t / RT60), -60 dB at RT60.
    """
    batch, device = draw.rt60_s.shape[0], draw.rt60_s.device
    t = torch.arange(n_taps, device=device, dtype=torch.float32) / sample_rate
    envelope = torch.exp(-t * (DECAY_DB / 20 * math.log(10)) / draw.rt60_s[:, None])
    tail = torch.randn(batch, n_taps, generator=generator, device=device) * envelope
    tail[:, 0] = 0.0
    tail_energy = tail.square().sum(1).clamp(min=ENERGY_FLOOR)
    # direct energy 1, so tail energy must be 10^(-DRR/10)
    tail = tail * torch.sqrt(torch.pow(10.0, -draw.drr_db / 10) / tail_energy)[:, None]
    tail[:, 0] = 1.0
    return tail


def apply_room(audio: Tensor, lengths: Tensor, irs: Tensor, active: Tensor) -> Tensor:
    """Convolve each active clip with its impulse response (linear convolution via rfft, cut to the clip's
    first `samples`, so the direct sound stays where it was), then restore the clip's RMS over its valid
    samples: reverberation should change the sound, not the level (gain is its own stage)."""
    batch, width = audio.shape
    valid = valid_mask(lengths.to(audio.device), width, audio.dtype)
    dry = audio * valid
    n_fft = fast_fft_size(width + irs.shape[1] - 1)  # zero padding beyond the linear length is harmless
    wet = torch.fft.irfft(torch.fft.rfft(dry, n=n_fft) * torch.fft.rfft(irs, n=n_fft), n=n_fft)
    wet = wet[:, :width] * valid
    dry_energy = dry.square().sum(1)
    wet_energy = wet.square().sum(1).clamp(min=ENERGY_FLOOR)
    wet = wet * torch.sqrt(dry_energy / wet_energy)[:, None]
    return torch.where(active[:, None], wet, audio)


def measured_rt60(ir: Tensor, sample_rate: int, fit_db: tuple[float, float] = (-5.0, -25.0)) -> float:
    """RT60 of one impulse response from its Schroeder energy decay curve: a straight line fitted to the
    curve between `fit_db` (T20), extrapolated to -60 dB. Used by the tests and for checking a draw."""
    energy = ir.double().square().flip(0).cumsum(0).flip(0)
    edc_db = 10 * torch.log10(energy / energy[0])
    inside = (edc_db <= fit_db[0]) & (edc_db >= fit_db[1])
    t = torch.arange(ir.shape[0], dtype=torch.float64)[inside] / sample_rate
    y = edc_db[inside]
    slope = ((t - t.mean()) * (y - y.mean())).sum() / (t - t.mean()).square().sum()
    return float(-DECAY_DB / slope)
