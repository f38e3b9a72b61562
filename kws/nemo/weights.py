"""A NeMo speech-command model's state dict under kws's parameter names.

NeMo (`ConvASREncoder` of `JasperBlock`s; `nemo/collections/asr/parts/submodules/jasper.py`) keeps a block's
layers in one list, `mconv`: per sub-block the depthwise and pointwise convolutions (separable) or one
convolution, then BatchNorm, then ReLU and Dropout between sub-blocks (no weights, but they take indices).
A masked convolution (`conv_mask: true`) wraps its `nn.Conv1d` one level down (`.conv.weight`). The residual
is `res.0` = [1x1 convolution, BatchNorm]; the decoder `decoder_layers.0` one linear layer. The
preprocessor's buffers (window, mel filterbank, DCT) are not weights of kws's model: `check_front_end`
compares them with the ones kws computes for the same settings instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from kws.errors import CheckpointError
from kws.nemo.settings import FAMILY

BN_KEYS = ("weight", "bias", "running_mean", "running_var")
PREPROCESSOR_PREFIX = "preprocessor."
# NeMo's preprocessor buffers and the kws MFCC attributes holding the same tensors.
FRONT_END = {
    "preprocessor.featurizer.MelSpectrogram.spectrogram.window": "the analysis window",
    "preprocessor.featurizer.MelSpectrogram.mel_scale.fb": "the mel filterbank",
    "preprocessor.featurizer.dct_mat": "the DCT matrix",
}


class _Mapper:
    def __init__(self, weights: Mapping[str, Tensor], conv_mask: bool, path: Path) -> None:
        self.weights, self.conv_mask, self.path = weights, conv_mask, path
        self.out: dict[str, Tensor] = {}
        self.used: set[str] = set()

    def take(self, src: str, dst: str) -> None:
        if src not in self.weights:
            raise CheckpointError(
                f"{self.path.name} has no weight {src!r} although its config describes one; the file is "
                "damaged or its weights belong to another model"
            )
        self.used.add(src)
        self.out[dst] = self.weights[src].detach().clone().float()

    def conv(self, src: str, dst: str) -> None:
        inner = f"{src}.conv" if self.conv_mask else src
        if f"{inner}.bias" in self.weights:
            raise CheckpointError(
                f"{self.path.name}: convolution {inner} has a bias, which kws's blocks do not; {FAMILY}"
            )
        self.take(f"{inner}.weight", dst)

    def batchnorm(self, src: str, dst: str) -> None:
        for key in BN_KEYS:
            self.take(f"{src}.{key}", f"{dst}.{key}")
        tracked = f"{src}.num_batches_tracked"
        self.used.add(tracked)
        self.out[f"{dst}.num_batches_tracked"] = self.weights.get(tracked, torch.tensor(0)).clone().long()


def kws_state_dict(
    weights: Mapping[str, Tensor], blocks: list[dict[str, Any]], conv_mask: bool, path: Path
) -> dict[str, Tensor]:
    """`weights` (NeMo's names) -> the state dict of `kws.model.Classifier` for `blocks`; every NeMo weight
    must find its place (anything left over is a layer kws does not have: an error naming it)."""
    m = _Mapper(weights, conv_mask, path)
    for i, block in enumerate(blocks):
        src, dst = f"encoder.encoder.{i}", f"encoder.{i}"
        per_sub = 5 if block["separable"] else 4  # conv(s), BatchNorm, ReLU, Dropout
        for j in range(block["repeat"]):
            k = j * per_sub
            sub = f"{dst}.subs.{j}"
            if block["separable"]:
                m.conv(f"{src}.mconv.{k}", f"{sub}.depthwise.weight")
                k += 1
            m.conv(f"{src}.mconv.{k}", f"{sub}.conv.weight")
            m.batchnorm(f"{src}.mconv.{k + 1}", f"{sub}.bn")
        if block["residual"]:
            m.conv(f"{src}.res.0.0", f"{dst}.residual.weight")
            m.batchnorm(f"{src}.res.0.1", f"{dst}.residual_bn")
    m.take("decoder.decoder_layers.0.weight", "head.weight")
    m.take("decoder.decoder_layers.0.bias", "head.bias")
    left = sorted(k for k in weights if k not in m.used and not k.startswith(PREPROCESSOR_PREFIX))
    if left:
        raise CheckpointError(
            f"{path.name} holds weights kws's model has no place for ({', '.join(left[:3])}"
            f"{' ...' if len(left) > 3 else ''}); {FAMILY}"
        )
    return m.out


def check_front_end(weights: Mapping[str, Tensor], expected: Mapping[str, Tensor], path: Path) -> None:
    """The file's preprocessor buffers against kws's for the same settings (`expected`, by NeMo key): a
    front end kws would compute differently is refused rather than imported with other features."""
    for key, what in FRONT_END.items():
        if key not in weights:
            continue  # older files do not save every buffer; the settings were checked already
        # A file saved in half precision holds the buffers rounded: compare with ours rounded the same way.
        found, ours = weights[key].float(), expected[key].to(weights[key].dtype).float()
        if found.shape != ours.shape or not torch.allclose(found, ours, rtol=1e-4, atol=1e-6):
            diff = (
                f"shape {tuple(found.shape)} vs {tuple(ours.shape)}"
                if found.shape != ours.shape
                else f"largest difference {(found - ours).abs().max().item():.2g}"
            )
            raise CheckpointError(
                f"{path.name}: {what} in its preprocessor differs from the one its settings give ({diff}); "
                "kws cannot reproduce this front end"
            )
