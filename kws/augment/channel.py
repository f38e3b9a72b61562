"""Microphone / channel colouring: a random band-limit and a few peaking EQ bands per clip, applied as one
zero-phase gain curve in the frequency domain (rfft -> multiply -> irfft), batched.

Cheap microphones and phone lines cut the low and high ends and have resonances; the curve here is a
Butterworth-shaped high-pass and low-pass (magnitude only) times Gaussian bumps in log-frequency.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from kws.augment.perturb import chosen, fast_fft_size, log_uniform, uniform
from kws.masks import valid_mask

ORDER = 4  # Butterworth order of the band edges: 24 dB per octave
PEAK_HZ = (150.0, 6000.0)  # centres of the peaking bands, log-uniform
PEAK_OCTAVES = (0.3, 1.5)  # width (standard deviation) of a bump, in octaves
# Zeros around a clip so that the filter's ringing does not wrap from one end to the other; 192 makes a
# 1 s clip's frame 16384 points (a power of two). The ends of a clip are near silence, so the little
# ringing that still wraps is inaudible.
PAD = 192
RESPONSE_POINTS = 513  # frequencies where the response is computed: every 15.6 Hz at 16 kHz


@dataclass(frozen=True)
class ChannelDraw:
    low_hz: Tensor  # (batch,) high-pass corner
    high_hz: Tensor  # (batch,) low-pass corner
    peak_hz: Tensor  # (batch, n_peaks)
    peak_octaves: Tensor  # (batch, n_peaks)
    peak_db: Tensor  # (batch, n_peaks)
    active: Tensor  # (batch,) bool


def draw_channel(
    batch: int,
    low_hz: tuple[float, float],
    high_hz: tuple[float, float],
    n_peaks: int,
    peak_db: float,
    prob: float,
    device: torch.device,
    generator: torch.Generator | None,
) -> ChannelDraw:
    shape = batch * n_peaks
    return ChannelDraw(
        low_hz=log_uniform(*low_hz, batch, device, generator),
        high_hz=log_uniform(*high_hz, batch, device, generator),
        peak_hz=log_uniform(*PEAK_HZ, shape, device, generator).reshape(batch, n_peaks),
        peak_octaves=uniform(*PEAK_OCTAVES, shape, device, generator).reshape(batch, n_peaks),
        peak_db=uniform(-peak_db, peak_db, shape, device, generator).reshape(batch, n_peaks),
        active=chosen(prob, batch, device, generator),
    )


def channel_response(draw: ChannelDraw, freqs_hz: Tensor) -> Tensor:
    """`(batch, n_freqs)` magnitude response of each drawn channel at `freqs_hz`."""
    f = freqs_hz[None, :].clamp(min=1.0)
    high_pass = 1 / torch.sqrt(1 + (draw.low_hz[:, None] / f) ** (2 * ORDER))
    low_pass = 1 / torch.sqrt(1 + (f / draw.high_hz[:, None]) ** (2 * ORDER))
    octaves = torch.log2(f[:, None, :] / draw.peak_hz[..., None])  # (batch, n_peaks, n_freqs)
    bumps_db = (
        draw.peak_db[..., None] * torch.exp(-0.5 * (octaves / draw.peak_octaves[..., None]) ** 2)
    ).sum(1)
    return high_pass * low_pass * torch.pow(10.0, bumps_db / 20)


def apply_channel(audio: Tensor, lengths: Tensor, draw: ChannelDraw, sample_rate: int) -> Tensor:
    """Filter each active clip with its drawn channel; same shape, padding stays zero."""
    batch, width = audio.shape
    valid = valid_mask(lengths.to(audio.device), width, audio.dtype)
    n_fft = fast_fft_size(width + 2 * PAD)
    padded = torch.nn.functional.pad(audio * valid, (PAD, n_fft - width - PAD))
    n_bins = n_fft // 2 + 1
    # The curve is smooth: compute it at RESPONSE_POINTS frequencies and interpolate to every FFT bin, which
    # costs a fraction of evaluating the exponentials at all 8193 bins of every clip.
    coarse = channel_response(draw, torch.linspace(0, sample_rate / 2, RESPONSE_POINTS, device=audio.device))
    gain = torch.nn.functional.interpolate(coarse[:, None], size=n_bins, mode="linear", align_corners=True)[
        :, 0
    ]
    out = torch.fft.irfft(torch.fft.rfft(padded) * gain, n=n_fft)[:, PAD : PAD + width] * valid
    return torch.where(draw.active[:, None], out, audio)


def band_attenuation_db(response: Tensor, freqs_hz: Tensor, f_hz: float) -> Tensor:
    """`(batch,)` response at the bin nearest `f_hz`, in dB (tests and diagnostics)."""
    index = int(torch.argmin((freqs_hz - f_hz).abs()))
    return 20 * torch.log10(response[:, index].clamp(min=1e-12))
