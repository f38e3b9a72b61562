"""Features: the recipe's MFCC and crop/pad, by shape, values and batch consistency."""

from __future__ import annotations

import math

import pytest
import torch
import torchaudio

from kws.config import FeaturesConfig
from kws.features import MFCC, FeatureExtractor, crop_or_pad, frame_lengths
from tests.helpers import REPO

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


# features.pad: "batch" is NeMo's padding (collate to the widest clip, MFCC, batch-wide crop/pad)


def extractor_with_pad(pad: str, cfg: FeaturesConfig = CFG) -> FeatureExtractor:
    extractor = FeatureExtractor(cfg)
    extractor.pad = pad
    return extractor


def reference_mfcc() -> torchaudio.transforms.MFCC:
    return torchaudio.transforms.MFCC(
        sample_rate=16000,
        n_mfcc=64,
        dct_type=2,
        norm="ortho",
        log_mels=True,
        melkwargs=dict(n_fft=512, win_length=400, hop_length=160, n_mels=64, window_fn=torch.hann_window),
    )


def short_clips(seconds: list[float], width_s: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips of the given durations in a `(batch, width)` tensor wider than any of them, with loud junk (not
    zeros) past each clip's length: padding content must not matter."""
    lengths = torch.tensor([round(s * 16000) for s in seconds])
    audio = clips(len(seconds), samples=round(width_s * 16000), seed=3)
    audio = torch.where(torch.arange(audio.shape[1]) < lengths[:, None], audio, torch.full_like(audio, 0.7))
    return audio, lengths


def nemo_features(audio: torch.Tensor, lengths: torch.Tensor, n_frames: int = 128) -> torch.Tensor:
    """What NeMo 1.x computes, by hand: zero-pad every clip to the batch's widest (its collate function),
    torchaudio's MFCC over that batch, then pad the whole batch symmetrically (odd frame right) or crop it
    (at the centre, kws's eval crop)."""
    widest = int(lengths.max())
    batch = torch.zeros(len(lengths), widest)
    for i, n in enumerate(lengths.tolist()):
        batch[i, :n] = audio[i, :n]
    feats = reference_mfcc()(batch)
    frames = feats.shape[-1]
    if frames > n_frames:
        start = (frames - n_frames) // 2
        return feats[..., start : start + n_frames]
    left = (n_frames - frames) // 2
    return torch.nn.functional.pad(feats, (left, n_frames - frames - left))


@pytest.mark.parametrize(
    ("seconds", "frames"),
    [([0.6, 1.0, 1.2], 121), ([1.0, 0.6], 101), ([0.6, 1.4, 0.25], 141)],
)
def test_batch_pad_is_nemo_mfcc_of_the_zero_padded_batch_then_a_batch_wide_crop_or_pad(
    seconds: list[float], frames: int
) -> None:
    audio, lengths = short_clips(seconds, width_s=1.5)
    feats, feat_lengths = extractor_with_pad("batch").eval()(audio, lengths)
    expected = nemo_features(audio, lengths)
    assert reference_mfcc()(audio[:, : int(lengths.max())]).shape[-1] == frames
    assert feats.shape == (len(seconds), 64, 128) and feat_lengths.tolist() == [128] * len(seconds)
    torch.testing.assert_close(feats, expected, atol=1e-5, rtol=1e-5)


def test_batch_pad_gives_a_short_clip_frames_of_silence_where_clip_pad_gives_zeros() -> None:
    audio, lengths = short_clips([0.6, 1.0], width_s=1.0)
    batch_feats, _ = extractor_with_pad("batch").eval()(audio, lengths)
    clip_feats, _ = extractor_with_pad("clip").eval()(audio, lengths)
    # 1 s -> 101 frames, 13 zero frames left; the 0.6 s clip's frames 13 + 61.. are past its end (plus one
    # window of overlap): digital silence, log(1e-6) in every mel band, whose DCT is c0 = 8 * log(1e-6).
    silence = batch_feats[0, :, 13 + 64 : 13 + 101]
    torch.testing.assert_close(silence[0], torch.full((37,), 8 * math.log(1e-6)))
    torch.testing.assert_close(silence[1:], torch.zeros(63, 37), atol=1e-3, rtol=0)
    assert (batch_feats[0, :, :13] == 0).all() and (batch_feats[0, :, -14:] == 0).all()
    # clip mode: the 0.6 s clip (61 frames) alone, centred, zeros around it
    zero_frames = (clip_feats[0] == 0).all(0)
    assert zero_frames[:33].all() and zero_frames[-34:].all() and not zero_frames[33:-34].any()
    # both agree on the 1 s clip, which fills the batch
    torch.testing.assert_close(batch_feats[1], clip_feats[1])


def test_batch_pad_crops_each_clip_at_its_own_random_offset_in_training() -> None:
    audio, lengths = short_clips([0.6, 1.4, 0.25], width_s=1.5)  # widest 141 frames: 13 to crop
    full = nemo_features(audio, lengths, n_frames=141)  # the uncropped batch
    extractor = extractor_with_pad("batch").train()
    offsets: set[int] = set()
    for seed in range(20):
        feats, _ = extractor(audio, lengths, torch.Generator().manual_seed(seed))
        for i in range(3):
            matches = [o for o in range(14) if torch.allclose(feats[i], full[i, :, o : o + 128], atol=1e-4)]
            assert len(matches) == 1
            offsets.add(matches[0])
    assert len(offsets) > 5


def test_checkpoints_and_configs_without_pad_keep_clip_padding() -> None:
    from kws.config import config_from_dict

    cfg = config_from_dict({"features": {"n_mfcc": 64}}, source="old checkpoint")
    assert FeatureExtractor(cfg.features).pad == "clip"


def test_the_recipe_configs_pad_as_nemo_and_a_bad_pad_names_the_key() -> None:

    from kws.config import config_from_dict, load_config
    from kws.errors import ConfigError

    configs = REPO / "configs"
    recipes = ("matchboxnet_3x1x64_v1", "matchboxnet_3x1x64_v2", "matchboxnet_3x2x64_v2", "quartznet_3x1_v1")
    for name in recipes:
        assert FeatureExtractor(load_config(configs / f"{name}.yaml").features).pad == "batch", name
    assert FeatureExtractor(FeaturesConfig(pad="batch")).pad == "batch"
    with pytest.raises(ConfigError, match=r"`features.pad` must be one of \['clip', 'batch'\], got 'widest'"):
        config_from_dict({"features": {"pad": "widest"}}, source="x.yaml")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batch_pad_on_cuda_matches_the_cpu() -> None:
    audio, lengths = short_clips([0.6, 1.0, 1.2], width_s=1.5)
    extractor = extractor_with_pad("batch").eval()
    expected, _ = extractor(audio, lengths)
    feats, feat_lengths = extractor.cuda()(audio.cuda(), lengths.cuda())
    assert feats.is_cuda and feat_lengths.tolist() == [128, 128, 128]
    torch.testing.assert_close(feats.cpu(), expected, atol=1e-3, rtol=1e-4)
