"""A tiny synthetic keyword dataset for tests: a few classes of tones and chirps as 16 kHz wav files plus
train/validation manifests. Deterministic for a seed; a few hundred clips take well under a second."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kws.audio import SAMPLE_RATE, float_to_int16, write_wav
from kws.manifest import Entry, write_manifest

# label -> (start Hz, end Hz): steady tones and rising/falling chirps, easy to tell apart from MFCCs.
CLASSES: dict[str, tuple[float, float]] = {
    "down": (2400.0, 400.0),
    "high": (2400.0, 2400.0),
    "low": (400.0, 400.0),
    "up": (400.0, 2400.0),
}


def synth_clip(rng: np.random.Generator, f_start: float, f_end: float) -> np.ndarray:
    """One clip (int16, 0.5-1.0 s): a chirp with jittered pitch, level and onset, in faint noise."""
    n = int(rng.uniform(0.5, 1.0) * SAMPLE_RATE)
    jitter = rng.uniform(0.9, 1.1)
    dur = rng.uniform(0.3, 0.45)  # seconds of sound within the clip
    n_sound = int(dur * SAMPLE_RATE)
    t = np.arange(n_sound) / SAMPLE_RATE
    freq = jitter * (f_start + (f_end - f_start) * t / dur)
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE
    tone = np.sin(phase) * np.hanning(n_sound) * rng.uniform(0.2, 0.7)
    audio = rng.normal(0.0, 0.003, n)
    onset = int(rng.integers(0, n - n_sound + 1))
    audio[onset : onset + n_sound] += tone
    return float_to_int16(audio)


def make_tiny_dataset(
    root: Path,
    n_train: int = 24,
    n_val: int = 8,
    seed: int = 0,
    classes: dict[str, tuple[float, float]] | None = None,
) -> dict[str, Path]:
    """Write `root/<label>/<split>_<k>.wav` and `root/{train,validation}_manifest.json` (returned)."""
    classes = classes or CLASSES
    rng = np.random.default_rng(seed)
    manifests = {}
    for split, n in (("train", n_train), ("validation", n_val)):
        entries = []
        for label, (f0, f1) in classes.items():
            for k in range(n):
                path = Path(root) / label / f"{split}_{k}.wav"
                clip = synth_clip(rng, f0, f1)
                write_wav(path, clip)
                entries.append(Entry(str(path.resolve()), len(clip) / SAMPLE_RATE, label))
        manifests[split] = Path(root) / f"{split}_manifest.json"
        write_manifest(manifests[split], entries)
    return manifests
