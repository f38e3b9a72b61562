"""A NeMo `.nemo` file: a tar archive (plain or gzip) holding `model_config.yaml` (the model's resolved
OmegaConf config) and `model_weights.ckpt` (`torch.save` of its state dict), usually as `./model_config.yaml`
and `./model_weights.ckpt` (NeMo's SaveRestoreConnector). Nothing else in the archive is read.

The weights are read with `torch.load(weights_only=True)`: opening a `.nemo` file never runs code from it.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch
import yaml

from kws.errors import CheckpointError

CONFIG_MEMBER = "model_config.yaml"
WEIGHTS_MEMBER = "model_weights.ckpt"
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's files are zip archives
MAX_MEMBER_BYTES = 2 << 30  # a speech-command model is well under 100 MB; refuse to inflate anything huge


@dataclass(frozen=True)
class NemoFile:
    """What a `.nemo` archive holds: its config as plain containers, and its state dict."""

    path: Path
    config: dict[str, Any]
    weights: dict[str, torch.Tensor]


def is_nemo(path: Path) -> bool:
    """Whether `path` names a NeMo checkpoint (by its suffix, as NeMo writes them)."""
    return Path(path).suffix.lower() == ".nemo"


def read_nemo(path: Path) -> NemoFile:
    """Read `path`'s config and weights; a missing file, a non-tar file or a tar without NeMo's two members is
    a CheckpointError saying which."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; pass a NeMo .nemo file")
    if not path.is_file():
        raise CheckpointError(f"NeMo checkpoint {path} does not exist; check the path")
    with open(path, "rb") as handle:  # a zip from its first bytes: a .nemo's tail holds one (its weights)
        is_zip = handle.read(4) == ZIP_MAGIC
    if is_zip:  # what torch.save writes: a kws checkpoint, or an exported TorchScript
        raise CheckpointError(
            f"{path} is a PyTorch file, not a NeMo .nemo archive; a kws checkpoint needs no import (every "
            "command takes it as it is)"
        )
    try:
        with tarfile.open(path, "r:*") as tar:  # "r:*": plain or gzip, told apart by the bytes
            members = {PurePosixPath(m.name).name: m for m in tar.getmembers() if m.isfile()}
            missing = [name for name in (CONFIG_MEMBER, WEIGHTS_MEMBER) if name not in members]
            if missing:
                found = ", ".join(sorted(members)[:6]) or "no files"
                raise CheckpointError(
                    f"{path} is a tar archive but not a NeMo model: it has no {' and no '.join(missing)} "
                    f"(found {found}); pass a .nemo file written by NeMo's save_to"
                )
            config_bytes = _read_member(tar, members[CONFIG_MEMBER], path)
            weights_bytes = _read_member(tar, members[WEIGHTS_MEMBER], path)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise CheckpointError(
            f"cannot read {path} as a NeMo .nemo file: it is not a tar archive or it is cut short "
            f"({type(exc).__name__}); copy it again"
        ) from None
    return NemoFile(path, _parse_config(config_bytes, path), _parse_weights(weights_bytes, path))


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> bytes:
    if member.size > MAX_MEMBER_BYTES:
        raise CheckpointError(
            f"{path}: {member.name} is {member.size / 2**30:.1f} GiB, far beyond a speech-command model; "
            "pass a MatchboxNet or QuartzNet .nemo file"
        )
    handle = tar.extractfile(member)
    if handle is None:
        raise CheckpointError(f"{path}: cannot read {member.name} from the archive; copy the file again")
    return handle.read()


def _parse_config(data: bytes, path: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CheckpointError(
            f"{path}: {CONFIG_MEMBER} is not valid YAML ({type(exc).__name__}); the file is damaged"
        ) from None
    if not isinstance(config, dict):
        raise CheckpointError(
            f"{path}: {CONFIG_MEMBER} holds no mapping of model settings; the file is damaged"
        )
    return config


def _parse_weights(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    try:
        weights = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types for damaged or foreign pickles
        raise CheckpointError(
            f"{path}: {WEIGHTS_MEMBER} is not a state dict of tensors (damaged, or it holds Python objects "
            "kws does not load); export the model again with NeMo's save_to"
        ) from None
    if isinstance(weights, dict) and "state_dict" in weights and isinstance(weights["state_dict"], dict):
        weights = weights["state_dict"]  # a Lightning checkpoint's layout
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{path}: {WEIGHTS_MEMBER} is not a state dict of tensors; the file is damaged")
    return {str(k): v for k, v in weights.items()}
