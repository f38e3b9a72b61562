"""Scoring speed on long recordings, and what sharing the spectrogram of overlapping windows changes.

For each hop: the real-time factor of `kws.detect.scores.score_audio` with the shared spectrogram (what
`kws detect` and stream evaluation use) and with every window's MFCC computed from its own samples alone
(`exact=True`, as `kws evaluate` scores a clip), side by side on the same audio in alternating rounds; the
largest probability difference between the two; and the detections that differ (at the default smoothing,
refractory period and a threshold of 0.5, so that even a weak model fires).

    python bench/stream.py                                   # MatchboxNet-3x1x64, random weights, 1 h
    python bench/stream.py --checkpoint runs/detect/best.pt --audio data/tts_keywords/streams/free_000.wav
    python bench/stream.py --minutes 10 --hops 0.1,0.2 --rounds 1

The default audio is an hour of noise with tone bursts and chirps (a new one per run, seed 0). Not a test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kws.audio import SAMPLE_RATE, float_to_int16, read_wav  # noqa: E402
from kws.checkpoint import LoadedModel, load_for_inference  # noqa: E402
from kws.config import load_config  # noqa: E402
from kws.detect.decode import select, smoothed_peaks, threshold_array  # noqa: E402
from kws.detect.scores import score_audio  # noqa: E402
from kws.features import FeatureExtractor  # noqa: E402
from kws.model import build_model  # noqa: E402
from kws.thresholds import DEFAULT_HOP_S  # noqa: E402
from kws.train.device import set_cpu_threads  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LABELS = ["down", "go", "left", "no", "off", "on", "right", "silence", "stop", "unknown", "up", "yes"]


def random_model(config: Path) -> LoadedModel:
    cfg = load_config(config)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.features.n_mfcc, len(LABELS)).eval()
    features = FeatureExtractor(cfg.features).eval()
    return LoadedModel(model, features, LABELS, cfg, Path("<random>"), 0, 0)


def synthetic_audio(minutes: float, seed: int = 0) -> np.ndarray:
    """Noise at varying level with a 0.2-0.6 s tone or chirp every 1-4 s."""
    rng = np.random.default_rng(seed)
    n = int(minutes * 60 * SAMPLE_RATE)
    audio = rng.normal(0, 1, n) * np.repeat(rng.uniform(0.002, 0.05, n // SAMPLE_RATE + 1), SAMPLE_RATE)[:n]
    at = 0
    while True:
        at += int(rng.uniform(1, 4) * SAMPLE_RATE)
        length = int(rng.uniform(0.2, 0.6) * SAMPLE_RATE)
        if at + length > n:
            break
        f0, f1 = rng.uniform(200, 3000, 2)
        t = np.arange(length) / SAMPLE_RATE
        phase = 2 * np.pi * np.cumsum(f0 + (f1 - f0) * t / t[-1]) / SAMPLE_RATE
        audio[at : at + length] += rng.uniform(0.05, 0.5) * np.sin(phase) * np.hanning(length)
    return float_to_int16(audio)


def detections(
    loaded: LoadedModel, times: np.ndarray, probs: np.ndarray, hop_s: float
) -> set[tuple[float, str]]:
    _, peaks = smoothed_peaks("bench", times, probs, loaded.labels, hop_s=hop_s)
    found = select(peaks, loaded.labels, threshold_array(loaded.labels, {}, 0.5), 1.0)
    return {(round(d.time_s, 3), d.label) for d in found}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint", type=Path, help="a trained model (default: random MatchboxNet-3x1x64)"
    )
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "matchboxnet_3x1x64_detect.yaml")
    parser.add_argument("--audio", type=Path, help="a 16 kHz mono wav (default: synthetic)")
    parser.add_argument("--minutes", type=float, default=60.0, help="of synthetic audio")
    parser.add_argument("--hops", default=f"{DEFAULT_HOP_S},0.1", help="comma-separated seconds")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per hop (median reported)")
    args = parser.parse_args()

    threads = set_cpu_threads()
    loaded = (
        load_for_inference(args.checkpoint, torch.device("cpu"))
        if args.checkpoint
        else random_model(args.config)
    )
    audio = read_wav(args.audio) if args.audio else synthetic_audio(args.minutes)
    audio_s = len(audio) / SAMPLE_RATE
    print(f"model: {args.checkpoint or args.config.name + ' (random weights)'}; {len(loaded.labels)} classes")
    print(f"audio: {args.audio or 'synthetic'}, {audio_s / 3600:.2f} h; CPU threads: {threads}")
    score_audio(loaded, audio[: 30 * SAMPLE_RATE], 0.1)  # warm-up
    for hop_s in [float(h) for h in args.hops.split(",")]:
        rtf: dict[str, list[float]] = {"shared": [], "exact": []}
        results = {}
        for _ in range(args.rounds):
            for name in rtf:
                start = time.perf_counter()
                results[name] = score_audio(loaded, audio, hop_s, exact=name == "exact")
                rtf[name].append(audio_s / (time.perf_counter() - start))
        shared, exact = results["shared"], results["exact"]
        diff = float(np.abs(shared.probs - exact.probs).max())
        a = detections(loaded, shared.times_s, shared.probs, hop_s)
        b = detections(loaded, exact.times_s, exact.probs, hop_s)
        rounds = {name: ", ".join(f"{x:,.0f}" for x in values) for name, values in rtf.items()}
        fast, slow = np.median(rtf["shared"]), np.median(rtf["exact"])
        print(
            f"hop {hop_s:g} s, {len(shared.times_s):,} windows: shared {fast:,.0f}x real time "
            f"(rounds {rounds['shared']}), exact {slow:,.0f}x ({rounds['exact']}); an hour in "
            f"{3600 / fast:.1f} s; largest probability difference {diff:.2e}; "
            f"detections {len(a)} vs {len(b)}, differing {len(a ^ b)}"
        )


if __name__ == "__main__":
    main()
