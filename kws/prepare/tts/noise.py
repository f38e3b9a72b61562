"""Synthetic background noises made with numpy, for datasets that have no recordings of their own.

The TTS source writes one minute of each kind to `_background_noise_/` (so `--classes sub` can cut its
silence clips from them, as from Speech Commands' six recordings) and mixes short fresh draws into clips.
Every generator returns float64 noise with unit RMS; the caller sets the level.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from kws.audio import SAMPLE_RATE, float_to_int16, write_wav

NOISE_S = 60.0  # seconds per background recording
NOISE_SAMPLES = int(SAMPLE_RATE * NOISE_S)
NOISE_RMS_DBFS = -20.0  # level of the written recordings: well above int16 quantisation, far from clipping
SUBSONIC_HZ = (
    20.0  # coloured spectra are held flat below this, so brown noise does not drift like a DC offset
)

NoiseFn = Callable[[int, np.random.Generator], np.ndarray]


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.sqrt(np.mean(x**2))), 1e-12)


def _shaped(n: int, rng: np.random.Generator, gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """White Gaussian noise filtered in the frequency domain by `gain(freqs_hz)` (an amplitude response)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum *= gain(np.fft.rfftfreq(n, d=1.0 / SAMPLE_RATE))
    return _unit_rms(np.fft.irfft(spectrum, n=n))


def coloured(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise whose power falls as 1/f**exponent: 0 white, 1 pink (-3 dB/octave), 2 brown (-6 dB/octave)."""
    return _shaped(n, rng, lambda f: np.maximum(f, SUBSONIC_HZ) ** (-exponent / 2))


def white(n: int, rng: np.random.Generator) -> np.ndarray:
    return _unit_rms(rng.standard_normal(n))


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    return coloured(n, rng, 1.0)


def brown(n: int, rng: np.random.Generator) -> np.ndarray:
    return coloured(n, rng, 2.0)


def band_limited(n: int, rng: np.random.Generator, low_hz: float, high_hz: float) -> np.ndarray:
    """White noise kept only between `low_hz` and `high_hz`, with raised-cosine edges an octave-ish wide
    (a brick-wall band rings audibly)."""

    def gain(f: np.ndarray) -> np.ndarray:
        rise = np.clip(np.log2(np.maximum(f, 1e-3) / (low_hz / 2)), 0.0, 1.0)
        fall = np.clip(np.log2(high_hz * 1.5 / np.maximum(f, 1e-3)) / np.log2(1.5), 0.0, 1.0)
        return np.sin(rise * np.pi / 2) ** 2 * np.sin(fall * np.pi / 2) ** 2

    return _shaped(n, rng, gain)


def modulated(n: int, rng: np.random.Generator, rate_hz: float = 0.7, depth: float = 0.8) -> np.ndarray:
    """Pink noise under a slow amplitude swell (waves, traffic, a fan with a beat); random phase."""
    t = np.arange(n) / SAMPLE_RATE
    envelope = 1.0 + depth * np.sin(2 * np.pi * rate_hz * t + rng.uniform(0, 2 * np.pi))
    return _unit_rms(pink(n, rng) * envelope)


# Name -> generator. The names become the file names in `_background_noise_/`.
NOISE_KINDS: dict[str, NoiseFn] = {
    "white_noise": white,
    "pink_noise": pink,
    "brown_noise": brown,
    "low_rumble": lambda n, rng: band_limited(n, rng, 40.0, 400.0),
    "high_hiss": lambda n, rng: band_limited(n, rng, 3000.0, 7000.0),
    "modulated_pink": lambda n, rng: modulated(n, rng),
}


def make_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` samples of the named noise, float64 with unit RMS."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; expected one of {sorted(NOISE_KINDS)}")
    return NOISE_KINDS[kind](n, rng)


def noise_seed(seed: int, kind: str) -> np.random.SeedSequence:
    # Seeded by kind name as well as seed, so each recording is independent of the others and of their order.
    return np.random.SeedSequence([seed, *kind.encode()])


def write_background_noises(folder: Path, seed: int, n_samples: int = NOISE_SAMPLES) -> list[Path]:
    """Write one recording of every kind in NOISE_KINDS to `folder/<kind>.wav` (16 kHz int16 PCM)."""
    level = 10 ** (NOISE_RMS_DBFS / 20)
    paths = []
    for kind in NOISE_KINDS:
        rng = np.random.default_rng(noise_seed(seed, kind))
        path = Path(folder) / f"{kind}.wav"
        write_wav(path, float_to_int16(make_noise(kind, n_samples, rng) * level))
        paths.append(path)
    return paths
