"""A NeMo `.nemo` speech-command model as a kws checkpoint (the dict `kws.checkpoint.load_checkpoint`
returns), so that every command taking a checkpoint takes a `.nemo` file, and `kws import-nemo` writes one.

The model keeps its label order; its features are NeMo's MFCC settings with crop/pad to the model's
`audio_length` (see `kws.nemo.settings` for why crop/pad is always applied).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kws import __version__
from kws.config import config_from_dict, config_to_dict
from kws.errors import CheckpointError, ConfigError
from kws.features import FeatureExtractor
from kws.files import file_sha256
from kws.model import build_model, mismatch_line
from kws.nemo import settings
from kws.nemo.archive import read_nemo
from kws.nemo.weights import FRONT_END, check_front_end, kws_state_dict

FORMAT = "nemo"


def nemo_checkpoint(path: Path) -> dict[str, Any]:
    """Read `path` and return it as a kws checkpoint state (step and epoch 0, `imported_from` saying where it
    came from); CheckpointError naming anything kws cannot reproduce."""
    path = Path(path)
    nemo = read_nemo(path)
    cfg = settings.model_config(nemo.config, path)
    labels = settings.labels(cfg, path)
    features = settings.features_section(cfg, path)
    blocks, conv_mask = settings.encoder_blocks(cfg, features["n_mfcc"], path)
    settings.check_decoder(cfg, blocks[-1]["filters"], len(labels), path)
    model_section = {"name": f"nemo_{path.stem}", "blocks": blocks, "pool": "all"}
    try:
        config = config_from_dict(
            {"features": features, "model": model_section}, source=f"{path.name} (NeMo)"
        )
    except ConfigError as exc:
        raise CheckpointError(f"{path.name}: its settings do not make a kws model: {exc}") from None

    extractor = FeatureExtractor(config.features)
    transform = extractor.mfcc.transform
    ours = dict(
        zip(
            FRONT_END,
            (transform.MelSpectrogram.spectrogram.window, extractor.mfcc.fb, transform.dct_mat),
            strict=True,
        )
    )
    check_front_end(nemo.weights, ours, path)
    state = kws_state_dict(nemo.weights, blocks, conv_mask, path)
    model = build_model(config.model, config.features.n_mfcc, len(labels))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = mismatch_line(exc)
        raise CheckpointError(
            f"{path.name}: its weights do not fit its config ({first}); the file is damaged"
        ) from None
    return {
        "kws_version": __version__,
        "config": config_to_dict(config),
        "labels": labels,
        "model": state,
        "step": 0,
        "epoch": 0,
        "imported_from": {
            "format": FORMAT,
            "file": path.name,
            "sha256": file_sha256(path),
            "model_class": settings.class_name(cfg) or settings.MODEL_CLASS,
            "crop_pad_frames": config.features.n_frames,
            "nemo_version": str(cfg.get("nemo_version") or "unknown"),
            "note": settings.crop_pad_note(cfg),
        },
    }
