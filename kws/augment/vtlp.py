"""Vocal-tract-length perturbation (VTLP, Jaitly & Hinton 2013): a random per-clip warp of the frequency axis
applied through the mel filterbank, so a batch costs one batched matmul instead of the recipe's matmul.

A longer or shorter vocal tract scales the formants by a factor alpha; VTLP imitates a new speaker by reading
the spectrum at warped frequencies. The warp is piecewise linear: f -> alpha * f below a boundary, then a
straight line that keeps the Nyquist frequency fixed, so no energy leaves the band.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kws.audio import SAMPLE_RATE
from kws.augment.perturb import chosen

BOUNDARY_HZ = 4800.0  # Jaitly & Hinton's F_hi at 16 kHz: the warp is linear up to about here


def warp_frequencies(
    freqs_hz: Tensor, alpha: Tensor, nyquist_hz: float, boundary_hz: float = BOUNDARY_HZ
) -> Tensor:
    """`(n_freqs,)` frequencies, `(batch,)` factors -> `(batch, n_freqs)` warped (alpha 1: unchanged); 0 and
    `nyquist_hz` stay fixed. Any unit works (Hz, FFT bins) as long as all three share it."""
    f = freqs_hz[None, :]
    a = alpha[:, None].to(f.dtype)
    knee = boundary_hz * torch.clamp(a, max=1.0) / a
    upper = nyquist_hz - (nyquist_hz - boundary_hz * torch.clamp(a, max=1.0)) / (nyquist_hz - knee) * (
        nyquist_hz - f
    )
    return torch.where(f <= knee, f * a, upper)


def warped_filterbanks(fb: Tensor, alpha: Tensor, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """`fb` `(n_freqs, n_mels)` (linear-frequency bins 0..Nyquist, torchaudio's layout), `(batch,)` factors
    -> `(batch, n_freqs, n_mels)`: bin k feeds filter m with weight fb_m(warp(f_k)), by linear interpolation
    between bins. alpha = 1 gives `fb` exactly."""
    n_freqs = fb.shape[0]
    bins = torch.arange(n_freqs, device=fb.device, dtype=fb.dtype)
    # work in units of bins: Nyquist (sample_rate / 2) is bin n_freqs - 1, and so is the boundary expressed
    boundary = BOUNDARY_HZ / (sample_rate / 2) * (n_freqs - 1)
    pos = warp_frequencies(bins, alpha.to(fb.device), float(n_freqs - 1), boundary).clamp(0, n_freqs - 1)
    left = pos.floor().long().clamp(max=n_freqs - 1)
    right = (left + 1).clamp(max=n_freqs - 1)
    frac = (pos - left.to(fb.dtype))[..., None]
    return fb[left] * (1 - frac) + fb[right] * frac


def warp_factors(warp_range: tuple[float, float], n_steps: int = 31) -> Tensor:
    """`(n_steps + 1,)` factors evenly spaced over `warp_range`, then 1.0 (the slot of unwarped clips)."""
    return torch.cat([torch.linspace(*warp_range, n_steps), torch.ones(1)])


def draw_warp_index(
    batch: int, n_steps: int, prob: float, device: torch.device, generator: torch.Generator | None
) -> Tensor:
    """`(batch,)` indices into `warp_factors(...)`: uniform over the n_steps warps for a share `prob` of the
    clips, `n_steps` (no warp) for the others. A table of 31 warps (steps of 0.01 for 0.85-1.15) is as good
    as a continuous draw for training, and lets the filterbanks be built once instead of every batch."""
    index = torch.randint(n_steps, (batch,), generator=generator, device=device)
    return torch.where(chosen(prob, batch, device, generator), index, torch.full_like(index, n_steps))
