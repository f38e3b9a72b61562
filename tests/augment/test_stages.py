"""The issue-7 augmentations: shapes, determinism, eval mode, parameters respected, batch consistency."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from kws.audio import write_wav
from kws.augment.channel import apply_channel, channel_response, draw_channel
from kws.augment.config import ChannelConfig, GainConfig, NoiseConfig, RoomConfig, SpeedConfig
from kws.augment.noise import crop_noise, draw_noise, load_noise_bank, mix_at_snr
from kws.augment.perturb import apply_gain, apply_speed, draw_gain, draw_speed, fast_fft_size
from kws.augment.recipe import WaveAugment
from kws.augment.room import apply_room, draw_room, impulse_responses, measured_rt60
from kws.augment.stages import WaveStages
from kws.augment.vtlp import BOUNDARY_HZ, warp_factors, warp_frequencies, warped_filterbanks
from kws.config import AugmentConfig, FeaturesConfig, config_from_dict, load_config
from kws.errors import ConfigError
from kws.features import FeatureExtractor
from tests.helpers import REPO

SR = 16_000
ROOT = REPO
ALL_STAGES = ("speed", "gain", "noise", "room", "channel")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def speechy(batch: int, width: int = SR, seed: int = 0) -> torch.Tensor:
    """Noise bursts shaped like words in the middle of the clip."""
    g = gen(seed)
    t = torch.arange(width) / SR
    envelope = torch.exp(-(((t - 0.5) / 0.15) ** 2))
    return 0.3 * torch.randn(batch, width, generator=g) * envelope


@pytest.fixture(scope="module")
def noise_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("noise") / "_background_noise_"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, n in enumerate((3 * SR, 2 * SR)):
        write_wav(folder / f"n{i}.wav", (rng.standard_normal(n) * 3000).astype(np.int16))
    write_wav(folder / "short.wav", np.zeros(100, dtype=np.int16))  # too short: skipped
    return folder


def all_on(noise_dir: Path, **changes: object) -> AugmentConfig:
    cfg = AugmentConfig(
        order=ALL_STAGES,
        speed=SpeedConfig(prob=1.0),
        gain=GainConfig(prob=1.0),
        noise=NoiseConfig(prob=1.0, dir=str(noise_dir)),
        room=RoomConfig(prob=1.0),
        channel=ChannelConfig(prob=1.0),
    )
    return dataclasses.replace(cfg, **changes)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the composed module


def test_stages_shape_dtype_reproducible_and_eval_identity(noise_dir: Path) -> None:
    stages = WaveStages(all_on(noise_dir), SR)
    audio, lengths = speechy(6), torch.tensor([SR, SR, 12000, 9000, SR, 15000])
    a = stages.train()(audio, lengths, gen(1))
    b = stages(audio, lengths, gen(1))
    c = stages(audio, lengths, gen(2))
    assert a.shape == audio.shape and a.dtype == audio.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.isfinite(a).all()
    assert (a[lengths[:, None] <= torch.arange(SR)] == 0).all()  # padding stays zero
    assert stages.eval()(audio, lengths, gen(1)) is audio


def test_wave_augment_runs_stages_and_recipe_draws_unchanged(noise_dir: Path) -> None:
    audio, lengths = speechy(4), torch.full((4,), SR)
    recipe = WaveAugment(AugmentConfig(), SR).train()
    assert not recipe.stages.active
    # all probabilities zero: same numbers as the recipe even with stages named in `order`
    named = WaveAugment(dataclasses.replace(AugmentConfig(), order=ALL_STAGES), SR).train()
    assert torch.equal(recipe(audio, lengths, gen(3)), named(audio, lengths, gen(3)))
    robust = WaveAugment(all_on(noise_dir), SR).train()
    out = robust(audio, lengths, gen(3))
    assert out.shape == audio.shape and not torch.equal(out, recipe(audio, lengths, gen(3)))
    assert robust.eval()(audio, lengths, gen(3)) is audio


def test_probability_respected(noise_dir: Path) -> None:
    batch = 400
    factors = draw_speed(batch, (0.8, 1.25), 0.3, torch.device("cpu"), gen(0))
    share = float((factors != 1).float().mean())
    assert 0.22 < share < 0.38
    assert float(factors.min()) >= 0.8 and float(factors.max()) < 1.25


# ------------------------------------------------------------------ speed and gain


def dominant_hz(x: torch.Tensor) -> float:
    spectrum = torch.fft.rfft(x * torch.hann_window(x.shape[-1])).abs()
    return float(spectrum.argmax()) * SR / x.shape[-1]


def test_speed_factor_measured_on_a_tone() -> None:
    t = torch.arange(SR) / SR
    tone = torch.sin(2 * math.pi * 500 * t).repeat(5, 1)
    lengths = torch.full((5,), SR)
    factors = draw_speed(5, (0.8, 1.25), 1.0, torch.device("cpu"), gen(0))
    out = apply_speed(tone, lengths, factors)
    # the middle 0.5 s is inside the source for any factor in range
    for i in range(5):
        measured = dominant_hz(out[i, 4000:12000]) / 500
        assert 0.8 - 0.01 <= measured <= 1.25 + 0.01
        assert measured == pytest.approx(float(factors[i]), abs=0.01)
    assert torch.allclose(apply_speed(tone, lengths, torch.ones(5)), tone, atol=1e-3)


def test_speed_and_gain_batch_consistent() -> None:
    audio, lengths = speechy(5), torch.tensor([SR, 8000, SR, 12000, 4000])
    factors = torch.tensor([0.8, 1.0, 1.25, 0.9, 1.1])
    whole = apply_speed(audio, lengths, factors)
    for i in range(5):
        alone = apply_speed(audio[i : i + 1], lengths[i : i + 1], factors[i : i + 1])
        assert torch.allclose(whole[i : i + 1], alone, atol=1e-6)
    gains = draw_gain(5, (-6.0, 6.0), 1.0, torch.device("cpu"), gen(0))
    quiet = audio * 0.1  # no clipping at +6 dB
    ratio = apply_gain(quiet, gains).abs().amax(1) / quiet.abs().amax(1)
    assert torch.allclose(20 * torch.log10(ratio), gains, atol=1e-3)


# ------------------------------------------------------------------ background noise


def test_noise_mix_snr_within_drawn_range(noise_dir: Path) -> None:
    bank, starts, lengths_bank = load_noise_bank(noise_dir, SR)
    assert len(starts) == 2  # the short recording was skipped
    audio, lengths = speechy(8), torch.tensor([SR, SR, 12000, 8000, SR, SR, 10000, SR])
    draw = draw_noise(8, 2, (0.0, 20.0), 1.0, torch.device("cpu"), gen(0))
    noise = crop_noise(bank, starts, lengths_bank, draw, SR)
    mixed = mix_at_snr(audio, lengths, noise, draw.snr_db, draw.active)
    valid = (torch.arange(SR) < lengths[:, None]).float()
    added = mixed - audio
    snr = 10 * torch.log10((audio.square() * valid).sum(1) / (added.square() * valid).sum(1))
    assert torch.allclose(snr, draw.snr_db, atol=1e-3)
    assert float(draw.snr_db.min()) >= 0 and float(draw.snr_db.max()) <= 20
    assert (added * (1 - valid) == 0).all()
    # batch consistency: one clip alone with its own draw gives the same mix
    one = mix_at_snr(audio[2:3], lengths[2:3], noise[2:3], draw.snr_db[2:3], draw.active[2:3])
    assert torch.allclose(one, mixed[2:3])


def test_noise_crops_longer_than_a_recording_loop_inside_it(tmp_path: Path) -> None:
    # a 1 s recording (silence) beside a 3 s one (loud): 1.5 s crops of the first must stay silent
    write_wav(tmp_path / "a.wav", np.zeros(SR, dtype=np.int16))
    write_wav(tmp_path / "b.wav", np.full(3 * SR, 20000, dtype=np.int16))
    bank, starts, lengths_bank = load_noise_bank(tmp_path, SR)
    width = 3 * SR // 2
    draw = draw_noise(16, 2, (0.0, 20.0), 1.0, torch.device("cpu"), gen(0))
    noise = crop_noise(bank, starts, lengths_bank, draw, width)
    assert noise.shape == (16, width)
    assert (noise[draw.recording == 0] == 0).all() and (noise[draw.recording == 1] != 0).all()
    # a real 1 s noise, 1.5 s clips: the mix still lands at the drawn SNR
    write_wav(tmp_path / "a.wav", (np.random.default_rng(0).standard_normal(SR) * 3000).astype(np.int16))
    bank, starts, lengths_bank = load_noise_bank(tmp_path, SR)
    audio, lengths = speechy(16, width), torch.full((16,), width)
    noise = crop_noise(bank, starts, lengths_bank, draw, width)
    added = mix_at_snr(audio, lengths, noise, draw.snr_db, draw.active) - audio
    snr = 10 * torch.log10(audio.square().sum(1) / added.square().sum(1))
    assert torch.allclose(snr, draw.snr_db, atol=1e-3)
    assert float(snr.min()) >= -1e-3 and float(snr.max()) <= 20 + 1e-3


def test_noise_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_noise_bank(tmp_path / "missing", SR)
    with pytest.raises(ConfigError, match="no 16 kHz mono"):
        load_noise_bank(tmp_path, SR)
    with pytest.raises(ConfigError, match="auto"):
        WaveStages(AugmentConfig(order=("noise",), noise=NoiseConfig(prob=1.0, dir="auto")), SR)


# ------------------------------------------------------------------ rooms


def test_rt60_of_generated_impulse_responses_within_bounds() -> None:
    draw = draw_room(6, (0.2, 0.8), (0.0, 10.0), 1.0, torch.device("cpu"), gen(0))
    irs = impulse_responses(draw, int(0.8 * SR), SR, gen(1))
    assert irs.shape == (6, int(0.8 * SR))
    for i in range(6):
        tail = irs[i].clone()
        tail[0] = 0  # the direct sound would dominate the decay curve's start
        rt60 = measured_rt60(tail, SR)
        assert 0.2 * 0.85 <= rt60 <= 0.8 * 1.15
        assert rt60 == pytest.approx(float(draw.rt60_s[i]), rel=0.15)
        drr = 10 * math.log10(1 / float(tail.square().sum()))
        assert drr == pytest.approx(float(draw.drr_db[i]), abs=1e-3)


def test_room_keeps_level_and_is_batch_consistent() -> None:
    audio, lengths = speechy(4), torch.tensor([SR, 12000, SR, 9000])
    draw = draw_room(4, (0.3, 0.6), (0.0, 5.0), 1.0, torch.device("cpu"), gen(0))
    irs = impulse_responses(draw, int(0.6 * SR), SR, gen(1))
    wet = apply_room(audio, lengths, irs, draw.active)
    valid = (torch.arange(SR) < lengths[:, None]).float()
    dry_energy = (audio.square() * valid).sum(1)
    assert torch.allclose(wet.square().sum(1), dry_energy, rtol=1e-4)
    assert not torch.allclose(wet, audio * valid)
    alone = apply_room(audio[1:2], lengths[1:2], irs[1:2], draw.active[1:2])
    assert torch.allclose(alone, wet[1:2], atol=1e-6)


# ------------------------------------------------------------------ channel


def test_channel_attenuates_outside_its_band() -> None:
    draw = draw_channel(4, (300.0, 400.0), (3000.0, 3500.0), 0, 0.0, 1.0, torch.device("cpu"), gen(0))
    t = torch.arange(SR) / SR
    lengths = torch.full((4,), SR)
    level = {}
    for hz in (60.0, 1000.0, 7000.0):
        tone = torch.sin(2 * math.pi * hz * t).repeat(4, 1)
        out = apply_channel(tone, lengths, draw, SR)
        level[hz] = 20 * torch.log10(out[:, 2000:14000].std(1) / tone[:, 2000:14000].std(1))
    assert (level[1000.0].abs() < 1.0).all()  # the pass band is untouched (no peaks drawn)
    # 4th-order edges: 24 dB per octave; 60 Hz is 2.3+ octaves below, 7 kHz 1+ octave above the corner
    assert (level[60.0] < -40).all() and (level[7000.0] < -20).all()
    response = channel_response(draw, torch.tensor([1000.0]))
    assert response.shape == (4, 1)


def test_channel_batch_consistent_and_peaks_change_the_sound() -> None:
    from kws.augment.stages import take

    audio, lengths = speechy(4), torch.tensor([SR, 12000, SR, 8000])
    draw = draw_channel(4, (50.0, 400.0), (3000.0, 8000.0), 2, 8.0, 1.0, torch.device("cpu"), gen(0))
    whole = apply_channel(audio, lengths, draw, SR)
    alone = apply_channel(audio[3:4], lengths[3:4], take(draw, torch.tensor([3])), SR)
    assert torch.allclose(whole[3:4], alone, atol=1e-6)
    assert (whole[3, 8000:] == 0).all()


# ------------------------------------------------------------------ VTLP


def test_vtlp_identity_warp_and_training_only() -> None:
    cfg = FeaturesConfig(vtlp_range=(0.85, 1.15), vtlp_prob=1.0)
    fe = FeatureExtractor(cfg)
    fb = fe.mfcc.fb
    factors = warp_factors((0.85, 1.15), 31)
    assert factors[-1] == 1.0 and factors[15] == pytest.approx(1.0)
    assert torch.allclose(fe.vtlp_banks[-1], fb)
    assert torch.allclose(fe.vtlp_banks[15], fb, atol=1e-5)
    audio, lengths = speechy(3), torch.full((3,), SR)
    recipe = FeatureExtractor(FeaturesConfig()).eval()
    ref = recipe(audio, lengths)[0]
    assert torch.equal(fe.eval()(audio, lengths)[0], ref)  # eval: the recipe's filterbank
    a = fe.train()(audio, lengths, gen(0))[0]
    b = fe(audio, lengths, gen(0))[0]
    assert a.shape == ref.shape and a.dtype == ref.dtype and torch.equal(a, b)
    assert not torch.allclose(a, recipe.train()(audio, lengths, gen(0))[0])


def test_vtlp_moves_a_tone_in_the_direction_of_the_warp() -> None:
    fb = FeatureExtractor(FeaturesConfig()).mfcc.fb
    banks = warped_filterbanks(fb, torch.tensor([0.85, 1.0, 1.15]))
    # a single FFT bin at 1 kHz: its energy lands in a higher mel filter when alpha > 1
    k = round(1000 / (SR / 2) * (fb.shape[0] - 1))
    peaks = banks[:, k, :].argmax(-1)
    assert peaks[0] < peaks[1] < peaks[2]


def test_vtlp_keeps_energy_in_every_mel_band() -> None:
    fb = FeatureExtractor(FeaturesConfig()).mfcc.fb
    unwarped = fb.sum(0)
    banks = warped_filterbanks(fb, torch.tensor([0.85, 1.0, 1.15]))
    for bank in banks:
        sums = bank.sum(0)
        assert (sums > 0).all()
        assert ((sums > unwarped / 2) & (sums < unwarped * 2)).all()


def test_vtlp_warp_keeps_zero_and_nyquist_fixed() -> None:
    alpha = torch.tensor([0.85, 1.0, 1.15])
    warped = warp_frequencies(torch.tensor([0.0, BOUNDARY_HZ / 2, SR / 2]), alpha, SR / 2)
    assert torch.allclose(warped[:, 0], torch.zeros(3)) and torch.allclose(
        warped[:, 2], torch.full((3,), SR / 2)
    )
    assert torch.allclose(warped[:, 1], alpha * BOUNDARY_HZ / 2)  # linear below the knee


# ------------------------------------------------------------------ config


def test_config_validation_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"augment\.order\[0\]"):
        config_from_dict({"augment": {"order": ["echo"]}})
    with pytest.raises(ConfigError, match=r"augment\.speed\.prob"):
        config_from_dict({"augment": {"speed": {"prob": 0.5}}})  # not in order
    with pytest.raises(ConfigError, match=r"augment\.gain\.prob"):
        config_from_dict({"augment": {"order": ["gain"], "gain": {"prob": 1.5}}})
    with pytest.raises(ConfigError, match=r"augment\.room\.rt60_s"):
        config_from_dict({"augment": {"room": {"rt60_s": [0.9, 0.1]}}})
    with pytest.raises(ConfigError, match=r"noise\.dir"):
        config_from_dict({"augment": {"order": ["noise"], "noise": {"prob": 0.5}}})
    with pytest.raises(ConfigError, match=r"features\.vtlp_range"):
        config_from_dict({"features": {"vtlp_range": [0.0, 1.1]}})


def test_shipped_configs() -> None:
    exact = load_config(ROOT / "configs" / "matchboxnet_3x1x64_v1.yaml")
    assert exact.augment.order == () and exact.features.vtlp_range is None
    assert exact.augment == AugmentConfig() and exact.features.normalize is None
    robust = load_config(ROOT / "configs" / "matchboxnet_3x1x64_robust.yaml")
    assert set(robust.augment.order) == set(ALL_STAGES)
    assert robust.features.vtlp_range is not None and robust.features.vtlp_prob > 0
    # the recipe's parts are unchanged
    assert dataclasses.replace(robust, augment=exact.augment, features=exact.features) == exact


def test_fast_fft_size() -> None:
    assert fast_fft_size(16000) == 16384 and fast_fft_size(16384) == 16384 and fast_fft_size(25599) == 32768
