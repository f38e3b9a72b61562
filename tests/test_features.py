"""Features: the recipe's MFCC and crop/pad, by shape, values and batch consistency."""

from __future__ import annotations

import math

import pytest
import torch
import torchaudio

from kws.config import FeaturesConfig
from kws.features import MFCC, FeatureExtractor, crop_or_pad, frame_lengths

CFG = FeaturesConfig()


def clips(n: int, samples: int = 16000, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 16000
    freqs = 200 + 2000 * torch.rand(n, 1, generator=g)
    return 0.3 * torch.sin(2 * math.pi * freqs * t) + 0.01 * torch.randn(n, samples, generator=g)


def test_mfcc_of_one_second_is_64_by_101_and_is_torchaudio_with_the_recipe_parameters() -> None:
    audio = clips(2)
    feats, lengths = MFCC(CFG)(audio, torch.tensor([16000, 16000]))
    assert feats.shape == (2, 64, 101) and feats.dtype == torch.float32
    assert lengths.tolist() == [101, 101]
    reference = torchaudio.transforms.MFCC(
        sample_rate=16000,
        n_mfcc=64,
        dct_type=2,
        norm="ortho",
        log_mels=True,
        melkwargs=dict(
            n_fft=512,
            win_length=400,
            hop_length=160,
            n_mels=64,
            f_min=0,
            f_max=None,
            window_fn=torch.hann_window,
        ),
    )
    torch.testing.assert_close(feats, reference(audio))


def test_frame_lengths_follow_the_centred_stft() -> None:
    assert frame_lengths(torch.tensor([16000, 8000, 160, 159, 16001]), 160).tolist() == [101, 51, 2, 1, 101]


def test_one_second_is_padded_to_128_frames_13_left_14_right() -> None:
    extractor = FeatureExtractor(CFG).eval()
    audio = clips(1)
    feats, lengths = extractor(audio, torch.tensor([16000]))
    assert feats.shape == (1, 64, 128) and lengths.tolist() == [128]
    zero_frames = (feats[0] == 0).all(0)
    assert zero_frames[:13].all() and zero_frames[-14:].all() and not zero_frames[13:-14].any()
    mfcc, _ = MFCC(CFG)(audio, torch.tensor([16000]))
    torch.testing.assert_close(feats[..., 13:114], mfcc)


def test_each_clip_is_padded_by_its_own_length() -> None:
    # half a second (51 frames) inside a one-second batch: 38 zero frames left, 39 right
    audio = clips(2)
    audio[1, 8000:] = 0
    feats, _ = crop_or_pad(*MFCC(CFG)(audio, torch.tensor([16000, 8000])), 128, train=False)
    zero_frames = (feats[1] == 0).all(0)
    assert zero_frames[:38].all() and zero_frames[-39:].all() and not zero_frames[38:-39].any()


def test_long_inputs_are_centre_cropped_in_eval_and_randomly_in_training() -> None:
    feats = torch.arange(200.0).expand(3, 4, 200)  # frame t holds the value t
    lengths = torch.tensor([200, 150, 128])
    out, new_lengths = crop_or_pad(feats, lengths, 128, train=False)
    assert new_lengths.tolist() == [128, 128, 128]
    assert out[:, 0, 0].tolist() == [36.0, 11.0, 0.0]  # (length - 128) // 2
    torch.testing.assert_close(out[:, :, 1:] - out[:, :, :-1], torch.ones(3, 4, 127))  # contiguous windows

    starts = set()
    for seed in range(50):
        g = torch.Generator().manual_seed(seed)
        out, _ = crop_or_pad(feats, lengths, 128, train=True, generator=g)
        assert 0 <= out[0, 0, 0] <= 72 and 0 <= out[1, 0, 0] <= 22 and out[2, 0, 0] == 0
        assert out[0, 0, -1] - out[0, 0, 0] == 127
        starts.add(int(out[0, 0, 0]))
        again, _ = crop_or_pad(feats, lengths, 128, train=True, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(out, again)
    assert len(starts) > 20


def test_batch_gives_the_same_features_as_its_clips_one_by_one() -> None:
    audio = clips(4, samples=20000)
    lengths = torch.tensor([20000, 16000, 12345, 3000])
    extractor = FeatureExtractor(CFG).eval()
    batch, _ = extractor(audio, lengths)
    for i in range(4):
        alone, _ = extractor(audio[i : i + 1], lengths[i : i + 1])
        torch.testing.assert_close(batch[i : i + 1], alone)


def test_mfcc_is_float32_under_autocast() -> None:
    audio = clips(2)
    lengths = torch.tensor([16000, 16000])
    extractor = FeatureExtractor(CFG).eval()
    expected, _ = extractor(audio, lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats, _ = extractor(audio.bfloat16(), lengths)
    assert feats.dtype == torch.float32
    # the bf16 input is the only rounding: MFCC itself stays float32
    torch.testing.assert_close(feats, extractor(audio.bfloat16().float(), lengths)[0])
    assert (feats - expected).abs().max() < 1.0


def test_per_utterance_normalisation_gives_zero_mean_unit_variance_over_valid_frames() -> None:
    cfg = FeaturesConfig(normalize="per_utterance")
    audio = clips(2)
    feats, _ = FeatureExtractor(cfg).eval()(audio, torch.tensor([16000, 8000]))
    valid = feats[1, :, 38:89]
    torch.testing.assert_close(valid.mean(-1), torch.zeros(64), atol=1e-4, rtol=0)
    torch.testing.assert_close(valid.std(-1), torch.ones(64), atol=1e-3, rtol=0)
    assert (feats[1, :, :38] == 0).all() and (feats[1, :, 89:] == 0).all()
    with pytest.raises(ValueError, match="per_feature"):
        FeatureExtractor(FeaturesConfig(normalize="per_feature"))
