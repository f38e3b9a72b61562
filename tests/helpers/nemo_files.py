"""`.nemo` files built in the tests, and an independent forward pass with NeMo's semantics to hold kws's
import to. No NeMo needed: the modules below mirror NeMo's own layout (`nemo/collections/asr/modules/
conv_asr.py`, `parts/submodules/jasper.py`, `modules/audio_preprocessing.py`), so their `state_dict()` has
NeMo's parameter names, and their forward follows NeMo's: channels-first masked convolutions, lengths
`ceil(samples / hop)` from the preprocessor, NeMo 1.x's crop/pad, average pooling over all frames.
"""

from __future__ import annotations

import copy
import io
import math
import tarfile
from pathlib import Path
from typing import Any

import torch
import torchaudio
import yaml
from torch import Tensor, nn

V1_LABELS = sorted(
    "bed bird cat dog down eight five four go happy house left marvin nine no off on one right seven sheila "
    "six stop three tree two up wow yes zero".split()
)


def matchboxnet_config(labels: list[str], repeat: int = 1, conv_mask: bool = True) -> dict[str, Any]:
    """A resolved `model_config.yaml` as NeMo saves it for MatchboxNet-3x{repeat}x64 (its example config)."""

    def block(
        filters: int, kernel: int, residual: bool, rep: int = 1, dilation: int = 1, sep: bool = True
    ) -> dict[str, Any]:
        return {
            "filters": filters,
            "repeat": rep,
            "kernel": [kernel],
            "stride": [1],
            "dilation": [dilation],
            "dropout": 0.0,
            "residual": residual,
            "separable": sep,
            "kernel_size_factor": 1.0,
        }

    return {
        "sample_rate": 16000,
        "timesteps": 128,
        "labels": list(labels),
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMFCCPreprocessor",
            "window_size": 0.025,
            "window_stride": 0.01,
            "window": "hann",
            "n_mels": 64,
            "n_mfcc": 64,
            "n_fft": 512,
        },
        "spec_augment": {"_target_": "nemo.collections.asr.modules.SpectrogramAugmentation", "freq_masks": 2},
        "crop_or_pad_augment": {
            "_target_": "nemo.collections.asr.modules.CropOrPadSpectrogramAugmentation",
            "audio_length": 128,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConvASREncoder",
            "feat_in": 64,
            "activation": "relu",
            "conv_mask": conv_mask,
            "jasper": [
                block(128, 11, False),
                block(64, 13, True, repeat),
                block(64, 15, True, repeat),
                block(64, 17, True, repeat),
                block(128, 29, False, dilation=2),
                {**block(128, 1, False), "separable": False},
            ],
        },
        "decoder": {
            "_target_": "nemo.collections.asr.modules.ConvASRDecoderClassification",
            "feat_in": 128,
            "num_classes": len(labels),
            "return_logits": True,
            "pooling_type": "avg",
        },
        "target": "nemo.collections.asr.models.classification_models.EncDecClassificationModel",
    }


def mixed_config(labels: list[str]) -> dict[str, Any]:
    """A QuartzNet-like encoder exercising the rest of the mapping: dense blocks repeated 2 and 3 times,
    kernel_size_factor, a strided block with a strided residual (residual_mode stride_add), dilation."""
    cfg = matchboxnet_config(labels)

    def block(filters: int, kernel: int, **more: Any) -> dict[str, Any]:
        base = {"filters": filters, "repeat": 1, "kernel": [kernel], "stride": [1], "dilation": [1]}
        return {**base, "dropout": 0.0, "residual": False, "separable": False, **more}

    cfg["encoder"]["jasper"] = [
        block(96, 11, separable=True),
        block(64, 11, repeat=2, residual=True, kernel_size_factor=0.5),  # kernel 5
        block(64, 9, repeat=3),
        block(80, 13, stride=[2], residual=True, residual_mode="stride_add", separable=True),
        block(80, 15, dilation=[2], separable=True, kernel_size_factor=1.5),  # kernel 23
        block(96, 1),
    ]
    cfg["decoder"]["feat_in"] = 96
    return cfg


class MaskedConv1d(nn.Module):
    """NeMo's: zero the frames at or past each length, then the convolution (kept one level down); lengths
    follow a stride."""

    def __init__(self, conv: nn.Conv1d, mask: bool) -> None:
        super().__init__()
        self.conv, self.use_mask = conv, mask

    def forward(self, x: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        if self.use_mask:
            valid = torch.arange(x.shape[2])[None, :] < lens[:, None]
            x = x.masked_fill(~valid[:, None, :], 0.0)
        (k,), (s,), (d,), (p,) = (
            self.conv.kernel_size,
            self.conv.stride,
            self.conv.dilation,
            self.conv.padding,
        )
        return self.conv(x), torch.div(lens + 2 * p - d * (k - 1) - 1, s, rounding_mode="trunc") + 1


def _conv(
    c_in: int, c_out: int, kernel: int, dilation: int, groups: int, mask: bool, stride: int = 1
) -> nn.Module:
    """ "Same" padding, no bias: NeMo's convolutions in a MatchboxNet; wrapped when masked (conv_mask)."""
    pad = dilation * (kernel - 1) // 2
    conv = nn.Conv1d(c_in, c_out, kernel, stride, pad, dilation, groups, bias=False)
    return MaskedConv1d(conv, mask) if mask else conv


def _apply(layer: nn.Module, x: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
    if isinstance(layer, MaskedConv1d):
        return layer(x, lens)
    if isinstance(layer, nn.Conv1d):  # unmasked: the lengths still follow a stride
        (k,), (s,), (d,), (p,) = layer.kernel_size, layer.stride, layer.dilation, layer.padding
        return layer(x), torch.div(lens + 2 * p - d * (k - 1) - 1, s, rounding_mode="trunc") + 1
    return layer(x), lens


def _kernel(cfg: dict[str, Any]) -> int:
    """NeMo's compute_new_kernel_size: the kernel scaled by kernel_size_factor, rounded up to odd."""
    size = max(int(cfg["kernel"][0] * cfg.get("kernel_size_factor", 1.0)), 1)
    return size + 1 if size % 2 == 0 else size


class JasperBlock(nn.Module):
    def __init__(self, c_in: int, cfg: dict[str, Any], mask: bool) -> None:
        super().__init__()
        filters, kernel, dilation, stride = cfg["filters"], _kernel(cfg), cfg["dilation"][0], cfg["stride"][0]
        assert stride == 1 or cfg["repeat"] == 1, "NeMo strides every sub-block: one sub-block here"
        self.mconv = nn.ModuleList()
        c = c_in
        for j in range(cfg["repeat"]):
            if cfg["separable"]:
                self.mconv.append(_conv(c, c, kernel, dilation, c, mask, stride))
                self.mconv.append(_conv(c, filters, 1, 1, 1, mask))
            else:
                self.mconv.append(_conv(c, filters, kernel, dilation, 1, mask, stride))
            self.mconv.append(nn.BatchNorm1d(filters, eps=1e-3))
            if j < cfg["repeat"] - 1:
                self.mconv.extend([nn.ReLU(), nn.Dropout(cfg["dropout"])])
            c = filters
        self.res = None
        if cfg["residual"]:
            res_stride = stride if cfg.get("residual_mode") == "stride_add" else 1
            residual = [_conv(c_in, filters, 1, 1, 1, mask, res_stride), nn.BatchNorm1d(filters, eps=1e-3)]
            self.res = nn.ModuleList([nn.ModuleList(residual)])
        self.mout = nn.Sequential(nn.ReLU(), nn.Dropout(cfg["dropout"]))

    def forward(self, x: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        out, out_lens = x, lens
        for layer in self.mconv:
            out, out_lens = _apply(layer, out, out_lens)
        if self.res is not None:
            res = x
            for layer in self.res[0]:
                res, _ = _apply(layer, res, lens)
            out = out + res
        return self.mout(out), out_lens


class _Encoder(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        blocks, c = [], cfg["feat_in"]
        for block in cfg["jasper"]:
            blocks.append(JasperBlock(c, block, cfg["conv_mask"]))
            c = block["filters"]
        self.encoder = nn.Sequential(*blocks)

    def forward(self, x: Tensor, lens: Tensor) -> Tensor:
        for block in self.encoder:
            x, lens = block(x, lens)
        return x


class _Preprocessor(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        win, self.hop = int(cfg["window_size"] * 16000), int(cfg["window_stride"] * 16000)
        self.featurizer = torchaudio.transforms.MFCC(
            sample_rate=16000,
            n_mfcc=cfg["n_mfcc"],
            dct_type=2,
            norm="ortho",
            log_mels=True,
            melkwargs={
                "f_min": 0.0,
                "f_max": None,
                "n_mels": cfg["n_mels"],
                "n_fft": cfg["n_fft"],
                "win_length": win,
                "hop_length": self.hop,
                "window_fn": torch.hann_window,
            },
        )

    def forward(self, audio: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return self.featurizer(audio), torch.ceil(lengths.float() / self.hop).long()


class _Decoder(nn.Module):
    def __init__(self, feat_in: int, n_classes: int) -> None:
        super().__init__()
        self.pooling = nn.AdaptiveAvgPool1d(1)
        self.decoder_layers = nn.Sequential(nn.Linear(feat_in, n_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder_layers(self.pooling(x).flatten(1))


def crop_or_pad(feats: Tensor, lens: Tensor, n_frames: int) -> tuple[Tensor, Tensor]:
    """NeMo's CropOrPadSpectrogramAugmentation for inputs no longer than `n_frames`: symmetric zero padding
    of the whole batch, the odd frame on the right; every length becomes `n_frames`."""
    width = feats.shape[-1]
    assert width <= n_frames, "the reference does not crop (NeMo crops at random)"
    left = (n_frames - width) // 2
    feats = nn.functional.pad(feats, (left, n_frames - width - left))
    return feats, torch.full_like(lens, n_frames)


class NemoReference(nn.Module):
    """`EncDecClassificationModel` with NeMo's module names: `(batch, samples)`, lengths -> logits."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.cfg = copy.deepcopy(cfg)
        self.preprocessor = _Preprocessor(cfg["preprocessor"])
        self.encoder = _Encoder(cfg["encoder"])
        self.decoder = _Decoder(cfg["decoder"]["feat_in"], len(cfg["labels"]))

    def forward(self, audio: Tensor, lengths: Tensor, crop_pad: bool = True) -> Tensor:
        """`crop_pad`: NeMo 1.x's forward (crop/pad to audio_length); False: NeMo 3.x's."""
        feats, lens = self.preprocessor(audio, lengths)
        if crop_pad:
            feats, lens = crop_or_pad(feats, lens, self.cfg["crop_or_pad_augment"]["audio_length"])
        return self.decoder(self.encoder(feats, lens))


def randomized(cfg: dict[str, Any], seed: int = 0) -> NemoReference:
    """A reference model in eval mode whose every weight and BatchNorm statistic is drawn from `seed`, scaled
    so that its probabilities are not saturated."""
    model = NemoReference(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.startswith("preprocessor.") or not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=g))
            elif name.endswith("running_mean") or name.endswith("bn.bias") or ".bias" in name:
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=g))
            elif tensor.dim() == 1:  # BatchNorm weights
                tensor.copy_(0.8 + 0.4 * torch.rand(tensor.shape, generator=g))
            else:
                fan_in = math.prod(tensor.shape[1:])
                gain = 6.0 if name.startswith("decoder.") else 1.0  # confident, not uniform, outputs
                tensor.copy_(gain * torch.randn(tensor.shape, generator=g) / math.sqrt(fan_in))
    return model.eval()


def write_nemo(
    path: Path,
    model: NemoReference,
    gzip: bool = False,
    config: dict[str, Any] | None = None,
    weights: dict[str, Tensor] | None = None,
) -> Path:
    """`path` as NeMo's save_to writes it: `./model_config.yaml` and `./model_weights.ckpt` in a tar (gzip
    with `gzip`). `config`/`weights` replace the model's own (to build broken files)."""
    members = {
        "./model_config.yaml": yaml.safe_dump(config if config is not None else model.cfg).encode(),
        "./model_weights.ckpt": _saved(weights if weights is not None else model.state_dict()),
    }
    with tarfile.open(path, "w:gz" if gzip else "w:") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _saved(state: dict[str, Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def sample_audio(n: int = 6, seed: int = 0) -> tuple[Tensor, Tensor]:
    """`n` one-second clips (tones, chirps and noise at several levels), `(n, 16000)`, and their lengths."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(16000) / 16000
    clips = []
    for i in range(n):
        f0 = 200.0 + 300.0 * i
        tone = torch.sin(2 * math.pi * (f0 * t + 400.0 * (i % 3) * t * t))
        clips.append((0.05 + 0.1 * i) * tone + 0.02 * (i % 2 + 1) * torch.randn(16000, generator=g))
    return torch.stack(clips).clamp(-1, 1), torch.full((n,), 16000)
