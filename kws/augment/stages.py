"""The robustness stages on the waveform (issue 7), composed in the configured order: speed, gain,
background noise, room, channel. `WaveAugment` runs them before the recipe's time shift and white noise.

Every stage draws its per-clip parameters for the whole batch from the step's generator, then applies them
in one batched call; a stage acts on a share `<stage>.prob` of the clips and only in training mode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from kws.augment.channel import apply_channel, draw_channel
from kws.augment.config import AugmentConfig
from kws.augment.noise import crop_noise, draw_noise, find_noise_dir, load_noise_bank, mix_at_snr
from kws.augment.perturb import apply_gain, apply_speed, draw_gain, draw_speed
from kws.augment.room import apply_room, draw_room, impulse_responses

D = TypeVar("D")
NOISE_MIN_S = 1.0  # recordings shorter than a clip cannot give a full crop


def take(draw: D, index: Tensor) -> D:
    """The draws of the clips at `index` (every tensor field of a draw dataclass is per clip)."""
    fields: dict[str, Any] = {f.name: getattr(draw, f.name)[index] for f in dataclasses.fields(draw)}  # type: ignore[arg-type]
    return type(draw)(**fields)


def on_active(
    audio: Tensor, lengths: Tensor, active: Tensor, fn: Callable[[Tensor, Tensor, Tensor], Tensor]
) -> Tensor:
    """`fn(audio[index], lengths[index], index)` for the clips where `active`, the others unchanged.

    Computing only the chosen share saves most of an expensive stage at probability 0.5; still one batched
    call. (`nonzero` waits for the device; one short sync per stage, cheaper than FFTs of unused clips.)
    """
    index = active.nonzero().squeeze(1)
    if index.numel() == 0:
        return audio
    out = audio.clone()
    out[index] = fn(audio[index], lengths[index], index)
    return out


class WaveStages(nn.Module):
    """`forward(audio (batch, samples), lengths (batch,), generator)` -> audio of the same shape.

    `dataset_dir` resolves `noise.dir: auto` (the train manifest's folder). The noise recordings are a
    non-persistent buffer: they follow `.to(device)` but stay out of checkpoints.
    """

    noise_bank: Tensor
    noise_starts: Tensor
    noise_lengths: Tensor

    def __init__(self, cfg: AugmentConfig, sample_rate: int, dataset_dir: Path | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.sample_rate = sample_rate
        stages = cfg.stages()
        self.order = tuple(s for s in cfg.order if stages[s].prob > 0)
        # stage name -> (audio, lengths, generator) -> audio; `cfg.order` is checked against WAVE_STAGES
        self.runners: dict[str, Callable[[Tensor, Tensor, torch.Generator | None], Tensor]] = {
            "speed": self._speed,
            "gain": self._gain,
            "noise": self._noise,
            "room": self._room,
            "channel": self._channel,
        }
        bank = (torch.zeros(0), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
        if "noise" in self.order and cfg.noise.dir:
            folder = find_noise_dir(cfg.noise.dir, dataset_dir)
            bank = load_noise_bank(folder, int(NOISE_MIN_S * sample_rate))
        self.register_buffer("noise_bank", bank[0], persistent=False)
        self.register_buffer("noise_starts", bank[1], persistent=False)
        self.register_buffer("noise_lengths", bank[2], persistent=False)

    @property
    def active(self) -> bool:
        return bool(self.order)

    def forward(self, audio: Tensor, lengths: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not self.training:
            return audio
        lengths = lengths.to(audio.device)
        for stage in self.order:
            audio = self.runners[stage](audio, lengths, generator)
        return audio

    def _speed(self, audio: Tensor, lengths: Tensor, generator: torch.Generator | None) -> Tensor:
        c = self.cfg.speed
        factors = draw_speed(audio.shape[0], c.range, c.prob, audio.device, generator)
        return on_active(audio, lengths, factors != 1, lambda a, n, i: apply_speed(a, n, factors[i]))

    def _gain(self, audio: Tensor, lengths: Tensor, generator: torch.Generator | None) -> Tensor:
        c = self.cfg.gain
        return apply_gain(audio, draw_gain(audio.shape[0], c.db, c.prob, audio.device, generator))

    def _noise(self, audio: Tensor, lengths: Tensor, generator: torch.Generator | None) -> Tensor:
        c = self.cfg.noise
        batch, width = audio.shape
        draw = draw_noise(batch, len(self.noise_lengths), c.snr_db, c.prob, audio.device, generator)

        def mix(a: Tensor, n: Tensor, i: Tensor) -> Tensor:
            d = take(draw, i)
            noise = crop_noise(self.noise_bank, self.noise_starts, self.noise_lengths, d, width)
            return mix_at_snr(a, n, noise.to(a.dtype), d.snr_db, d.active)

        return on_active(audio, lengths, draw.active, mix)

    def _room(self, audio: Tensor, lengths: Tensor, generator: torch.Generator | None) -> Tensor:
        c = self.cfg.room
        draw = draw_room(audio.shape[0], c.rt60_s, c.drr_db, c.prob, audio.device, generator)
        # the tail beyond the longest RT60 is below -60 dB: no need for longer responses
        n_taps = max(int(c.rt60_s[1] * self.sample_rate), 1)

        def reverberate(a: Tensor, n: Tensor, i: Tensor) -> Tensor:
            irs = impulse_responses(take(draw, i), n_taps, self.sample_rate, generator)  # only where used
            return apply_room(a, n, irs.to(a.dtype), draw.active[i])

        return on_active(audio, lengths, draw.active, reverberate)

    def _channel(self, audio: Tensor, lengths: Tensor, generator: torch.Generator | None) -> Tensor:
        c = self.cfg.channel
        draw = draw_channel(
            audio.shape[0], c.low_hz, c.high_hz, c.peaks, c.peak_db, c.prob, audio.device, generator
        )
        return on_active(
            audio, lengths, draw.active, lambda a, n, i: apply_channel(a, n, take(draw, i), self.sample_rate)
        )
