"""The deployed model (kws.export.graph) as TorchScript, for PyTorch's C++ runtime (libtorch). (PyTorch
Mobile's lite interpreter wants another format, `_save_for_lite_interpreter`; ONNX is the file for phones.)

`torch.jit.load(path)` gives a module `(batch, window_samples)` float32 -> `(batch, n_classes)`
probabilities; its metadata (kws.exported) is the extra file `kws.json`, a JSON object of the same
string key-values an ONNX file carries:

    extra = {"kws.json": ""}; module = torch.jit.load(path, _extra_files=extra)    # Python
    torch::jit::ExtraFilesMap extra{{"kws.json", ""}}; torch::jit::load(path, device, extra);   // C++
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from kws.errors import CheckpointError
from kws.export.graph import WINDOW_SAMPLES, DeployedModel
from kws.exported import ExportMetadata, first_line

METADATA_NAME = "kws.json"


def write_torchscript(deployed: DeployedModel, metadata: ExportMetadata, path: Path) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        # PyTorch 2.11 marks TorchScript deprecated (for torch.export); libtorch still loads and runs it
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(deployed, torch.zeros(2, WINDOW_SAMPLES))
        extra = {METADATA_NAME: json.dumps(metadata.to_props(), indent=1)}
        torch.jit.save(traced, str(path), _extra_files=extra)


def load_torchscript(path: Path) -> tuple[torch.jit.ScriptModule, ExportMetadata]:
    extra = {METADATA_NAME: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        props = json.loads(extra[METADATA_NAME] or "{}")
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is not a TorchScript model kws exported ({first_line(exc)}); export it again"
        ) from None
    return module, ExportMetadata.from_props(props, Path(path))


def torchscript_probs(module: torch.jit.ScriptModule, windows: np.ndarray, batch: int = 256) -> np.ndarray:
    """`(n, window_samples)` float32 -> `(n, n_classes)` probabilities."""
    out = []
    with torch.inference_mode():
        for first in range(0, len(windows), batch):
            out.append(module(torch.from_numpy(np.ascontiguousarray(windows[first : first + batch]))).numpy())
    return np.concatenate(out)
