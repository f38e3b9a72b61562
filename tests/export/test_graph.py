"""The deployed model (kws.export.graph) and its convolutional MFCC compute what kws's own inference does."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from kws.checkpoint import LoadedModel, load_for_inference
from kws.config import load_config
from kws.export.frontend import ConvMFCC, _Layout, _split
from kws.export.graph import WINDOW_SAMPLES, DeployedModel
from kws.features import MFCC
from tests.helpers import CONFIGS, SMOKE
from tests.helpers.checkpoints import random_checkpoint

LABELS = ["down", "go", "unknown", "silence"]


def speechlike(n: int, seed: int = 0) -> torch.Tensor:
    """`(n, WINDOW_SAMPLES)`: chirps in noise at levels from quiet to loud, and one silent window."""
    rng = np.random.default_rng(seed)
    t = np.arange(WINDOW_SAMPLES) / 16000
    out = []
    for i in range(n):
        f0, f1 = rng.uniform(150, 5000, size=2)
        wave = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / 2)) + 0.1 * rng.standard_normal(len(t))
        out.append(10 ** rng.uniform(-3, -0.5) * wave * (i > 0))
    return torch.tensor(np.array(out), dtype=torch.float32)


def own_probs(loaded: LoadedModel, audio: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        feats, lengths = loaded.features(audio, torch.full((len(audio),), audio.shape[1]))
        return torch.softmax(loaded.model(feats, lengths), dim=-1)


@pytest.mark.parametrize(
    "config, overrides",
    [
        (SMOKE, {}),
        (CONFIGS / "matchboxnet_3x1x64_v1.yaml", {}),
        (SMOKE, {"normalize": "per_utterance"}),
        (SMOKE, {"n_frames": 96}),  # crop instead of pad
    ],
    ids=["smoke", "matchboxnet_3x1x64", "per_utterance", "crop"],
)
def test_the_deployed_model_scores_what_kws_scores(tmp_path: Path, config: Path, overrides: dict) -> None:
    cfg = load_config(config)
    cfg = replace(cfg, features=replace(cfg.features, **overrides))
    path = random_checkpoint(tmp_path / "best.pt", cfg, LABELS, step=5, batchnorm_stats=True)
    loaded = load_for_inference(path, torch.device("cpu"))
    audio = speechlike(16)
    with torch.inference_mode():
        deployed = DeployedModel(loaded)(audio)
    expected = own_probs(loaded, audio)
    assert deployed.shape == (16, len(LABELS))
    assert torch.allclose(deployed.sum(1), torch.ones(16), atol=1e-5)
    assert (deployed - expected).abs().max() < 1e-5
    assert torch.equal(deployed.argmax(1), expected.argmax(1))
    # a batch is its windows one by one (not the silent one: per-utterance normalisation of digital silence
    # divides float rounding by a zero variance, in kws's own inference as well)
    with torch.inference_mode():
        one = torch.cat([DeployedModel(loaded)(audio[i : i + 1]) for i in range(1, 4)])
    assert (one - deployed[1:4]).abs().max() < 1e-6


@pytest.mark.parametrize(
    "n_fft, hop, win", [(512, 160, 400), (400, 160, 400), (384, 128, 384), (512, 100, 320)]
)
def test_the_convolutional_mfcc_is_the_stft_mfcc(n_fft: int, hop: int, win: int) -> None:
    cfg = load_config(SMOKE).features
    mfcc = MFCC(replace(cfg, n_fft=n_fft, hop_length=hop, win_length=win))
    audio = speechlike(4, seed=1)[:, :12000]
    conv = ConvMFCC(mfcc)
    power = mfcc.transform.MelSpectrogram.spectrogram(audio)  # (batch, n_fft // 2 + 1, frames)
    got_power = conv.power(audio)
    keep = conv.bins < power.shape[1]
    assert keep.sum() == power.shape[1] and set(conv.bins[keep].tolist()) == set(range(power.shape[1]))
    assert (got_power[:, keep] - power[:, conv.bins[keep]]).abs().max() < 5e-6 * power.abs().max()
    expected, got = mfcc._mfcc(audio), conv(audio)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 1e-5 * expected.abs().max()


def test_the_two_stages_split_512_by_16_and_fall_back_to_one_dft() -> None:
    assert _split(512, 160) == 16  # 16 x 32: an eighth of the plain DFT's multiply-adds
    assert _Layout.of(512, 16).multiply_adds() * 7 < _Layout.of(512, 1).multiply_adds()
    # the real input's symmetry: stage A computes Q outputs per n1, not 2 Q (half the old scheme's work)
    assert _Layout.of(512, 16).multiply_adds() == 16 * 32 * 32 + 16 * 34 * 32
    assert _split(400, 160) in (8, 16, 20, 40, 80)  # a divisor of gcd(400, 160) = 80
    assert _split(512, 125) == 1  # hop and n_fft share no factor: the plain DFT as one convolution
