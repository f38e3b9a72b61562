"""QuartzNet/MatchboxNet: an encoder of masked 1-D convolution blocks built from the config's block list, and
an average-pooling classification head. `(batch, n_features, frames)`, lengths `(batch,)` ->
logits `(batch, n_classes)`.

Two layouts compute the same function with the same parameters (tests hold them within 1e-4 in float32).
On CUDA the encoder runs channels-first through cuDNN's `conv1d`. On CPU it runs channels-last,
`(batch, frames, channels)`: profiled channels-first, oneDNN's depthwise `conv1d` (mostly its backward) and
BatchNorm took most of a training step. Channels-last, every convolution is a `conv2d` on an NHWC view
(`MaskedConv1d.forward_cl`), for which oneDNN has much faster kernels, and BatchNorm reduces contiguous
rows. A MatchboxNet-3x1x64 training step (batch 128, 64 x 128 features, float32) takes about half the time
of plain channels-first `nn.Conv1d` layers on a 2-core CPU.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kws.config import BlockConfig, ModelConfig
from kws.masks import valid_mask

BN_EPS = 1e-3  # the recipe's BatchNorm epsilon (PyTorch's default is 1e-5)


def frame_mask(lengths: Tensor, n_frames: int) -> Tensor | None:
    """`valid_mask(lengths, n_frames)` (bool, `(batch, frames)`), or None when every frame of every clip is
    valid.

    None lets the convolutions skip the multiply in the common case (crop/pad makes every clip full length).
    The check reads `lengths`, so it runs only on CPU: on a GPU it would wait for the device every step, and
    under torch.compile it would break the graph; there the mask is always built (a cheap multiply).
    """
    cpu = lengths.device.type == "cpu"
    if cpu and not torch.compiler.is_compiling() and bool((lengths >= n_frames).all()):
        return None
    return valid_mask(lengths, n_frames)


class MaskedConv1d(nn.Conv1d):
    """A Conv1d that zeroes the frames at or beyond each clip's length before convolving (mask None: none).

    `forward`: `(batch, c_in, frames)` -> `(batch, c_out, frames')`; `forward_cl` the same channels-last.
    """

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:  # type: ignore[override]
        if mask is not None:
            x = x * mask[:, None, :].to(x.dtype)
        return super().forward(x)

    def forward_cl(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is not None:
            x = x * mask[:, :, None].to(x.dtype)
        (stride,), (dilation,), (kernel,) = self.stride, self.dilation, self.kernel_size
        batch, frames, channels = x.shape
        # (batch, frames, channels) is NHWC for a (batch, channels, frames, 1) image, a layout oneDNN has fast
        # kernels for. A dilated convolution is an undilated one down the columns of a (frames / d, d) image
        # (frame t = row * d + column), a zero-copy view: 11 ms instead of 124 ms (oneDNN's dilated NHWC
        # kernel) or 82 ms (conv1d) for the k=29, d=2 epilogue's forward and backward, batch 128, one core.
        fold = dilation if stride == 1 else 1
        if frames % fold:
            x = F.pad(x, (0, 0, 0, fold - frames % fold))  # zeros, like the implicit padding
        image = x.reshape(batch, -1, fold, channels).permute(0, 3, 1, 2)
        y = F.conv2d(
            image,
            self.weight.unsqueeze(3),
            self.bias,
            stride=(stride, 1),
            padding=(dilation // fold * (kernel - 1) // 2, 0),
            dilation=(dilation // fold, 1),
            groups=self.groups,
        )
        y = y.permute(0, 2, 3, 1).reshape(batch, -1, self.out_channels)
        return y[:, :frames].contiguous() if fold > 1 else y.contiguous()

    def out_lengths(self, lengths: Tensor) -> Tensor:
        """Frames out for `lengths` frames in (changes only with a stride)."""
        (d,), (k,), (s,) = self.dilation, self.kernel_size, self.stride
        pad = self.padding[0] if isinstance(self.padding, tuple) else 0
        return torch.div(lengths + 2 * pad - d * (k - 1) - 1, s, rounding_mode="floor") + 1


def _bn(bn: nn.Module, x: Tensor, channels_last: bool) -> Tensor:
    """BatchNorm over batch and frames; channels-last goes through a `(batch * frames, channels)` view."""
    return bn(x.reshape(-1, x.shape[-1])).view(x.shape) if channels_last else bn(x)


class SubBlock(nn.Module):
    """Separable: depthwise conv -> pointwise conv -> BN; dense: conv -> BN. No activation."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int, dilation: int, separable: bool
    ) -> None:
        super().__init__()
        padding = dilation * (kernel - 1) // 2  # "same" padding for odd kernels
        self.depthwise: MaskedConv1d | None = None
        if separable:
            self.depthwise = MaskedConv1d(
                c_in, c_in, kernel, stride=stride, dilation=dilation, padding=padding, groups=c_in, bias=False
            )
            self.conv = MaskedConv1d(c_in, c_out, 1, bias=False)
        else:
            self.conv = MaskedConv1d(
                c_in, c_out, kernel, stride=stride, dilation=dilation, padding=padding, bias=False
            )
        self.bn = nn.BatchNorm1d(c_out, eps=BN_EPS)

    def forward(self, x: Tensor, mask: Tensor | None, out_mask: Tensor | None, channels_last: bool) -> Tensor:
        conv = MaskedConv1d.forward_cl if channels_last else MaskedConv1d.forward
        if self.depthwise is not None:
            x = conv(self.depthwise, x, mask)
            mask = out_mask
        return _bn(self.bn, conv(self.conv, x, mask), channels_last)


class Block(nn.Module):
    """(repeat - 1) x [sub-block, ReLU, Dropout], a last sub-block, optional 1x1 residual, ReLU, Dropout."""

    def __init__(self, c_in: int, cfg: BlockConfig) -> None:
        super().__init__()
        if cfg.repeat < 1 or cfg.kernel < 1 or cfg.stride < 1 or cfg.dilation < 1 or cfg.filters < 1:
            raise ValueError(f"filters, repeat, kernel, stride and dilation must be >= 1, got {cfg}")
        if cfg.kernel % 2 != 1:
            raise ValueError(f"kernel sizes must be odd for 'same' padding, got {cfg.kernel}")
        self.stride = cfg.stride
        self.subs = nn.ModuleList(
            SubBlock(
                c_in if i == 0 else cfg.filters,
                cfg.filters,
                cfg.kernel,
                cfg.stride if i == 0 else 1,
                cfg.dilation,
                cfg.separable,
            )
            for i in range(cfg.repeat)
        )
        self.residual: MaskedConv1d | None = None
        self.residual_bn: nn.BatchNorm1d | None = None
        if cfg.residual:
            self.residual = MaskedConv1d(c_in, cfg.filters, 1, stride=cfg.stride, bias=False)
            self.residual_bn = nn.BatchNorm1d(cfg.filters, eps=BN_EPS)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, x: Tensor, lengths: Tensor, mask: Tensor | None, channels_last: bool
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """`x` `(batch, channels, frames)` or channels-last; `mask` `(batch, frames)` or None (all valid)."""
        out_mask = mask
        if self.stride > 1:
            first = self.subs[0]
            assert isinstance(first, SubBlock)
            lengths = (first.depthwise or first.conv).out_lengths(lengths)
            out_mask = frame_mask(lengths, (x.shape[1 if channels_last else 2] - 1) // self.stride + 1)
        y = x
        for i, sub in enumerate(self.subs):
            y = sub(y, mask if i == 0 else out_mask, out_mask, channels_last)
            if i < len(self.subs) - 1:
                y = self.dropout(F.relu(y))
        if self.residual is not None and self.residual_bn is not None:
            conv = MaskedConv1d.forward_cl if channels_last else MaskedConv1d.forward
            y = y + _bn(self.residual_bn, conv(self.residual, x, mask), channels_last)
        return self.dropout(F.relu(y)), lengths, out_mask


class Classifier(nn.Module):
    """Encoder + head: `(batch, n_features, frames)`, lengths `(batch,)` -> logits `(batch, n_classes)`."""

    def __init__(self, cfg: ModelConfig, n_features: int, n_classes: int) -> None:
        super().__init__()
        if not cfg.blocks:
            raise ValueError("the model needs at least one block")
        if cfg.pool not in ("all", "valid"):
            raise ValueError(f"pool must be 'all' or 'valid', got {cfg.pool!r}")
        blocks = []
        c_in = n_features
        for block_cfg in cfg.blocks:
            blocks.append(Block(c_in, block_cfg))
            c_in = block_cfg.filters
        self.encoder = nn.ModuleList(blocks)
        self.pool = cfg.pool
        self.head = nn.Linear(c_in, n_classes)
        # None: channels-last on CPU, channels-first elsewhere; set it to compare the two (tests, benchmarks).
        self.channels_last: bool | None = None
        self.encoder_frozen = False
        self.reset_parameters()

    def freeze_encoder(self) -> None:
        """Train the head only: the encoder's parameters get no gradient, and it stays in eval mode whatever
        `train()` is called with, so its BatchNorm statistics and dropout are those of inference."""
        self.encoder_frozen = True
        self.encoder.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def reset_parameters(self) -> None:
        """The recipe's init: xavier_uniform on conv and linear weights, BN weight 1 and bias 0."""
        for module in self.modules():
            if isinstance(module, (nn.Conv1d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
            elif isinstance(module, nn.BatchNorm1d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _encode(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, int]:
        """The encoder in the device's layout: returns the output, its lengths and its frame dimension."""
        channels_last = self.channels_last if self.channels_last is not None else feats.device.type == "cpu"
        lengths = lengths.to(feats.device)
        x = feats.transpose(1, 2).contiguous() if channels_last else feats
        mask = frame_mask(lengths, feats.shape[-1])
        for block in self.encoder:
            x, lengths, mask = block(x, lengths, mask, channels_last)
        return x, lengths, 1 if channels_last else 2

    def encode(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """`(batch, n_features, frames)` -> `(batch, channels, frames')` and the lengths in frames'."""
        x, lengths, time_dim = self._encode(feats, lengths)
        return (x.transpose(1, 2) if time_dim == 1 else x), lengths

    def forward(self, feats: Tensor, lengths: Tensor) -> Tensor:
        # Pool in the encoder's own layout: through a transposed view, the last ReLU's backward would get a
        # strided gradient, which is slower on CPU.
        x, lengths, time_dim = self._encode(feats, lengths)
        if self.pool == "valid":
            mask = valid_mask(lengths, x.shape[time_dim], x.dtype)
            mask = mask.unsqueeze(3 - time_dim)  # (batch, frames, 1) or (batch, 1, frames)
            pooled = (x * mask).sum(time_dim) / mask.sum(time_dim).clamp(min=1)
        else:
            pooled = x.mean(time_dim)
        return self.head(pooled)


def build_model(cfg: ModelConfig, n_features: int, n_classes: int) -> Classifier:
    """The encoder of `cfg.blocks` on `n_features` input channels, with a head of `n_classes` logits."""
    return Classifier(cfg, n_features, n_classes)


def fold_batchnorm(model: Classifier) -> Classifier:
    """An inference copy of `model` (eval mode) with every BatchNorm folded into the convolution before it:
    the same function up to float rounding, with a quarter less work on a CPU (BatchNorm took 24% of the
    encoder's time at batch 256). The original is left as it is."""
    folded = copy.deepcopy(model).eval()
    with torch.no_grad():
        for module in folded.modules():
            if isinstance(module, SubBlock):
                _fold_into(module.conv, module.bn)
                module.bn = nn.Identity()  # type: ignore[assignment]
            elif isinstance(module, Block) and module.residual is not None and module.residual_bn is not None:
                _fold_into(module.residual, module.residual_bn)
                module.residual_bn = nn.Identity()  # type: ignore[assignment]
    return folded


def _fold_into(conv: MaskedConv1d, bn: nn.BatchNorm1d) -> None:
    """conv <- bn(conv(.)) in eval mode: weights scaled per output channel, the shift as a bias."""
    assert bn.running_mean is not None and bn.running_var is not None
    scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(
        bn.running_var + bn.eps
    )
    shift = (bn.bias if bn.affine else torch.zeros_like(bn.running_mean)) - bn.running_mean * scale
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    conv.weight = nn.Parameter(conv.weight * scale[:, None, None])
    conv.bias = nn.Parameter(shift)


def mismatch_line(exc: RuntimeError) -> str:
    """The first mismatch `load_state_dict` lists (its message is a header, then one line per key)."""
    return next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
