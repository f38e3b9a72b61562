"""The deployed model as one plain module: raw waveform in, class probabilities out, every step inside.

`DeployedModel`: `(batch, WINDOW_SAMPLES)` float audio in [-1, 1] -> `(batch, n_classes)` probabilities. It
is what `kws evaluate` computes for a one-second clip (MFCC, optional per-utterance normalisation, crop/pad
to the recipe's frames, the encoder, the pooling head, softmax), written for export rather than training:
- the window is fixed, so crop/pad is a constant zero padding and every frame is valid: no masks, no lengths;
- the encoder runs channels-first through plain convolutions (the CPU training layout's reshapes and
  transposes, kws.model.MaskedConv1d.forward_cl, would all be exported as nodes), 2-D ones over
  `(batch, channels, 1, frames)` for onnxruntime's sake (`_conv2d`), with every BatchNorm folded into the
  convolution before it (kws.model.fold_batchnorm);
- the MFCC's STFT is computed by convolutions (kws.export.frontend.ConvMFCC), four times faster in
  onnxruntime than its STFT operator;
- pooling averages all frames, which is the head's `pool: valid` too when every frame is valid.
tests/export hold it to `kws.checkpoint.LoadedModel`'s own output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kws.checkpoint import LoadedModel
from kws.errors import KWSError
from kws.export.frontend import ConvMFCC
from kws.exported import WINDOW_SAMPLES
from kws.features import FeatureExtractor, frame_lengths, normalize_per_utterance
from kws.model import Block, Classifier, MaskedConv1d, SubBlock, fold_batchnorm


def _conv2d(conv: MaskedConv1d) -> nn.Conv2d:
    """`conv` as a 2-D convolution over `(batch, channels, 1, frames)`: onnxruntime runs 2-D convolutions in
    its blocked (NCHWc) layout, with far faster kernels than its 1-D ones (a depthwise k=29 convolution: 5x).
    The weights are 4-D from the start: the exported file holds them as they are (and int8 quantizes them)."""
    (kernel,), (stride,), (dilation,) = conv.kernel_size, conv.stride, conv.dilation
    padding = conv.padding[0] if isinstance(conv.padding, tuple) else 0
    out = nn.Conv2d(
        conv.in_channels, conv.out_channels, (1, kernel), (1, stride), (0, padding), (1, dilation),
        conv.groups, bias=conv.bias is not None,
    )  # fmt: skip
    with torch.no_grad():
        out.weight.copy_(conv.weight.unsqueeze(2))
        if conv.bias is not None and out.bias is not None:
            out.bias.copy_(conv.bias)
    return out


class PlainBlock(nn.Module):
    """One encoder block of a BatchNorm-folded model (kws.model.Block) on all-valid frames: (repeat - 1) x
    [convolutions, ReLU], the last convolutions, the residual convolution, ReLU."""

    def __init__(self, block: Block) -> None:
        super().__init__()
        self.depthwise = nn.ModuleList()
        self.pointwise = nn.ModuleList()
        for sub in block.subs:
            assert isinstance(sub, SubBlock)
            self.depthwise.append(_conv2d(sub.depthwise) if sub.depthwise is not None else nn.Identity())
            self.pointwise.append(_conv2d(sub.conv))
        self.residual = _conv2d(block.residual) if block.residual is not None else None

    def forward(self, x: Tensor) -> Tensor:
        y = x
        for i, (depthwise, pointwise) in enumerate(zip(self.depthwise, self.pointwise, strict=True)):
            y = pointwise(depthwise(y))
            if i < len(self.pointwise) - 1:
                y = F.relu(y)
        if self.residual is not None:
            y = y + self.residual(x)
        return F.relu(y)


class DeployedModel(nn.Module):
    """`(batch, WINDOW_SAMPLES)` float32 waveform -> `(batch, n_classes)` probabilities (eval mode only)."""

    def __init__(self, loaded: LoadedModel) -> None:
        super().__init__()
        extractor, model = loaded.features, loaded.model
        if not isinstance(extractor, FeatureExtractor) or not isinstance(model, Classifier):
            raise KWSError(f"{loaded.checkpoint} is not a kws model this exporter knows")
        self.mfcc = ConvMFCC(extractor.mfcc)
        self.normalize = extractor.normalize
        folded = fold_batchnorm(model)
        self.encoder = nn.ModuleList(
            PlainBlock(block) for block in folded.encoder if isinstance(block, Block)
        )
        self.head = folded.head
        n_in = int(frame_lengths(torch.tensor(WINDOW_SAMPLES), extractor.mfcc.hop_length))
        # crop_or_pad in eval mode on a clip of n_in frames: the centre n_frames, or zeros around it
        excess = n_in - extractor.n_frames
        self.crop = max(excess, 0) // 2
        self.n_frames = extractor.n_frames
        self.pad = (max(-excess, 0) // 2, max(-excess, 0) - max(-excess, 0) // 2)
        self.eval()

    def features(self, audio: Tensor) -> Tensor:
        """`(batch, WINDOW_SAMPLES)` -> `(batch, n_mfcc, n_frames)`, as kws.features.FeatureExtractor."""
        feats = self.mfcc(audio)
        if self.normalize == "per_utterance":
            lengths = torch.full((feats.shape[0],), feats.shape[2], device=feats.device)
            feats = normalize_per_utterance(feats, lengths)
        if self.crop:
            feats = feats[:, :, self.crop : self.crop + self.n_frames]
        return F.pad(feats, self.pad) if any(self.pad) else feats

    def forward(self, audio: Tensor) -> Tensor:
        x = self.features(audio).unsqueeze(2)  # (batch, n_mfcc, 1, n_frames)
        for block in self.encoder:
            x = block(x)
        return torch.softmax(self.head(x.mean((2, 3))), dim=-1)
