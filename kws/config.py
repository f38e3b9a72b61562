"""The run configuration: frozen dataclasses loaded from YAML, one section per component.

Every section has the recipe's defaults (RECIPE.md); a YAML file only lists what it changes. Unknown keys and
values of the wrong type are `ConfigError`s naming the dotted key and the file. YAML lists become tuples, so
a `Config` is hashable and cannot be changed by accident; `dataclasses.replace` makes modified copies.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kws.errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    train_manifest: str | None = None
    val_manifests: tuple[str, ...] = ()
    labels: tuple[str, ...] | None = None  # None: the sorted labels of the train manifest
    cache_dir: str | None = None  # None: <run_dir>/cache
    on_device: bool = True  # move the packed train set to the GPU when it fits


@dataclass(frozen=True)
class FeaturesConfig:
    sample_rate: int = 16000  # Hz
    n_mfcc: int = 64
    n_mels: int = 64
    n_fft: int = 512  # samples
    win_length: int = 400  # samples (25 ms)
    hop_length: int = 160  # samples (10 ms): 1 s -> 101 frames
    f_min: float = 0.0  # Hz
    f_max: float | None = None  # None: sample_rate / 2
    n_frames: int = 128  # crop/pad target
    normalize: str | None = None  # None (the recipe) | "per_utterance" (mean/variance over time)
    # Vocal-tract-length perturbation (issue 7), training only: each clip's mel filterbank is read at
    # frequencies warped by a factor ~ U(low, high) (VTLP). None (the recipe) disables it.
    vtlp_range: tuple[float, float] | None = None
    vtlp_prob: float = 1.0  # share of clips warped when vtlp_range is set


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
    # Robustness stages (issue 7, kws/augment/stages.py), all off in the recipe: the waveform stages named in
    # `order` run in that order before the time shift and white noise, each on a share `<stage>_prob` of
    # the clips. Stages: speed, gain, noise, room, channel.
    order: tuple[str, ...] = ()
    speed_prob: float = 0.0
    speed_range: tuple[float, float] = (0.8, 1.25)  # resampling factor (> 1: faster and higher)
    gain_prob: float = 0.0
    gain_db: tuple[float, float] = (-10.0, 10.0)
    noise_prob: float = 0.0
    noise_snr_db: tuple[float, float] = (0.0, 30.0)  # over each clip's valid samples
    noise_dir: str | None = None  # folder of noise wavs; "auto": the train manifest's _background_noise_
    room_prob: float = 0.0
    room_rt60_s: tuple[float, float] = (0.1, 0.7)
    room_drr_db: tuple[float, float] = (-3.0, 15.0)  # direct-to-reverberant energy ratio
    channel_prob: float = 0.0
    channel_low_hz: tuple[float, float] = (50.0, 400.0)  # high-pass corner, log-uniform
    channel_high_hz: tuple[float, float] = (3000.0, 8000.0)  # low-pass corner, log-uniform
    channel_peaks: int = 2  # peaking EQ bands per clip
    channel_peak_db: float = 8.0  # peak gains ~ U(-x, x) dB


@dataclass(frozen=True)
class BlockConfig:
    filters: int
    repeat: int = 1
    kernel: int = 1
    stride: int = 1
    dilation: int = 1
    dropout: float = 0.0
    residual: bool = False
    separable: bool = False


def _matchboxnet_blocks(repeat: int) -> tuple[BlockConfig, ...]:
    """The recipe's encoder: prologue, B1-B3 (R sub-blocks each), two epilogues (RECIPE.md, Model)."""
    return (
        BlockConfig(filters=128, kernel=11, separable=True),
        BlockConfig(filters=64, repeat=repeat, kernel=13, residual=True, separable=True),
        BlockConfig(filters=64, repeat=repeat, kernel=15, residual=True, separable=True),
        BlockConfig(filters=64, repeat=repeat, kernel=17, residual=True, separable=True),
        BlockConfig(filters=128, kernel=29, dilation=2, separable=True),
        BlockConfig(filters=128, kernel=1),
    )


@dataclass(frozen=True)
class ModelConfig:
    name: str = "matchboxnet_3x1x64"
    blocks: tuple[BlockConfig, ...] = field(default_factory=lambda: _matchboxnet_blocks(1))
    # "all": average over every frame, as the recipe (padding included); "valid": only frames t < length.
    pool: str = "all"


@dataclass(frozen=True)
class OptimConfig:
    name: str = "novograd"
    lr: float = 0.05
    betas: tuple[float, float] = (0.95, 0.5)
    weight_decay: float = 0.001
    eps: float = 1e-8


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = "hold_poly"  # "cosine" | "hold_poly"
    warmup_ratio: float = 0.05
    hold_ratio: float = 0.45
    min_lr: float = 0.001
    power: float = 2.0


@dataclass(frozen=True)
class TrainerConfig:
    epochs: int = 200
    max_steps: int | None = None
    batch_size: int = 128  # per process
    precision: str = "32"  # "32" | "bf16" | "16"; the recipe configs say bf16 (the reference: fp16 AMP)
    seed: int = 0
    device: str = "auto"
    val_every_n_steps: int | None = None
    log_every_n_steps: int = 50
    compile: bool = False


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


# Allowed values of the string fields that select behaviour; anything else is a typo worth an error.
_CHOICES: dict[str, tuple[str | None, ...]] = {
    "features.normalize": (None, "per_utterance"),
    "model.pool": ("all", "valid"),
    "optim.name": ("novograd",),
    "schedule.name": ("cosine", "hold_poly"),
    "trainer.precision": ("32", "bf16", "16"),
}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check `value` against the annotation `tp`, turning lists into tuples and ints into floats."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key, source)
            except ConfigError:
                pass
        raise ConfigError(f"{source}: `{key}` must be {_type_name(tp)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: `{key}` must be a list ({_type_name(tp)}), got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{source}: `{key}` must have {len(args)} items, got {len(value)}: {value!r}")
        return tuple(
            _convert(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):  # type: ignore[arg-type]
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: `{key}` must be a mapping, got {value!r}")
        return _build(tp, value, key, source)
    # bool is a subclass of int in Python: refuse `true` for an int and `1` for a bool.
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # `precision: 16` in YAML means the string "16"
    raise ConfigError(f"{source}: `{key}` must be {_type_name(tp)}, got {value!r}")


def _build(cls: Any, data: Mapping[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in fields:
            known = ", ".join(fields)
            raise ConfigError(f"{source}: unknown key `{key}`; known keys here: {known}")
        kwargs[name] = _convert(value, hints[name], key, source)
        choices = _CHOICES.get(key)
        if choices is not None and kwargs[name] not in choices:
            raise ConfigError(f"{source}: `{key}` must be one of {list(choices)}, got {kwargs[name]!r}")
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{source}: `{prefix}` is missing the required key(s) {', '.join(missing)}")
    return cls(**kwargs)


def config_from_dict(d: Mapping[str, Any], source: str = "<dict>") -> Config:
    """Build a `Config` from nested mappings; missing keys keep their defaults, errors name key + source."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"{source}: expected a mapping of sections at the top, got {type(d).__name__}")
    cfg: Config = _build(Config, d, "", source)
    _check_robust(cfg, source)
    return cfg


WAVE_STAGES = ("speed", "gain", "noise", "room", "channel")


def _check_robust(cfg: Config, source: str) -> None:
    """Ranges, probabilities and stage order of the issue-7 augmentations, as ConfigErrors naming the key."""
    aug, feat = cfg.augment, cfg.features
    for i, stage in enumerate(aug.order):
        if stage not in WAVE_STAGES:
            raise ConfigError(
                f"{source}: `augment.order[{i}]` must be one of {list(WAVE_STAGES)}, got {stage!r}"
            )
    if len(set(aug.order)) != len(aug.order):
        raise ConfigError(f"{source}: `augment.order` names a stage twice: {list(aug.order)}")
    probs = {f"augment.{s}_prob": getattr(aug, f"{s}_prob") for s in WAVE_STAGES}
    probs["features.vtlp_prob"] = feat.vtlp_prob
    for key, p in probs.items():
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"{source}: `{key}` must be a probability in [0, 1], got {p}")
    for stage in WAVE_STAGES:
        if getattr(aug, f"{stage}_prob") > 0 and stage not in aug.order:
            raise ConfigError(
                f"{source}: `augment.{stage}_prob` is {getattr(aug, f'{stage}_prob')} but `{stage}` is not "
                f"in `augment.order` {list(aug.order)}; add it there to say when it runs"
            )
    ranges: dict[str, tuple[float, float] | None] = {
        "augment.speed_range": aug.speed_range,
        "augment.gain_db": aug.gain_db,
        "augment.noise_snr_db": aug.noise_snr_db,
        "augment.room_rt60_s": aug.room_rt60_s,
        "augment.room_drr_db": aug.room_drr_db,
        "augment.channel_low_hz": aug.channel_low_hz,
        "augment.channel_high_hz": aug.channel_high_hz,
        "features.vtlp_range": feat.vtlp_range,
    }
    positive = {
        "augment.speed_range",
        "augment.room_rt60_s",
        "augment.channel_low_hz",
        "augment.channel_high_hz",
        "features.vtlp_range",
    }
    for key, r in ranges.items():
        if r is None:
            continue
        if r[0] > r[1]:
            raise ConfigError(f"{source}: `{key}` must be [low, high] with low <= high, got {list(r)}")
        if key in positive and r[0] <= 0:
            raise ConfigError(f"{source}: `{key}` must be positive, got {list(r)}")
    if aug.channel_high_hz[1] > feat.sample_rate / 2:
        raise ConfigError(
            f"{source}: `augment.channel_high_hz` must stay below the Nyquist frequency "
            f"{feat.sample_rate / 2:g} Hz, got {list(aug.channel_high_hz)}"
        )
    if aug.channel_peaks < 0 or aug.channel_peak_db < 0:
        raise ConfigError(f"{source}: `augment.channel_peaks` and `augment.channel_peak_db` must be >= 0")
    if "noise" in aug.order and aug.noise_prob > 0 and not aug.noise_dir:
        raise ConfigError(
            f"{source}: `augment.noise_prob` is {aug.noise_prob} but `augment.noise_dir` is not set; give a "
            "folder of 16 kHz mono noise wavs, or `auto` for the train manifest's _background_noise_ folder"
        )


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dicts and lists (YAML/JSON-able); `config_from_dict` turns it back into `cfg`."""
    result: dict[str, Any] = _plain(cfg)
    return result


def apply_overrides(cfg: Config, overrides: Sequence[str], source: str = "--set") -> Config:
    """Apply `section.key=value` overrides; the value is read as YAML and typed by the dataclass field.

    `trainer.max_steps=none` sets an optional field to None; `optim.betas=[0.98,0.5]` sets a tuple.
    """
    d = config_to_dict(cfg)
    for item in overrides:
        path, sep, text = item.partition("=")
        keys = path.strip().split(".")
        if not sep or len(keys) != 2 or not all(keys):
            raise ConfigError(f"{source}: expected `section.key=value`, got {item!r}")
        section, name = keys
        if section not in d:
            raise ConfigError(f"{source}: unknown section `{section}` in {item!r}; known: {', '.join(d)}")
        if name not in d[section]:
            known = ", ".join(d[section])
            raise ConfigError(f"{source}: unknown key `{section}.{name}` in {item!r}; known here: {known}")
        try:
            # `none` is a string to YAML; on the command line it means None, like `null`.
            value = None if text.strip().lower() in ("", "none", "null", "~") else yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: cannot read the value of `{path}` as YAML: {exc}") from None
        d[section][name] = value
    return config_from_dict(d, source)


def load_config(path: Path, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config file, then apply `section.key=value` overrides."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    cfg = config_from_dict(data if data is not None else {}, str(path))
    return apply_overrides(cfg, overrides) if overrides else cfg
