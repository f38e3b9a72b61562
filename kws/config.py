"""The run configuration: frozen dataclasses loaded from YAML, one section per component.

Every section has the recipe's defaults (RECIPE.md); a YAML file only lists what it changes. Unknown keys,
values of the wrong type and values out of range (each section's `check`) are `ConfigError`s naming the
dotted key and the file. YAML lists become tuples, so a `Config` is hashable and cannot be changed by
accident; `dataclasses.replace` makes modified copies.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kws.audio import HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE, WIN_LENGTH
from kws.augment.config import FLAT_KEYS, AugmentConfig, upgrade_flat_keys  # augment: beside its stages
from kws.checks import above, at_least, probability, require, span
from kws.errors import ConfigError
from kws.files import read_text
from kws.train.config import InitConfig, TrainerConfig  # the train stage's sections, beside it
from kws.yaml_text import parse_yaml


@dataclass(frozen=True)
class DataConfig:
    train_manifest: str | None = None
    val_manifests: tuple[str, ...] = ()
    labels: tuple[str, ...] | None = None  # None: the sorted labels of the train manifest
    cache_dir: str | None = None  # None: <run_dir>/cache
    on_device: bool = True  # move the packed train set to the GPU when it fits


@dataclass(frozen=True)
class FeaturesConfig:
    sample_rate: int = SAMPLE_RATE  # Hz
    n_mfcc: int = 64
    n_mels: int = N_MELS
    n_fft: int = N_FFT  # samples
    win_length: int = WIN_LENGTH  # samples (25 ms)
    hop_length: int = HOP_LENGTH  # samples (10 ms): 1 s -> 101 frames
    f_min: float = 0.0  # Hz
    f_max: float | None = None  # None: sample_rate / 2
    n_frames: int = 128  # crop/pad target
    pad: str = "clip"  # "batch": as NeMo (kws/features.py); "clip" also for checkpoints without the key
    normalize: str | None = None  # None (the recipe) | "per_utterance" (mean/variance over time)
    # Vocal-tract-length perturbation (issue 7), training only: each clip's mel filterbank is read at
    # frequencies warped by a factor ~ U(low, high) (VTLP). None (the recipe) disables it.
    vtlp_range: tuple[float, float] | None = None
    vtlp_prob: float = 1.0  # share of clips warped when vtlp_range is set

    def check(self, key: str) -> None:
        for name in ("sample_rate", "n_mfcc", "n_mels", "n_fft", "win_length", "hop_length", "n_frames"):
            at_least(f"{key}.{name}", getattr(self, name), 1)
        # torchaudio's MFCC keeps the first n_mfcc DCT coefficients of n_mels bands
        require(self.n_mfcc <= self.n_mels, f"{key}.n_mfcc", f"<= {key}.n_mels ({self.n_mels})", self.n_mfcc)
        require(
            self.win_length <= self.n_fft,
            f"{key}.win_length",
            f"<= {key}.n_fft ({self.n_fft})",
            self.win_length,
        )
        at_least(f"{key}.f_min", self.f_min, 0)
        nyquist = self.sample_rate / 2
        if self.f_max is None:
            require(
                self.f_min < nyquist, f"{key}.f_min", f"< {key}.sample_rate / 2 ({nyquist:g})", self.f_min
            )
        else:
            require(
                self.f_min < self.f_max <= nyquist,
                f"{key}.f_max",
                f"> {key}.f_min ({self.f_min:g}) and <= {key}.sample_rate / 2 ({nyquist:g})",
                self.f_max,
            )
        span(f"{key}.vtlp_range", self.vtlp_range, positive=True)
        probability(f"{key}.vtlp_prob", self.vtlp_prob)


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

    def check(self, key: str) -> None:
        for name in ("filters", "repeat", "kernel", "stride", "dilation"):
            at_least(f"{key}.{name}", getattr(self, name), 1)
        # kws/model.py pads dilation * (kernel - 1) / 2 frames each side: "same" length only for odd kernels
        require(self.kernel % 2 == 1, f"{key}.kernel", "odd (for 'same' padding)", self.kernel)
        require(0 <= self.dropout < 1, f"{key}.dropout", "in [0, 1)", self.dropout)


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

    def check(self, key: str) -> None:
        require(len(self.blocks) >= 1, f"{key}.blocks", "a list of at least one block", self.blocks)
        for i, block in enumerate(self.blocks):
            block.check(f"{key}.blocks[{i}]")


@dataclass(frozen=True)
class OptimConfig:
    name: str = "novograd"
    lr: float = 0.05
    betas: tuple[float, float] = (0.95, 0.5)
    weight_decay: float = 0.001
    eps: float = 1e-8

    def check(self, key: str) -> None:
        above(f"{key}.lr", self.lr, 0)
        for i, beta in enumerate(self.betas):
            require(0 <= beta < 1, f"{key}.betas[{i}]", "in [0, 1)", beta)
        at_least(f"{key}.weight_decay", self.weight_decay, 0)
        above(f"{key}.eps", self.eps, 0)


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = "hold_poly"  # "cosine" | "hold_poly"
    warmup_ratio: float = 0.05
    hold_ratio: float = 0.45
    min_lr: float = 0.001
    power: float = 2.0

    def check(self, key: str) -> None:
        for name in ("warmup_ratio", "hold_ratio"):
            value = getattr(self, name)
            require(0 <= value <= 1, f"{key}.{name}", "in [0, 1]", value)
        require(
            self.warmup_ratio + self.hold_ratio <= 1,
            f"{key}.hold_ratio",
            f"<= 1 - {key}.warmup_ratio ({1 - self.warmup_ratio:g}): warmup and hold share one run",
            self.hold_ratio,
        )
        at_least(f"{key}.min_lr", self.min_lr, 0)
        above(f"{key}.power", self.power, 0)


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    init: InitConfig = field(default_factory=InitConfig)


# Allowed values of the string fields that select behaviour; anything else is a typo worth an error.
_CHOICES: dict[str, tuple[str | None, ...]] = {
    "features.normalize": (None, "per_utterance"),
    "features.pad": ("clip", "batch"),
    "model.pool": ("all", "valid"),
    "optim.name": ("novograd",),
    "schedule.name": ("cosine", "hold_poly"),
    "trainer.precision": ("32", "bf16", "16"),
    "init.freeze": (None, "encoder"),
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
    expected = "true or false" if tp is bool else _type_name(tp)
    raise ConfigError(f"{source}: `{key}` must be {expected}, got {value!r}")


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
    try:
        d = upgrade_layout(d)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    cfg: Config = _build(Config, d, "", source)
    check_config(cfg, source)
    return cfg


def upgrade_layout(d: Mapping[str, Any]) -> dict[str, Any]:
    """A config dict in today's layout: configs, run dirs and checkpoints written before the per-stage
    augment sections spell `augment.speed_prob`, now `augment.speed.prob` (compare configs after this)."""
    if isinstance(d.get("augment"), Mapping):
        return {**d, "augment": upgrade_flat_keys(d["augment"])}
    return dict(d)


def check_config(cfg: Config, source: str) -> None:
    """Every value with a valid range, checked before any data is read: a ConfigError naming the source,
    the dotted key, the allowed range and the value (`run.yaml: `optim.lr` must be > 0, got -1.0`)."""
    try:
        cfg.features.check("features")
        cfg.augment.check("augment", cfg.features.sample_rate)
        cfg.model.check("model")
        cfg.optim.check("optim")
        cfg.schedule.check("schedule")
        cfg.trainer.check("trainer")
        require(
            cfg.init.freeze is None or bool(cfg.init.checkpoint),
            "init.freeze",
            "null unless init.checkpoint is set (--init): a random encoder would stay random",
            cfg.init.freeze,
        )
        # the schedules decay from optim.lr down to min_lr
        require(
            cfg.schedule.min_lr <= cfg.optim.lr,
            "schedule.min_lr",
            f"<= optim.lr ({cfg.optim.lr:g})",
            cfg.schedule.min_lr,
        )
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


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

    `trainer.max_steps=none` sets an optional field to None; `optim.betas=[0.98,0.5]` sets a tuple;
    `augment.speed.prob=0.5` reaches into a stage's section (the old `augment.speed_prob=0.5` still works).
    """
    d = config_to_dict(cfg)
    for item in overrides:
        path, sep, text = item.partition("=")
        keys = path.strip().split(".")
        if not sep or len(keys) < 2 or not all(keys):
            raise ConfigError(f"{source}: expected `section.key=value`, got {item!r}")
        if len(keys) == 2 and keys[0] == "augment" and keys[1] in FLAT_KEYS:
            keys = ["augment", *FLAT_KEYS[keys[1]]]
        section = d
        for depth, name in enumerate(keys):
            key = ".".join(keys[: depth + 1])
            if name not in section:
                known = ", ".join(section)
                if depth == 0:
                    raise ConfigError(f"{source}: unknown section `{name}` in {item!r}; known: {known}")
                raise ConfigError(f"{source}: unknown key `{key}` in {item!r}; known here: {known}")
            if depth == len(keys) - 1:
                break
            if not isinstance(section[name], dict):
                raise ConfigError(f"{source}: `{key}` is a single setting, not a section; set it as a whole")
            section = section[name]
        # `none` is a string to YAML; on the command line it means None, like `null`.
        none = text.strip().lower() in ("", "none", "null", "~")
        value = None if none else parse_yaml(text, f"{source}: cannot read the value of `{path}` as YAML")
        section[keys[-1]] = value
    return config_from_dict(d, source)


def apply_options(
    cfg: Config,
    *,
    train_manifest: Path | None = None,
    val_manifests: list[Path] | None = None,
    init: Path | None = None,
    freeze: str | None = None,
    **trainer: Any,
) -> Config:
    """Command-line options over the config: manifests into `data`, `init`/`freeze` into `init`, the rest into
    `trainer` (None: keep).

    Each option goes through the same type and range checks as the file, one at a time so that the error
    names it (`--batch-size: `trainer.batch_size` must be >= 1, got 0`), before anything is read or written.
    """
    data = cfg.data
    if train_manifest is not None:
        data = dataclasses.replace(data, train_manifest=str(train_manifest))
    if val_manifests:
        data = dataclasses.replace(data, val_manifests=tuple(str(m) for m in val_manifests))
    cfg = dataclasses.replace(cfg, data=data)  # paths: nothing to range-check
    if init is not None:
        cfg = dataclasses.replace(cfg, init=dataclasses.replace(cfg.init, checkpoint=str(init)))
    if freeze is not None:
        changed = dataclasses.replace(cfg, init=dataclasses.replace(cfg.init, freeze=freeze))
        cfg = config_from_dict(config_to_dict(changed), "--freeze")
    for name, value in trainer.items():
        if value is not None:
            changed = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, **{name: value}))
            cfg = config_from_dict(config_to_dict(changed), "--" + name.replace("_", "-"))
    return cfg


def load_config(path: Path, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config file, then apply `section.key=value` overrides."""
    path = Path(path)
    text = read_text(path, "config file", ConfigError, "pass a YAML config such as configs/smoke.yaml")
    data = parse_yaml(text, f"{path}: not valid YAML")
    cfg = config_from_dict(data if data is not None else {}, str(path))
    return apply_overrides(cfg, overrides) if overrides else cfg
