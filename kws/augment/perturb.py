"""Speed (tempo + pitch) perturbation by resampling, and random gain: batched, per-clip draws.

Each augmentation is a pair of plain functions: `draw_*` makes the per-clip parameters for a batch from a
`torch.Generator` (on the batch's device), `apply_*` applies given parameters. Splitting them makes a clip's
result depend only on its own draw (tested: batch consistency) and lets tests pick the parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# Re-exported: channel, noise and room import it from here.
from kws.masks import valid_mask


def uniform(
    low: float, high: float, batch: int, device: torch.device, generator: torch.Generator | None
) -> Tensor:
    """`(batch,)` float32 uniform in [low, high)."""
    u = torch.rand(batch, generator=generator, device=device)
    return low + (high - low) * u


def log_uniform(
    low: float, high: float, batch: int, device: torch.device, generator: torch.Generator | None
) -> Tensor:
    """`(batch,)` log-uniform in [low, high): frequencies and ratios spread evenly on a log scale."""
    return torch.exp(uniform(math.log(low), math.log(high), batch, device, generator))


def chosen(prob: float, batch: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
    """`(batch,)` bool: which clips an augmentation with probability `prob` acts on."""
    return torch.rand(batch, generator=generator, device=device) < prob


def fast_fft_size(n: int) -> int:
    """The smallest power of two >= n: on CPU an rfft of 32768 points took half the time of one of 27648
    (2^10 * 27), and odd sizes with large prime factors are slower still."""
    return 1 << max(n - 1, 0).bit_length()


def draw_speed(
    batch: int,
    factor_range: tuple[float, float],
    prob: float,
    device: torch.device,
    generator: torch.Generator | None,
) -> Tensor:
    """`(batch,)` resampling factors, log-uniform in `factor_range` (so 0.8 and 1.25 are equally likely);
    1.0 for the clips left alone."""
    factors = log_uniform(*factor_range, batch, device, generator)
    return torch.where(chosen(prob, batch, device, generator), factors, torch.ones_like(factors))


def apply_speed(audio: Tensor, lengths: Tensor, factors: Tensor) -> Tensor:
    """Play each clip `factors[i]` times faster (tempo and pitch together), about the clip's centre.

    `(batch, samples)` -> same shape; a clip keeps its length: a sped-up clip gains zeros at both ends, a
    slowed-down one loses its ends (Speech Commands words sit near the middle of their second). Linear
    interpolation at fractional source positions through `grid_sample`: one fused kernel for the batch,
    three times faster on CPU than gathering both neighbours (positions are exact to ~1e-3 sample). It does
    not low-pass before speeding up; at factors <= 1.25 the aliased band is above 6.4 kHz, where speech has
    little energy, and the mel features blur it further.
    """
    batch, width = audio.shape
    lengths = lengths.to(audio.device)
    valid = valid_mask(lengths, width, audio.dtype)
    centre = (lengths.to(audio.dtype) - 1).clamp(min=0)[:, None] / 2
    pos = torch.arange(width, device=audio.device, dtype=audio.dtype)
    src = centre + (pos - centre) * factors.to(audio.dtype)[:, None]  # (batch, width) source positions
    # grid_sample reads an image: the clip is a 1 x width image, x in [-1, 1] spans its samples
    grid = torch.stack([src * (2 / max(width - 1, 1)) - 1, torch.zeros_like(src)], -1)[:, None]
    out = F.grid_sample(
        (audio * valid)[:, None, None, :], grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return out[:, 0, 0] * valid


def draw_gain(
    batch: int,
    gain_db: tuple[float, float],
    prob: float,
    device: torch.device,
    generator: torch.Generator | None,
) -> Tensor:
    """`(batch,)` gains in dB, uniform in `gain_db`; 0 dB for the clips left alone."""
    db = uniform(*gain_db, batch, device, generator)
    return torch.where(chosen(prob, batch, device, generator), db, torch.zeros_like(db))


def apply_gain(audio: Tensor, gain_db: Tensor) -> Tensor:
    """Scale each clip by 10^(dB/20), clipped to [-1, 1] as a real recording would be."""
    return (audio * torch.pow(10.0, gain_db.to(audio.dtype) / 20)[:, None]).clamp(-1.0, 1.0)
