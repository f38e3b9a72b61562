"""A NeMo speech-command model's config (`model_config.yaml`) as kws's `features` and `model` sections.

kws reproduces exactly one family: `EncDecClassificationModel` with NeMo's `AudioToMFCCPreprocessor`,
`CropOrPadSpectrogramAugmentation`, a `ConvASREncoder` of Jasper blocks with ReLU and BatchNorm (MatchboxNet,
QuartzNet) and `ConvASRDecoderClassification` with average pooling. Every setting that would change the
function is read and checked; anything kws cannot reproduce is a CheckpointError naming the setting.

Crop/pad is part of the imported model, always: NeMo up to 2.2 cropped/padded every input to
`crop_or_pad_augment.audio_length` frames (128) in training and inference, and the published MatchboxNet
checkpoints were trained that way. Since NeMo 2.3 (EncDecClassificationModel rebuilt on
EncDecSpeakerLabelModel) `forward` no longer applies it, in training either: the encoder sees 101 frames of
a 1 s clip, the last masked. kws matches the first; a model trained with NeMo >= 2.3 never saw crop/pad, and
kws's outputs for it differ from NeMo's (`nemo_version` in the file says which NeMo saved it:
`saved_by_nemo`). Inputs longer than `audio_length` frames (1.27 s) are cropped at the centre by kws, at a
random offset by NeMo.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kws.audio import SAMPLE_RATE
from kws.errors import CheckpointError

MODEL_CLASS = "EncDecClassificationModel"
PREPROCESSOR = "AudioToMFCCPreprocessor"
CROP_OR_PAD = "CropOrPadSpectrogramAugmentation"
ENCODER = "ConvASREncoder"
DECODER = "ConvASRDecoderClassification"
FAMILY = "kws imports NeMo MatchboxNet/QuartzNet speech-command models"

# What NeMo's constructors accept and kws reads (anything else in a section is a setting kws cannot honour).
_PREPROCESSOR_KEYS = {
    "sample_rate", "window_size", "window_stride", "n_window_size", "n_window_stride", "window", "n_fft",
    "lowfreq", "highfreq", "n_mels", "n_mfcc", "dct_type", "norm", "log",
}  # fmt: skip
_ENCODER_KEYS = {
    "feat_in", "activation", "conv_mask", "jasper", "normalization_mode", "residual_mode", "norm_groups",
    "frame_splicing", "init_mode", "quantize",
}  # fmt: skip
_BLOCK_KEYS = {
    "filters", "repeat", "kernel", "stride", "dilation", "dropout", "residual", "separable", "groups",
    "heads", "residual_mode", "se", "se_reduction_ratio", "se_context_size", "se_interpolation_mode",
    "kernel_size_factor", "stride_last", "future_context", "residual_dense",
}  # fmt: skip
_DECODER_KEYS = {"feat_in", "num_classes", "init_mode", "return_logits", "pooling_type"}
_CLASS_KEYS = ("_target_", "target", "cls")  # NeMo >= 1.0 writes _target_; 1.0 betas cls + params


def class_name(section: Mapping[str, Any]) -> str:
    """The class a config section instantiates, without its module: "ConvASREncoder"; "" when unnamed."""
    for key in _CLASS_KEYS:
        if isinstance(section.get(key), str):
            return str(section[key]).rsplit(".", 1)[-1]
    return ""


def _params(section: Mapping[str, Any]) -> dict[str, Any]:
    """A section's constructor arguments, in either layout (flat, or NeMo 1.0 beta's `params:`)."""
    flat = {k: v for k, v in section.items() if k not in _CLASS_KEYS and k != "params"}
    nested = section.get("params")
    return {**flat, **nested} if isinstance(nested, Mapping) else flat


def _section(cfg: Mapping[str, Any], key: str, expected: str, path: Path) -> dict[str, Any]:
    section = cfg.get(key)
    if not isinstance(section, Mapping):
        raise CheckpointError(f"{path.name} has no `{key}` section in its config; {FAMILY}")
    name = class_name(section)
    if name and name != expected:
        raise CheckpointError(f"{path.name}: its {key} is NeMo's {name}; {FAMILY}, whose {key} is {expected}")
    return _params(section)


def _unsupported(path: Path, where: str, what: str) -> CheckpointError:
    return CheckpointError(f"{path.name}: {where} {what}, which kws cannot reproduce; {FAMILY}")


def _only(params: Mapping[str, Any], known: set[str], where: str, path: Path) -> None:
    unknown = sorted(set(params) - known)
    if unknown:
        raise _unsupported(path, where, f"has the setting {unknown[0]!r}")


def _expect(
    params: Mapping[str, Any], key: str, default: Any, allowed: tuple[Any, ...], where: str, path: Path
) -> Any:
    value = params.get(key, default)
    if value not in allowed:
        raise _unsupported(path, where, f"sets {key}={value!r} (kws: {' or '.join(map(repr, allowed))})")
    return value


def model_config(cfg: Mapping[str, Any], path: Path) -> Mapping[str, Any]:
    """The model section of a `.nemo` config (NeMo saves the model's own config; a full experiment config
    keeps it under `model:`); checks the model class."""
    if "encoder" not in cfg and isinstance(cfg.get("model"), Mapping):
        cfg = cfg["model"]
    name = class_name(cfg)
    if name and name != MODEL_CLASS:
        raise CheckpointError(f"{path.name} is a NeMo {name}; {FAMILY} ({MODEL_CLASS})")
    return cfg


def labels(cfg: Mapping[str, Any], path: Path) -> list[str]:
    """The model's labels in its own order (the order of its output rows)."""
    found = cfg.get("labels")
    if not isinstance(found, list) or len(found) < 2 or not all(isinstance(x, str) and x for x in found):
        raise CheckpointError(f"{path.name}: its config has no list of labels (model.labels); {FAMILY}")
    if len(set(found)) != len(found):
        raise CheckpointError(f"{path.name}: its labels repeat a name ({found}); the file is damaged")
    return list(found)


def features_section(cfg: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """kws's `features` section for the model's MFCC front end and crop/pad (see the module docstring)."""
    pre = _section(cfg, "preprocessor", PREPROCESSOR, path)
    where = "its preprocessor"
    _only(pre, _PREPROCESSOR_KEYS, where, path)
    sample_rate = pre.get("sample_rate", cfg.get("sample_rate", SAMPLE_RATE))
    if sample_rate != SAMPLE_RATE:
        raise _unsupported(path, where, f"works at {sample_rate} Hz (kws: {SAMPLE_RATE} Hz audio)")
    # As AudioToMFCCPreprocessor.__init__: window_size/stride in seconds (defaults 0.02/0.01) unless given in
    # samples; int() truncates as NeMo does.
    win = pre.get("n_window_size") or int((pre.get("window_size") or 0.02) * sample_rate)
    hop = pre.get("n_window_stride") or int((pre.get("window_stride") or 0.01) * sample_rate)
    _expect(pre, "window", "hann", ("hann",), where, path)
    _expect(pre, "dct_type", 2, (2,), where, path)
    _expect(pre, "norm", "ortho", ("ortho",), where, path)
    _expect(pre, "log", True, (True,), where, path)
    crop = _section(cfg, "crop_or_pad_augment", CROP_OR_PAD, path) if "crop_or_pad_augment" in cfg else None
    n_frames = (crop or {}).get("audio_length")
    if not isinstance(n_frames, int) or n_frames < 1:
        raise _unsupported(
            path,
            "its config",
            "has no crop_or_pad_augment.audio_length (kws crops/pads to a fixed frame count)",
        )
    return {
        "sample_rate": sample_rate,
        "n_mfcc": pre.get("n_mfcc", 64),
        "n_mels": pre.get("n_mels", 64),
        "n_fft": pre.get("n_fft") or 2 ** math.ceil(math.log2(win)),
        "win_length": win,
        "hop_length": hop,
        "f_min": float(pre.get("lowfreq") or 0.0),
        "f_max": None if pre.get("highfreq") is None else float(pre["highfreq"]),
        "n_frames": n_frames,
        "pad": "batch",  # NeMo pads a batch to its widest clip before the MFCC (kws/features.py)
        "normalize": None,
    }


def _one(value: Any, key: str, where: str, path: Path) -> int:
    """NeMo writes kernel/stride/dilation as one-element lists."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, int) or isinstance(value, bool):
        raise _unsupported(path, where, f"sets {key}={value!r} (kws: one integer)")
    return value


def _kernel(kernel: int, factor: float) -> int:
    """NeMo's compute_new_kernel_size: scaled, rounded up to odd."""
    size = max(int(kernel * factor), 1)
    return size + 1 if size % 2 == 0 else size


def encoder_blocks(cfg: Mapping[str, Any], n_features: int, path: Path) -> tuple[list[dict[str, Any]], bool]:
    """kws's block list for the model's Jasper blocks, and whether its convolutions are masked (conv_mask:
    their weights sit one level deeper in the state dict)."""
    enc = _section(cfg, "encoder", ENCODER, path)
    _only(enc, _ENCODER_KEYS, "its encoder", path)
    if enc.get("feat_in") != n_features:
        raise _unsupported(
            path, "its encoder", f"takes feat_in={enc.get('feat_in')!r}, not the {n_features} MFCCs"
        )
    _expect(enc, "activation", None, ("relu",), "its encoder", path)
    _expect(enc, "normalization_mode", "batch", ("batch",), "its encoder", path)
    _expect(enc, "frame_splicing", 1, (1,), "its encoder", path)
    _expect(enc, "quantize", False, (False,), "its encoder", path)
    default_mode = _expect(enc, "residual_mode", "add", ("add", "stride_add"), "its encoder", path)
    jasper = enc.get("jasper")
    if not isinstance(jasper, list) or not jasper:
        raise _unsupported(path, "its encoder", "has no list of blocks (encoder.jasper)")
    blocks = []
    for i, block in enumerate(jasper):
        where = f"encoder block {i}"
        if not isinstance(block, Mapping):
            raise _unsupported(path, where, "is not a mapping")
        _only(block, _BLOCK_KEYS, where, path)
        for key, default, allowed in (
            ("groups", 1, (1,)),
            ("heads", -1, (-1,)),
            ("se", False, (False,)),
            ("future_context", -1, (-1,)),
            ("residual_dense", False, (False,)),
        ):
            _expect(block, key, default, allowed, where, path)
        mode = _expect(block, "residual_mode", default_mode, ("add", "stride_add"), where, path)
        kernel = _kernel(
            _one(block.get("kernel"), "kernel", where, path), float(block.get("kernel_size_factor", 1.0))
        )
        stride = _one(block.get("stride", [1]), "stride", where, path)
        dilation = _one(block.get("dilation", [1]), "dilation", where, path)
        repeat, residual = block.get("repeat", 1), bool(block.get("residual", False))
        # kws strides a block's first sub-block and its residual; NeMo strides every sub-block (or the last,
        # stride_last) and, in residual_mode "add", not the residual. Equal only for one strided sub-block.
        if stride > 1 and (repeat != 1 or (residual and mode == "add")):
            raise _unsupported(
                path, where, f"strides by {stride} with repeat={repeat}, residual_mode={mode!r}"
            )
        blocks.append(
            {
                "filters": block.get("filters"),
                "repeat": repeat,
                "kernel": kernel,
                "stride": stride,
                "dilation": dilation,
                "dropout": float(block.get("dropout", 0.0)),
                "residual": residual,
                "separable": bool(block.get("separable", False)),
            }
        )
    return blocks, bool(enc.get("conv_mask", True))


def check_decoder(cfg: Mapping[str, Any], n_channels: int, n_labels: int, path: Path) -> None:
    """The decoder kws's head reproduces: average over all frames, one linear layer, one row per label."""
    dec = _section(cfg, "decoder", DECODER, path)
    _only(dec, _DECODER_KEYS, "its decoder", path)
    _expect(dec, "pooling_type", "avg", ("avg",), "its decoder", path)
    if dec.get("feat_in") != n_channels:
        raise _unsupported(
            path, "its decoder", f"takes feat_in={dec.get('feat_in')!r}, not the encoder's {n_channels}"
        )
    if dec.get("num_classes", n_labels) != n_labels:
        raise CheckpointError(
            f"{path.name}: its decoder has {dec.get('num_classes')} classes but the config lists {n_labels} "
            "labels; the file is damaged"
        )


def saved_by_nemo(cfg: Mapping[str, Any]) -> tuple[int, int] | None:
    """(major, minor) of the NeMo that wrote the file (its `nemo_version`), None when it does not say."""
    version = str(cfg.get("nemo_version") or "")
    parts = version.split(".")
    if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
        return None
    return int(parts[0]), int(parts[1])


def crop_pad_note(cfg: Mapping[str, Any]) -> str | None:
    """A warning when the file was saved by a NeMo whose forward skips crop/pad (>= 2.3): a model trained
    there never saw it, and kws applies it."""
    version = saved_by_nemo(cfg)
    if version is None or version < (2, 3):
        return None
    frames = (cfg.get("crop_or_pad_augment") or {}).get("audio_length")
    return (
        f"note: saved by NeMo {cfg.get('nemo_version')}, whose forward skips crop/pad; if the model was also "
        f"trained with it, kws's outputs (crop/pad to {frames} frames, as NeMo <= 2.2) differ from NeMo's"
    )
