"""Augmentation: the recipe's distributions, measured over many draws; eval mode changes nothing."""

from __future__ import annotations

import dataclasses

import torch

from kws.augment.recipe import SpecAugment, WaveAugment
from kws.config import AugmentConfig

CFG = AugmentConfig()
NO_NOISE = dataclasses.replace(CFG, white_noise_db=None)
NO_SHIFT = dataclasses.replace(CFG, time_shift_ms=0.0)
OFF = dict(cutout_rects=0, freq_masks=0, time_masks=0)


def test_eval_mode_changes_nothing() -> None:
    audio = torch.randn(8, 16000)
    feats = torch.randn(8, 64, 128)
    lengths = torch.full((8,), 16000)
    assert torch.equal(WaveAugment(CFG, 16000).eval()(audio, lengths), audio)
    assert torch.equal(SpecAugment(CFG).eval()(feats, torch.full((8,), 128)), feats)


def test_time_shift_is_within_80_samples_zero_filled_and_keeps_the_length() -> None:
    n, width = 2000, 1000
    lengths = torch.full((n,), 800)
    ramp = (torch.arange(width, dtype=torch.float32) + 1).expand(n, width) * (torch.arange(width) < 800)
    out = WaveAugment(NO_NOISE, 16000).train()(ramp, lengths, torch.Generator().manual_seed(0))
    shifts = out[:, 400] - ramp[:, 400]  # out[t] = in[t + s]
    assert shifts.min() >= -80 and shifts.max() <= 80
    assert shifts.min() <= -75 and shifts.max() >= 75  # the whole range is used
    assert abs(shifts.float().mean()) < 3
    for i in range(50):
        s = int(shifts[i])
        expected = torch.zeros(width)
        lo, hi = max(0, -s), min(800, 800 - s)
        expected[lo:hi] = ramp[i, lo + s : hi + s]
        assert torch.equal(out[i], expected)  # zeros shifted in, nothing beyond the clip's length


def test_white_noise_level_is_an_integer_number_of_db_in_range() -> None:
    n, width = 1000, 16000
    audio = torch.zeros(n, width)
    lengths = torch.full((n,), 12000)
    out = WaveAugment(NO_SHIFT, 16000).train()(audio, lengths, torch.Generator().manual_seed(0))
    assert (out[:, 12000:] == 0).all()  # padding stays silent
    level_db = 20 * torch.log10(out[:, :12000].std(-1))
    assert level_db.min() > -90.5 and level_db.max() < -46.5
    assert (level_db - level_db.round()).abs().max() < 0.2  # integer levels (std of 12000 draws: +-0.1 dB)
    levels = set(level_db.round().int().tolist())
    assert levels == set(range(-90, -46))  # every level of [-90, -47], both ends included


def test_wave_augment_is_reproducible_with_a_generator() -> None:
    audio, lengths = torch.randn(4, 16000), torch.full((4,), 16000)
    aug = WaveAugment(CFG, 16000).train()
    first = aug(audio, lengths, torch.Generator().manual_seed(3))
    assert torch.equal(first, aug(audio, lengths, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, aug(audio, lengths, torch.Generator().manual_seed(4)))


def runs(row: torch.Tensor) -> list[tuple[int, int]]:
    """(start, width) of the runs of True in a 1-D bool tensor."""
    padded = torch.cat([torch.tensor([False]), row, torch.tensor([False])]).int()
    edges = padded[1:] - padded[:-1]
    starts, ends = (edges == 1).nonzero().flatten(), (edges == -1).nonzero().flatten()
    return [(int(s), int(e - s)) for s, e in zip(starts, ends, strict=True)]


def test_freq_and_time_masks_stay_within_their_widths() -> None:
    n = 2000
    ones, lengths = torch.ones(n, 64, 128), torch.full((n,), 128)
    g = torch.Generator().manual_seed(0)
    freq = SpecAugment(dataclasses.replace(CFG, **{**OFF, "freq_masks": 1})).train()(ones, lengths, g)
    widths = []
    for clip in freq[:500]:
        masked_rows = (clip == 0).all(-1)
        assert ((clip == 0) | (clip == 1)).all() and ((clip == 0).any(-1) == masked_rows).all()
        bands = runs(masked_rows)
        assert len(bands) <= 1 and all(s + w <= 64 and s <= 64 - 15 for s, w in bands)
        widths.append(bands[0][1] if bands else 0)
    assert max(widths) == 15 and min(widths) == 0

    time = SpecAugment(dataclasses.replace(CFG, **{**OFF, "time_masks": 1})).train()(ones, lengths, g)
    widths = []
    for clip in time[:500]:
        bands = runs((clip == 0).all(0))
        assert len(bands) <= 1 and all(s <= 128 - 25 for s, _ in bands)
        widths.append(bands[0][1] if bands else 0)
    assert max(widths) == 25 and min(widths) == 0

    both = SpecAugment(dataclasses.replace(CFG, cutout_rects=0)).train()(ones, lengths, g)
    freq_masked = (both == 0).all(-1).sum(-1)
    time_masked = (both == 0).all(1).sum(-1)
    assert freq_masked.max() <= 30 and time_masked.max() <= 50  # two bands each


def test_cutout_rectangles_stay_within_their_sizes() -> None:
    n = 500
    ones, lengths = torch.ones(n, 64, 128), torch.full((n,), 128)
    cfg = dataclasses.replace(CFG, **{**OFF, "cutout_rects": 1})
    out = SpecAugment(cfg).train()(ones, lengths, torch.Generator().manual_seed(0))
    heights, widths = [], []
    for clip in out:
        masked = clip == 0
        rows, cols = masked.any(-1).nonzero().flatten(), masked.any(0).nonzero().flatten()
        if len(rows) == 0:
            continue
        # exactly one filled rectangle
        assert (
            masked.sum() == len(rows) * len(cols)
            and masked[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all()
        )
        heights.append(len(rows))
        widths.append(len(cols))
    assert max(heights) == 15 and max(widths) == 25
    full = SpecAugment(dataclasses.replace(CFG, **{**OFF, "cutout_rects": 5})).train()(ones, lengths)
    assert (full == 0).sum((1, 2)).max() <= 5 * 15 * 25


def test_spec_augment_only_zeroes_values_and_is_reproducible() -> None:
    feats = torch.randn(16, 64, 128)
    lengths = torch.full((16,), 128)
    aug = SpecAugment(CFG).train()
    out = aug(feats, lengths, torch.Generator().manual_seed(1))
    changed = out != feats
    assert (out[changed] == 0).all() and changed.any()
    assert torch.equal(out, aug(feats, lengths, torch.Generator().manual_seed(1)))
    assert torch.equal(SpecAugment(dataclasses.replace(CFG, **OFF)).train()(feats, lengths), feats)
