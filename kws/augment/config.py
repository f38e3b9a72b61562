"""The `augment` section of the run config: the recipe's settings, then one small section per robustness
stage (issue 7), each with its own range checks. Torch-free: `kws.config` imports it.

```yaml
augment:
  order: [speed, gain, noise, room, channel]   # the waveform stages that run, in this order
  speed: {prob: 0.5, range: [0.8, 1.25]}
  noise: {prob: 0.3, snr_db: [5, 30], dir: auto}
```
Configs and checkpoints written before the sections existed spell the keys flat (`speed_prob`,
`room_rt60_s`); `upgrade_flat_keys` reads them into the sections.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kws.checks import at_least, probability, require, span
from kws.errors import ConfigError

WAVE_STAGES = ("speed", "gain", "noise", "room", "channel")


class StageConfig(Protocol):
    """What every waveform stage's section has: the share of clips it acts on, and its range checks."""

    @property
    def prob(self) -> float: ...

    def check(self, key: str) -> None: ...


@dataclass(frozen=True)
class SpeedConfig:
    """Speed (tempo and pitch together) by resampling, kws/augment/perturb.py."""

    prob: float = 0.0
    range: tuple[float, float] = (0.8, 1.25)  # resampling factor, log-uniform (> 1: faster and higher)

    def check(self, key: str) -> None:
        probability(f"{key}.prob", self.prob)
        span(f"{key}.range", self.range, positive=True)


@dataclass(frozen=True)
class GainConfig:
    """Random gain, clipped to [-1, 1], kws/augment/perturb.py."""

    prob: float = 0.0
    db: tuple[float, float] = (-10.0, 10.0)

    def check(self, key: str) -> None:
        probability(f"{key}.prob", self.prob)
        span(f"{key}.db", self.db)


@dataclass(frozen=True)
class NoiseConfig:
    """Background noise recordings mixed in at a random SNR, kws/augment/noise.py."""

    prob: float = 0.0
    snr_db: tuple[float, float] = (0.0, 30.0)  # over each clip's valid samples
    dir: str | None = None  # folder of noise wavs; "auto": the train manifest's _background_noise_

    def check(self, key: str) -> None:
        probability(f"{key}.prob", self.prob)
        span(f"{key}.snr_db", self.snr_db)
        if self.prob > 0 and not self.dir:
            raise ConfigError(
                f"`{key}.prob` is {self.prob} but `{key}.dir` is not set; give a folder of 16 kHz mono noise "
                "wavs, or `auto` for the train manifest's _background_noise_ folder"
            )


@dataclass(frozen=True)
class RoomConfig:
    """Simulated rooms (synthetic impulse responses), kws/augment/room.py."""

    prob: float = 0.0
    rt60_s: tuple[float, float] = (0.1, 0.7)
    drr_db: tuple[float, float] = (-3.0, 15.0)  # direct-to-reverberant energy ratio

    def check(self, key: str) -> None:
        probability(f"{key}.prob", self.prob)
        span(f"{key}.rt60_s", self.rt60_s, positive=True)
        span(f"{key}.drr_db", self.drr_db)


@dataclass(frozen=True)
class ChannelConfig:
    """Microphone colouring: band limits and peaking EQ, kws/augment/channel.py."""

    prob: float = 0.0
    low_hz: tuple[float, float] = (50.0, 400.0)  # high-pass corner, log-uniform
    high_hz: tuple[float, float] = (3000.0, 8000.0)  # low-pass corner, log-uniform
    peaks: int = 2  # peaking EQ bands per clip
    peak_db: float = 8.0  # peak gains ~ U(-x, x) dB

    def check(self, key: str) -> None:
        probability(f"{key}.prob", self.prob)
        span(f"{key}.low_hz", self.low_hz, positive=True)
        span(f"{key}.high_hz", self.high_hz, positive=True)
        at_least(f"{key}.peaks", self.peaks, 0)
        at_least(f"{key}.peak_db", self.peak_db, 0)


@dataclass(frozen=True)
class AugmentConfig:
    time_shift_ms: float = 5.0  # shift ~ U(-x, x) ms; 0 disables
    white_noise_db: tuple[int, int] | None = (-90, -47)  # integer dB, both ends included; None disables
    cutout_rects: int = 5  # SpecCutout rectangles per clip; 0 disables
    cutout_freq: int = 15  # widest rectangle, MFCC bins
    cutout_time: int = 25  # widest rectangle, frames
    freq_masks: int = 2  # SpecAugment; 0 disables
    freq_width: int = 15
    time_masks: int = 2
    time_width: int = 25
    # Mixup (off in the recipe): every batch's features are mixed with the batch's own clips in another
    # order, weights Beta(a, a), and the loss mixed alike (kws.train.step).
    mixup_alpha: float = 0.0
    # Robustness stages (issue 7, kws/augment/stages.py), all off in the recipe: the waveform stages named in
    # `order` run in that order before the time shift and white noise, each on a share `<stage>.prob` of
    # the clips.
    order: tuple[str, ...] = ()
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    gain: GainConfig = field(default_factory=GainConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    room: RoomConfig = field(default_factory=RoomConfig)
    channel: ChannelConfig = field(default_factory=ChannelConfig)

    def stages(self) -> dict[str, StageConfig]:
        """Every waveform stage's section by name, in WAVE_STAGES order."""
        return {
            "speed": self.speed,
            "gain": self.gain,
            "noise": self.noise,
            "room": self.room,
            "channel": self.channel,
        }

    def check(self, key: str, sample_rate: int) -> None:
        at_least(f"{key}.time_shift_ms", self.time_shift_ms, 0)
        span(f"{key}.white_noise_db", self.white_noise_db)
        for name in ("cutout_rects", "freq_masks", "time_masks"):  # counts
            at_least(f"{key}.{name}", getattr(self, name), 0)
        for name in ("cutout_freq", "cutout_time", "freq_width", "time_width"):  # widths
            at_least(f"{key}.{name}", getattr(self, name), 0)
        at_least(f"{key}.mixup_alpha", self.mixup_alpha, 0)
        for i, stage in enumerate(self.order):
            require(stage in WAVE_STAGES, f"{key}.order[{i}]", f"one of {list(WAVE_STAGES)}", stage)
        if len(set(self.order)) != len(self.order):
            raise ConfigError(f"`{key}.order` names a stage twice: {list(self.order)}")
        for name, stage_cfg in self.stages().items():
            if stage_cfg.prob > 0 and name not in self.order:
                raise ConfigError(
                    f"`{key}.{name}.prob` is {stage_cfg.prob} but `{name}` is not in `{key}.order` "
                    f"{list(self.order)}; add it there to say when it runs"
                )
            stage_cfg.check(f"{key}.{name}")
        nyquist = sample_rate / 2
        require(
            self.channel.high_hz[1] <= nyquist,
            f"{key}.channel.high_hz",
            f"at most the Nyquist frequency {nyquist:g} Hz (features.sample_rate / 2)",
            self.channel.high_hz,
        )


# The flat spelling of configs and checkpoints written before the per-stage sections: old key -> (stage, key).
FLAT_KEYS: dict[str, tuple[str, str]] = {
    "speed_prob": ("speed", "prob"),
    "speed_range": ("speed", "range"),
    "gain_prob": ("gain", "prob"),
    "gain_db": ("gain", "db"),
    "noise_prob": ("noise", "prob"),
    "noise_snr_db": ("noise", "snr_db"),
    "noise_dir": ("noise", "dir"),
    "room_prob": ("room", "prob"),
    "room_rt60_s": ("room", "rt60_s"),
    "room_drr_db": ("room", "drr_db"),
    "channel_prob": ("channel", "prob"),
    "channel_low_hz": ("channel", "low_hz"),
    "channel_high_hz": ("channel", "high_hz"),
    "channel_peaks": ("channel", "peaks"),
    "channel_peak_db": ("channel", "peak_db"),
}


def upgrade_flat_keys(augment: Mapping[str, Any], key: str = "augment") -> dict[str, Any]:
    """The `augment` mapping with old flat keys (`speed_prob: 0.5`) moved into their stage's section
    (`speed: {prob: 0.5}`); a mapping in the new layout comes back equal. A key spelt both ways is an error.
    """
    result: dict[str, Any] = {k: v for k, v in augment.items() if k not in FLAT_KEYS}
    for old, value in augment.items():
        if old not in FLAT_KEYS:
            continue
        stage, name = FLAT_KEYS[old]
        section = result.get(stage, {})
        if not isinstance(section, Mapping):
            return dict(augment)  # let the schema report `augment.<stage>` as not a mapping
        if name in section:
            raise ConfigError(
                f"`{key}.{old}` and `{key}.{stage}.{name}` are the same setting (old and new spelling); "
                f"keep only `{key}.{stage}.{name}`"
            )
        result[stage] = {**section, name: value}
    return result
