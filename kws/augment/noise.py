"""Mixing background noise recordings into clips at a random signal-to-noise ratio, batched.

The recordings (Speech Commands' `_background_noise_/*.wav`, or the TTS source's generated noises) are
read once into one flat tensor; a batch's crops are gathered from it with index arithmetic, so there is no
per-clip Python loop and the bank moves to the training device with its module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kws.audio import INT16_SCALE, NOISE_DIR, read_wav, wav_frames
from kws.augment.perturb import chosen, uniform
from kws.errors import ConfigError
from kws.masks import valid_mask

POWER_FLOOR = 1e-10  # mean square of a silent crop: keeps the SNR scale finite


def find_noise_dir(noise_dir: str, dataset_dir: Path | None) -> Path:
    """`noise_dir` as a folder: "auto" is `dataset_dir/_background_noise_` (the train manifest's folder)."""
    if noise_dir == "auto":
        if dataset_dir is None:
            raise ConfigError(
                "`augment.noise.dir: auto` needs the train manifest's folder, which this caller did not "
                "give; set augment.noise.dir to the _background_noise_ folder itself"
            )
        return Path(dataset_dir) / NOISE_DIR
    return Path(noise_dir).expanduser()


def load_noise_bank(folder: Path, min_samples: int) -> tuple[Tensor, Tensor, Tensor]:
    """Every `*.wav` of `folder` at least `min_samples` long -> (flat float32 samples, starts, lengths).

    Raises ConfigError when the folder is missing or holds no usable recording.
    """
    if not folder.is_dir():
        raise ConfigError(
            f"noise folder {folder} does not exist; set augment.noise.dir to a folder of noise wavs"
        )
    files = sorted(p for p in folder.glob("*.wav") if wav_frames(p) >= min_samples)
    if not files:
        raise ConfigError(
            f"noise folder {folder} has no 16 kHz mono .wav of at least {min_samples} samples; "
            "set augment.noise.dir to a folder that has some"
        )
    clips = [read_wav(p).astype(np.float32) / INT16_SCALE for p in files]
    lengths = torch.tensor([len(c) for c in clips], dtype=torch.long)
    starts = torch.cumsum(lengths, 0) - lengths
    return torch.from_numpy(np.concatenate(clips)), starts, lengths


@dataclass(frozen=True)
class NoiseDraw:
    """Per-clip draws: which recording, where its crop starts (0..1 of the room left), SNR, and whether."""

    recording: Tensor  # (batch,) long
    offset: Tensor  # (batch,) float in [0, 1)
    snr_db: Tensor  # (batch,)
    active: Tensor  # (batch,) bool


def draw_noise(
    batch: int,
    n_recordings: int,
    snr_db: tuple[float, float],
    prob: float,
    device: torch.device,
    generator: torch.Generator | None,
) -> NoiseDraw:
    recording = torch.randint(n_recordings, (batch,), generator=generator, device=device)
    offset = torch.rand(batch, generator=generator, device=device)
    snr = uniform(*snr_db, batch, device, generator)
    return NoiseDraw(recording, offset, snr, chosen(prob, batch, device, generator))


def crop_noise(bank: Tensor, starts: Tensor, lengths: Tensor, draw: NoiseDraw, width: int) -> Tensor:
    """`(batch, width)` crops of the recordings picked by `draw`, gathered from the flat bank. A recording
    shorter than `width` (a clip longer than the shortest noise) is looped, never read past its end."""
    length = lengths[draw.recording]
    room = (length - width).clamp(min=0)
    offset = (draw.offset * (room + 1).to(draw.offset.dtype)).floor().long().clamp(max=room)
    within = (offset[:, None] + torch.arange(width, device=bank.device)) % length[:, None]
    return bank[starts[draw.recording][:, None] + within]


def mix_at_snr(audio: Tensor, lengths: Tensor, noise: Tensor, snr_db: Tensor, active: Tensor) -> Tensor:
    """Add `noise` to each active clip scaled so that signal power / noise power = 10^(snr/10), both powers
    measured over the clip's valid samples (the padding gets no noise). A silent clip gets no noise: its SNR
    is undefined and the recipe's white noise already covers silence."""
    valid = valid_mask(lengths.to(audio.device), audio.shape[1], audio.dtype)
    n = valid.sum(1).clamp(min=1)
    signal_power = (audio.square() * valid).sum(1) / n
    noise_power = ((noise.square() * valid).sum(1) / n).clamp(min=POWER_FLOOR)
    scale = torch.sqrt(signal_power / (noise_power * torch.pow(10.0, snr_db.to(audio.dtype) / 10)))
    scale = torch.where(active, scale, torch.zeros_like(scale))
    return audio + noise * (scale[:, None] * valid)
