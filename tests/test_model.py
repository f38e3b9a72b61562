"""Model: the recipe's parameter counts, init, masking, batch consistency, and the two layouts agreeing."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from torch import nn

from kws.config import BlockConfig, ModelConfig
from kws.masks import valid_mask
from kws.model import Classifier, MaskedConv1d, build_model, count_parameters, frame_mask

MATCHBOX_3X1 = ModelConfig()
MATCHBOX_3X2 = ModelConfig(
    blocks=tuple(dataclasses.replace(b, repeat=2) if b.residual else b for b in MATCHBOX_3X1.blocks)
)
SMALL = ModelConfig(
    blocks=(
        BlockConfig(filters=16, kernel=11, separable=True),
        BlockConfig(filters=16, repeat=2, kernel=13, residual=True, separable=True),
        BlockConfig(filters=24, kernel=7, dilation=2, separable=True),
        BlockConfig(filters=24, kernel=3),
        BlockConfig(filters=24, kernel=1),
    )
)


@pytest.mark.parametrize(
    ("cfg", "n_classes", "expected"),
    [
        (MATCHBOX_3X1, 30, 77_214),
        (MATCHBOX_3X1, 35, 77_859),
        (MATCHBOX_3X1, 12, 74_892),
        (MATCHBOX_3X2, 30, 92_766),
        (MATCHBOX_3X2, 35, 93_411),
        (MATCHBOX_3X2, 12, 90_444),
    ],
)
def test_parameter_counts_match_the_recipe(cfg: ModelConfig, n_classes: int, expected: int) -> None:
    assert count_parameters(build_model(cfg, 64, n_classes)) == expected


def test_init_is_xavier_uniform_and_bn_uses_eps_1e3() -> None:
    torch.manual_seed(0)
    model = build_model(MATCHBOX_3X1, 64, 30)
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Linear)):
            fan_in = module.weight[0].numel()
            fan_out = module.weight.shape[0] * module.weight[0, 0].numel()
            bound = math.sqrt(6 / (fan_in + fan_out))
            assert module.weight.abs().max() <= bound
            assert module.weight.abs().max() > 0.9 * bound  # uniform over the whole range
        if isinstance(module, nn.BatchNorm1d):
            assert module.eps == 1e-3
            assert (module.weight == 1).all() and (module.bias == 0).all()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d)]
    assert all(isinstance(m, MaskedConv1d) and m.bias is None for m in convs)


def test_logits_shape() -> None:
    model = build_model(MATCHBOX_3X1, 64, 30)
    assert model(torch.randn(3, 64, 128), torch.full((3,), 128)).shape == (3, 30)


def test_the_encoder_mask_is_the_shared_valid_mask_and_none_when_every_frame_is_valid() -> None:
    lengths = torch.tensor([3, 0, 5])
    assert valid_mask(lengths, 4).tolist() == [[1, 1, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]]
    assert valid_mask(lengths, 4).dtype == torch.bool
    assert valid_mask(lengths, 4, torch.float16).tolist()[0] == [1.0, 1.0, 1.0, 0.0]
    mask = frame_mask(lengths, 4)
    assert mask is not None and torch.equal(mask, valid_mask(lengths, 4))
    assert frame_mask(torch.tensor([128, 130]), 128) is None  # crop/pad makes every clip full: no multiply


@pytest.mark.parametrize("channels_last", [True, False])
def test_frames_beyond_the_length_do_not_change_the_valid_output(channels_last: bool) -> None:
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(SMALL, pool="valid"), 64, 5)
    model.channels_last = channels_last
    model.train()
    for _ in range(3):  # give BatchNorm non-trivial running statistics
        model(torch.randn(8, 64, 128), torch.full((8,), 128))
    model.eval()
    clip = torch.randn(1, 64, 80)
    alone, alone_lengths = model.encode(clip, torch.tensor([80]))
    for tail in (torch.zeros(1, 64, 48), 100 * torch.randn(1, 64, 48)):
        padded = torch.cat([clip, tail], -1)
        encoded, lengths = model.encode(padded, torch.tensor([80]))
        assert lengths.tolist() == alone_lengths.tolist() == [80]
        torch.testing.assert_close(encoded[..., :80], alone, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(padded, torch.tensor([80])), model(clip, torch.tensor([80])))


@pytest.mark.parametrize("channels_last", [True, False])
def test_a_batch_gives_the_same_outputs_as_its_clips_one_by_one(channels_last: bool) -> None:
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(SMALL, pool="valid"), 64, 5).eval()
    model.channels_last = channels_last
    feats = torch.randn(4, 64, 128)
    for lengths in (torch.full((4,), 128), torch.tensor([128, 100, 64, 1])):
        batch = model(feats, lengths)
        for i in range(4):
            alone = model(feats[i : i + 1, :, : int(lengths[i])], lengths[i : i + 1])
            torch.testing.assert_close(batch[i : i + 1], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_channels_last_and_channels_first_agree_in_training(dtype: torch.dtype, tol: float) -> None:
    # The CPU layout (channels-last, custom depthwise) against plain nn.Conv1d layers with the same
    # parameters: the same function (float64), and within 1e-4 in float32 (summation order differs).
    torch.manual_seed(0)
    fast = build_model(MATCHBOX_3X1, 64, 30).train().to(dtype)
    fast.channels_last = True
    plain = copy.deepcopy(fast)
    plain.channels_last = False
    feats, labels = torch.randn(16, 64, 128, dtype=dtype), torch.randint(0, 30, (16,))
    for lengths in (torch.full((16,), 128), torch.randint(40, 129, (16,))):
        outputs = []
        for model in (fast, plain):
            model.zero_grad()
            logits = model(feats, lengths)
            nn.functional.cross_entropy(logits, labels).backward()
            outputs.append(logits)
        torch.testing.assert_close(outputs[0], outputs[1], atol=tol, rtol=0)
        for (name, p), q in zip(fast.named_parameters(), plain.parameters(), strict=True):
            assert p.grad is not None and q.grad is not None
            assert (p.grad - q.grad).abs().max() < tol, name
        for a, b in zip(fast.buffers(), plain.buffers(), strict=True):
            torch.testing.assert_close(a, b, atol=tol, rtol=0)


@pytest.mark.parametrize(
    ("c_out", "kernel", "dilation", "stride", "groups"),
    [(4, 11, 1, 1, 4), (4, 29, 2, 1, 4), (4, 7, 3, 1, 4), (6, 1, 1, 1, 1), (6, 5, 2, 1, 2), (4, 5, 2, 2, 4)],
)
def test_channels_last_convolution_is_conv1d(
    c_out: int, kernel: int, dilation: int, stride: int, groups: int
) -> None:
    # The CPU layout's conv2d on an NHWC view (dilation folded into columns) against nn.Conv1d, values and
    # gradients; 21 frames are not a multiple of the dilation.
    torch.manual_seed(0)
    pad = dilation * (kernel - 1) // 2
    conv = MaskedConv1d(4, c_out, kernel, stride, pad, dilation, groups, bias=groups == 2).double()
    x = torch.randn(3, 4, 21, dtype=torch.float64, requires_grad=True)
    mask = torch.arange(21) < torch.tensor([21, 15, 3])[:, None]
    expected = conv(x, mask)
    got = conv.forward_cl(x.transpose(1, 2), mask).transpose(1, 2)
    torch.testing.assert_close(got, expected)
    grad = torch.randn_like(expected)
    params = [x, *conv.parameters()]
    for a, b in zip(
        torch.autograd.grad(expected, params, grad), torch.autograd.grad(got, params, grad), strict=True
    ):
        torch.testing.assert_close(a, b)


def test_strided_blocks_shorten_the_lengths() -> None:
    cfg = ModelConfig(
        blocks=(
            BlockConfig(filters=8, kernel=5, stride=2, separable=True, residual=True),
            BlockConfig(filters=8, kernel=3, separable=True),
        )
    )
    model = build_model(cfg, 64, 3).eval()
    for channels_last in (True, False):
        model.channels_last = channels_last
        encoded, lengths = model.encode(torch.randn(2, 64, 128), torch.tensor([128, 101]))
        assert encoded.shape == (2, 8, 64) and lengths.tolist() == [64, 51]


def test_bad_model_configs_are_value_errors() -> None:
    with pytest.raises(ValueError, match="odd"):
        Classifier(ModelConfig(blocks=(BlockConfig(filters=8, kernel=4),)), 64, 3)
    with pytest.raises(ValueError, match="pool"):
        Classifier(ModelConfig(pool="max"), 64, 3)
    with pytest.raises(ValueError, match="at least one block"):
        Classifier(ModelConfig(blocks=()), 64, 3)


def test_runs_under_bf16_autocast() -> None:
    model = build_model(SMALL, 64, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randn(4, 64, 128), torch.full((4,), 128))
    logits.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
