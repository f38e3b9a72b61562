"""Reference outputs from real NVIDIA NeMo for checking kws's `.nemo` importer.

Builds two MatchboxNet classifiers with NeMo's own classes (`EncDecClassificationModel` with
`AudioToMFCCPreprocessor`, `ConvASREncoder`, `ConvASRDecoderClassification`): `matchboxnet_3x1x64_v1`
(the values of NeMo's examples/asr/conf/matchboxnet/matchboxnet_3x1x64_v1.yaml, 30 labels, sorted) and
`matchboxnet_3x2x64_v2` (the same with repeat 2 and NeMo's v2 label list of 35 words in its scrambled order).
Every encoder/decoder weight gets a seeded random value and every BatchNorm running mean/var a perturbed
measured one (positive variances, far from NeMo's init), so a parity check cannot pass on default init; the
decoder is scaled so the softmax is neither flat nor saturated. Per model it writes, under --out:

    <name>.nemo       model.save_to(...)
    <name>.keys.txt   every state_dict() key with its shape and dtype
    <name>.npz        audio, lengths, labels, and for each forward: logits_* and probs_* (softmax), for
                      8 clips of 1 s (keys without suffix) and 4 shorter zero-padded clips (suffix _short)

Two forwards are recorded, eval mode, float32, CPU, torch.no_grad:
  nemo3  NeMo's own `model.forward(input_signal, input_signal_length)`; in NeMo 3.x it has no crop/pad,
         keeps the lengths (the encoder masks by them) and the decoder averages over all frames.
  nemo1  NeMo 1.x's EncDecClassificationModel.forward rebuilt from the model's own modules:
         preprocessor -> crop_or_pad (symmetric zero-pad to 128 frames, lengths set to 128) -> encoder ->
         decoder. This is the reference recipe's behaviour (shared/RECIPE.md).

NeMo is never a kws dependency: this script imports only NeMo, torch and numpy, from its own venv:

    python3 -m venv /tmp/nemo-venv
    /tmp/nemo-venv/bin/pip install torch==2.11.0 torchaudio==2.11.0 "nemo-toolkit[asr]==3.0.0"
    /tmp/nemo-venv/bin/python bench/nemo_reference.py --out /tmp/nemo_ref
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

SAMPLE_RATE = 16_000  # Hz
CLIP_SAMPLES = SAMPLE_RATE  # 1 s clips, as in Speech Commands
SHORT_LENGTHS = (16_000, 12_000, 9_000, 4_000)  # samples; the second batch, zero-padded to CLIP_SAMPLES
TIMESTEPS = 128  # frames after NeMo 1.x's crop_or_pad
TARGET_MEDIAN_MAX_PROB = 0.5  # decoder scale is calibrated so the softmax is neither flat nor saturated

LABELS_V1 = [
    "bed", "bird", "cat", "dog", "down", "eight", "five", "four", "go", "happy", "house", "left", "marvin",
    "nine", "no", "off", "on", "one", "right", "seven", "sheila", "six", "stop", "three", "tree", "two", "up",
    "wow", "yes", "zero",
]  # fmt: skip
# NeMo's matchboxnet_3x1x64_v2.yaml order, deliberately not sorted: an importer must take the order from
# the checkpoint's config, never assume alphabetical.
LABELS_V2 = [
    "visual", "wow", "learn", "backward", "dog", "two", "left", "happy", "nine", "go", "up", "bed", "stop",
    "one", "zero", "tree", "seven", "on", "four", "bird", "right", "eight", "no", "six", "forward", "house",
    "marvin", "sheila", "five", "off", "three", "down", "cat", "follow", "yes",
]  # fmt: skip


def _block(filters: int, repeat: int, kernel: int, residual: bool, dilation: int = 1) -> dict[str, Any]:
    return {
        "filters": filters,
        "repeat": repeat,
        "kernel": [kernel],
        "stride": [1],
        "dilation": [dilation],
        "dropout": 0.0,
        "residual": residual,
        "separable": True,
        "kernel_size_factor": 1.0,
    }


def model_config(labels: list[str], repeat: int) -> dict[str, Any]:
    """The `model:` section of NeMo's matchboxnet_3x1x64 YAML, resolved, with null dataset manifests."""

    def dataset(shuffle: bool) -> dict[str, Any]:
        return {
            "manifest_filepath": None,
            "sample_rate": SAMPLE_RATE,
            "labels": labels,
            "batch_size": 128,
            "shuffle": shuffle,
            "num_workers": 0,
            "pin_memory": True,
        }

    return {
        "sample_rate": SAMPLE_RATE,
        "timesteps": TIMESTEPS,
        "repeat": repeat,
        "dropout": 0.0,
        "kernel_size_factor": 1.0,
        "labels": labels,
        "train_ds": dataset(shuffle=True),
        "validation_ds": dataset(shuffle=False),
        "test_ds": dataset(shuffle=False),
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMFCCPreprocessor",
            "window_size": 0.025,
            "window_stride": 0.01,
            "window": "hann",
            "n_mels": 64,
            "n_mfcc": 64,
            "n_fft": 512,
        },
        "spec_augment": {
            "_target_": "nemo.collections.asr.modules.SpectrogramAugmentation",
            "freq_masks": 2,
            "time_masks": 2,
            "freq_width": 15,
            "time_width": 25,
            "rect_masks": 5,
            "rect_time": 25,
            "rect_freq": 15,
        },
        "crop_or_pad_augment": {
            "_target_": "nemo.collections.asr.modules.CropOrPadSpectrogramAugmentation",
            "audio_length": TIMESTEPS,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConvASREncoder",
            "feat_in": 64,
            "activation": "relu",
            "conv_mask": True,
            "jasper": [
                _block(128, 1, 11, residual=False),
                _block(64, repeat, 13, residual=True),
                _block(64, repeat, 15, residual=True),
                _block(64, repeat, 17, residual=True),
                _block(128, 1, 29, residual=False, dilation=2),
                {  # the YAML's last block: a plain (not separable) 1x1 conv
                    "filters": 128,
                    "repeat": 1,
                    "kernel": [1],
                    "stride": [1],
                    "dilation": [1],
                    "dropout": 0.0,
                    "residual": False,
                },
            ],
        },
        "decoder": {
            "_target_": "nemo.collections.asr.modules.ConvASRDecoderClassification",
            "feat_in": 128,
            "return_logits": True,
            "pooling_type": "avg",
        },
        "optim": {
            "name": "novograd",
            "lr": 0.05,
            "betas": [0.95, 0.5],
            "weight_decay": 0.001,
            "sched": {
                "name": "PolynomialHoldDecayAnnealing",
                "power": 2.0,
                "warmup_ratio": 0.05,
                "hold_ratio": 0.45,
                "min_lr": 0.001,
                "last_epoch": -1,
            },
        },
    }


def build_model(labels: list[str], repeat: int) -> torch.nn.Module:
    from nemo.collections.asr.models import EncDecClassificationModel
    from omegaconf import OmegaConf

    model = EncDecClassificationModel(cfg=OmegaConf.create(model_config(labels, repeat)))
    return model.eval()


def randomize(model: torch.nn.Module, seed: int, audio: torch.Tensor, lengths: torch.Tensor) -> None:
    """Seeded values for every encoder/decoder tensor; the preprocessor's MFCC buffers stay NeMo's own.

    Conv/linear weights are N(0, 1/fan_in), BatchNorm scales U(0.8, 1.2), every bias N(0, 0.01).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            leaf = name.rsplit(".", 1)[-1]
            if not name.startswith(("encoder.", "decoder.")) or leaf.startswith(("running_", "num_batches")):
                continue  # preprocessor.featurizer.* (window, mel fb, DCT); BN statistics come below
            shape = tensor.shape
            if leaf == "weight" and tensor.dim() == 1:  # BatchNorm scale
                value = 0.8 + 0.4 * torch.rand(shape, generator=gen)
            elif leaf == "weight":
                value = torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))
            else:
                value = 0.1 * torch.randn(shape, generator=gen)
            tensor.copy_(value)
    set_batchnorm_statistics(model, audio, lengths, gen)


def set_batchnorm_statistics(
    model: torch.nn.Module, audio: torch.Tensor, lengths: torch.Tensor, gen: torch.Generator
) -> None:
    """Running mean/var as a trained model has them, perturbed: var x U(0.5, 1.5), mean + N(0, 0.1^2) std.

    Plain random statistics (e.g. var U(0.5, 1.5)) would leave the MFCCs unnormalised (c0 is in the
    hundreds), so every softmax would be flat or saturated depending on the clip's energy. Measuring the
    statistics on the test audio first (one train-mode pass, exact averages) keeps the activations of
    order one; the perturbation keeps them far from NeMo's init (mean 0, var 1) and from the batch values.
    """
    norms = [m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one pass stores the batch statistics exactly
    model.encoder.train()
    logits_nemo1(model, audio, lengths)
    model.encoder.eval()
    with torch.no_grad():
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
            std = m.running_var.sqrt()
            m.running_mean.add_(0.1 * std * torch.randn(std.shape, generator=gen))
            m.running_var.mul_(0.5 + torch.rand(std.shape, generator=gen))
            m.num_batches_tracked.fill_(1000)


def make_audio(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """8 clips of 1 s and 4 shorter ones zero-padded to 1 s: (audio (8, 16000), lengths (8,), ...short)."""
    rng = np.random.default_rng(seed)
    t = np.arange(CLIP_SAMPLES) / SAMPLE_RATE  # s

    def chirp(f0_hz: float, f1_hz: float) -> np.ndarray:
        return np.sin(2 * np.pi * (f0_hz * t + (f1_hz - f0_hz) * t**2 / 2))

    def tone(f_hz: float) -> np.ndarray:
        return np.sin(2 * np.pi * f_hz * t)

    burst = np.where((t >= 0.3) & (t < 0.6), 0.6 * tone(2000), 0) + 0.02 * rng.standard_normal(CLIP_SAMPLES)
    clips = [
        0.5 * tone(440),
        0.3 * tone(1000) + 0.3 * tone(3000),
        0.7 * chirp(100, 6000),
        0.1 * rng.standard_normal(CLIP_SAMPLES),
        0.01 * rng.standard_normal(CLIP_SAMPLES),
        0.9 * tone(300) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)),
        1e-4 * rng.standard_normal(CLIP_SAMPLES),
        burst,
    ]
    audio = np.clip(np.stack(clips), -1, 1).astype(np.float32)

    short_sources = [0.8 * chirp(4000, 200), 0.4 * tone(700) + 0.05 * rng.standard_normal(CLIP_SAMPLES)]
    short_sources += [0.3 * rng.standard_normal(CLIP_SAMPLES), 0.6 * tone(1500)]
    short = np.zeros((len(SHORT_LENGTHS), CLIP_SAMPLES), dtype=np.float32)
    for i, (source, n) in enumerate(zip(short_sources, SHORT_LENGTHS, strict=True)):
        short[i, :n] = np.clip(source[:n], -1, 1)
    return (
        torch.from_numpy(audio),
        torch.full((len(clips),), CLIP_SAMPLES, dtype=torch.long),
        torch.from_numpy(short),
        torch.tensor(SHORT_LENGTHS, dtype=torch.long),
    )


@torch.no_grad()
def logits_nemo3(model: torch.nn.Module, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """NeMo's own forward: (batch, samples), (batch,) -> (batch, n_classes)."""
    return model.forward(input_signal=audio, input_signal_length=lengths)


@torch.no_grad()
def logits_nemo1(model: torch.nn.Module, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """NeMo 1.x's EncDecClassificationModel.forward, composed from this model's modules."""
    if getattr(model, "crop_or_pad", None) is None:
        raise RuntimeError("the model has no crop_or_pad module; NeMo 1.x's forward cannot be rebuilt")
    features, feature_lengths = model.preprocessor(input_signal=audio, length=lengths)
    features, feature_lengths = model.crop_or_pad(input_signal=features, length=feature_lengths)
    if features.shape[-1] != TIMESTEPS:
        raise RuntimeError(f"crop_or_pad gave {features.shape[-1]} frames, expected {TIMESTEPS}")
    encoded, _ = model.encoder(audio_signal=features, length=feature_lengths)
    return model.decoder(encoder_output=encoded)


def calibrate_decoder(model: torch.nn.Module, audio: torch.Tensor, lengths: torch.Tensor) -> float:
    """Scale the decoder so the median max probability (NeMo 1.x path) is TARGET_MEDIAN_MAX_PROB.

    A flat or saturated softmax would hide an importer's errors in the probabilities. Bisection on the
    log of the scale; deterministic.
    """
    linear = model.decoder.decoder_layers[0]
    weight, bias = linear.weight.detach().clone(), linear.bias.detach().clone()

    def median_max_prob(scale: float) -> float:
        with torch.no_grad():
            linear.weight.copy_(weight * scale)
            linear.bias.copy_(bias * scale)
        probs = torch.softmax(logits_nemo1(model, audio, lengths), dim=-1)
        return float(probs.max(dim=-1).values.median())

    lo, hi = -12.0, 6.0  # log2 of the scale
    for _ in range(40):
        mid = (lo + hi) / 2
        if median_max_prob(2.0**mid) < TARGET_MEDIAN_MAX_PROB:
            lo = mid
        else:
            hi = mid
    scale = 2.0 ** ((lo + hi) / 2)
    median_max_prob(scale)  # leaves the chosen scale in the weights
    return scale


def run_batch(model: torch.nn.Module, audio: torch.Tensor, lengths: torch.Tensor) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for path, forward in (("nemo3", logits_nemo3), ("nemo1", logits_nemo1)):
        logits = forward(model, audio, lengths)
        out[f"logits_{path}"] = logits.numpy()
        out[f"probs_{path}"] = torch.softmax(logits, dim=-1).numpy()
    return out


def summarize(name: str, arrays: dict[str, np.ndarray]) -> None:
    def fmt(probs: np.ndarray) -> str:
        return " ".join(f"{p:.3f}" for p in probs.max(-1))

    for suffix, batch in (("", "1 s batch"), ("_short", "short batch")):
        p3, p1 = arrays[f"probs_nemo3{suffix}"], arrays[f"probs_nemo1{suffix}"]
        differ = int((p3.argmax(-1) != p1.argmax(-1)).sum())
        print(f"{name} {batch}: max|probs_nemo3 - probs_nemo1| = {np.abs(p3 - p1).max():.6f}, argmax differs")
        print(f"  on {differ}/{len(p3)}; max prob nemo1 [{fmt(p1)}], nemo3 [{fmt(p3)}]")


def make_reference(name: str, labels: list[str], repeat: int, seed: int, out: Path) -> None:
    from nemo.collections.asr.models import EncDecClassificationModel

    model = build_model(labels, repeat)
    audio, lengths, audio_short, lengths_short = make_audio(seed)
    randomize(model, seed, audio, lengths)
    scale = calibrate_decoder(model, audio, lengths)
    print(f"{name}: decoder scaled by {scale:.6g} (seed {seed})")

    nemo_path = out / f"{name}.nemo"
    model.save_to(str(nemo_path))
    with open(out / f"{name}.keys.txt", "w") as f:
        for key, tensor in model.state_dict().items():
            f.write(f"{key}\t{tuple(tensor.shape)}\t{str(tensor.dtype).removeprefix('torch.')}\n")

    model_labels = list(model.cfg.labels)
    if model_labels != labels:
        raise RuntimeError(f"{name}: model labels {model_labels} differ from the config's {labels}")
    arrays = {"audio": audio.numpy(), "lengths": lengths.numpy(), "labels": np.array(model_labels)}
    arrays |= run_batch(model, audio, lengths)
    arrays["audio_short"], arrays["lengths_short"] = audio_short.numpy(), lengths_short.numpy()
    arrays |= {f"{k}_short": v for k, v in run_batch(model, audio_short, lengths_short).items()}

    # The archive must reproduce these numbers on its own: restore it and compare.
    restored = EncDecClassificationModel.restore_from(str(nemo_path), map_location="cpu").eval()
    again = run_batch(restored, audio, lengths) | {
        f"{k}_short": v for k, v in run_batch(restored, audio_short, lengths_short).items()
    }
    worst = max(float(np.abs(again[k] - arrays[k]).max()) for k in again)
    if worst > 1e-6:
        raise RuntimeError(f"{name}: restored .nemo differs from the saved model by {worst}")

    np.savez(out / f"{name}.npz", **arrays)
    summarize(name, arrays)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for the .nemo, .npz and .keys.txt files"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and audio (model 2 uses seed+1)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # deterministic CPU reductions, and the machine is shared
    make_reference("matchboxnet_3x1x64_v1", LABELS_V1, repeat=1, seed=args.seed, out=args.out)
    make_reference("matchboxnet_3x2x64_v2", LABELS_V2, repeat=2, seed=args.seed + 1, out=args.out)


if __name__ == "__main__":
    main()
