"""A detector that can be trained in seconds, and recordings with known events for it.

Keywords are chirps (`up` rises, `down` falls); `unknown` is steady tones; `silence` is faint noise. A model
trained on them (`train_tone_detector`) tells them apart reliably, so a recording made by placing such clips
at known times (`tone_stream`) has known right answers for `kws detect` and stream evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kws.audio import SAMPLE_RATE, float_to_int16, write_wav
from kws.manifest import Entry, write_manifest
from tests.helpers import SMOKE, kws
from tests.helpers.tiny_dataset import synth_clip

KEYWORDS = {"up": (400.0, 2400.0), "down": (2400.0, 400.0)}
UNKNOWN_TONES = ((700.0, 700.0), (1500.0, 1500.0), (2800.0, 2800.0))
NOISE_STD = 0.003  # the faint noise under every clip and stream


def _silence_clip(rng: np.random.Generator) -> np.ndarray:
    return float_to_int16(rng.normal(0.0, NOISE_STD * rng.uniform(0.5, 3.0), SAMPLE_RATE))


def make_tone_dataset(root: Path, n_per_class: int = 24, seed: int = 0) -> dict[str, Path]:
    """`root/{train,validation}_manifest.json` over up, down, unknown and silence clips."""
    rng = np.random.default_rng(seed)
    manifests = {}
    for split, n in (("train", n_per_class), ("validation", max(4, n_per_class // 4))):
        entries = []
        for k in range(n):
            clips = {label: synth_clip(rng, *tones) for label, tones in KEYWORDS.items()}
            clips["unknown"] = synth_clip(rng, *UNKNOWN_TONES[k % len(UNKNOWN_TONES)])
            clips["silence"] = _silence_clip(rng)
            for label, clip in clips.items():
                path = Path(root) / label / f"{split}_{k}.wav"
                write_wav(path, clip)
                entries.append(Entry(str(path.resolve()), len(clip) / SAMPLE_RATE, label))
        manifests[split] = Path(root) / f"{split}_manifest.json"
        write_manifest(manifests[split], entries)
    return manifests


def train_tone_detector(root: Path) -> Path:
    """Train the smoke model on the tone dataset (about half a minute on 2 cores); its best.pt."""
    manifests = make_tone_dataset(root / "data")
    run = root / "run"
    proc = kws(
        "train", "--config", SMOKE, "--train-manifest", manifests["train"], "--val-manifest",
        manifests["validation"], "--run-dir", run, "--epochs", "12", "--device", "cpu",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return run / "best.pt"


@dataclass(frozen=True)
class Placed:
    label: str
    start_s: float  # of the sound itself
    end_s: float


def tone_stream(path: Path, seed: int, duration_s: float, events: list[tuple[str, float]]) -> list[Placed]:
    """Write a recording of `duration_s` of faint noise with a clip of `label` whose sound starts at each
    `(label, time_s)`; labels are keywords or "unknown". Returns where the sounds really are."""
    rng = np.random.default_rng(seed)
    audio = rng.normal(0.0, NOISE_STD, int(duration_s * SAMPLE_RATE))
    placed = []
    for i, (label, at_s) in enumerate(events):
        tones = KEYWORDS[label] if label in KEYWORDS else UNKNOWN_TONES[i % len(UNKNOWN_TONES)]
        n_sound = int(0.4 * SAMPLE_RATE)
        t = np.arange(n_sound) / SAMPLE_RATE
        freq = tones[0] + (tones[1] - tones[0]) * t / 0.4
        sound = np.sin(2 * np.pi * np.cumsum(freq) / SAMPLE_RATE) * np.hanning(n_sound) * 0.4
        start = int(at_s * SAMPLE_RATE)
        audio[start : start + n_sound] += sound
        placed.append(Placed(label, at_s, at_s + 0.4))
    write_wav(path, float_to_int16(audio))
    return placed
