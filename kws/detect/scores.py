"""A trained clip model run over a recording of any length: class probabilities for 1 s windows at a hop.

`(samples,)` int16 audio -> window centres `(n_windows,)` in seconds and probabilities
`(n_windows, n_classes)`. Window w covers samples `[w * hop, w * hop + window)`; the recording is padded with
zeros at the end so that the last window reaches its last sample (a recording shorter than a window is one
window).

Overlapping windows share their MFCC: the spectrogram of a stretch of the recording is computed once and each
window takes its frames from it. A window's frames whose STFT reaches past the window's own edges (the first
and last `edge_frames`, 2 at the recipe's n_fft 512 and hop 160) would see the neighbouring audio there
instead of the reflection that a lone clip gets (`torch.stft(center=True)`), so those are computed again from
the window's own samples. The features are then what the clip model was trained on, frame for frame, up to
float32 rounding (`bench/stream.py` measures it against scoring each window alone: `exact=True`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from kws.audio import INT16_SCALE, SAMPLE_RATE
from kws.checkpoint import LoadedModel
from kws.errors import KWSError
from kws.exported import WINDOW_SAMPLES, OnnxModel
from kws.features import FeatureExtractor, crop_or_pad, frame_lengths, normalize_per_utterance
from kws.model import Classifier, fold_batchnorm
from kws.thresholds import DEFAULT_HOP_S

BATCH_WINDOWS = 128  # windows per model call: faster than 256 on 2 cores (the activations stay in cache)


@dataclass
class StreamScores:
    """Per-window probabilities of one recording."""

    times_s: np.ndarray  # (n_windows,) window centres, seconds
    probs: np.ndarray  # (n_windows, n_classes) float32 softmax
    hop_s: float
    duration_s: float  # of the recording, before the end padding


def hop_samples(hop_s: float, hop_length: int) -> int:
    """`--hop` in samples: a whole number (>= 1) of feature frames, as the shared spectrogram needs."""
    if not (math.isfinite(hop_s) and hop_s > 0):
        raise KWSError(f"--hop must be a positive number of seconds, got {hop_s}")
    if hop_s > WINDOW_SAMPLES / SAMPLE_RATE:
        raise KWSError(
            f"--hop {hop_s:g} s is longer than the {WINDOW_SAMPLES / SAMPLE_RATE:g} s window: audio between "
            "windows would never be heard; use at most that"
        )
    frames = round(hop_s * SAMPLE_RATE / hop_length)
    if frames < 1 or abs(frames * hop_length - hop_s * SAMPLE_RATE) > 1e-6 * SAMPLE_RATE:
        raise KWSError(
            f"--hop {hop_s:g} s is not a multiple of the feature hop ({1000 * hop_length / SAMPLE_RATE:g} "
            f"ms); use e.g. {max(1, frames) * hop_length / SAMPLE_RATE:g}"
        )
    return frames * hop_length


def window_starts(n_samples: int, hop: int) -> np.ndarray:
    """Sample offsets of the windows that cover `n_samples`: `(n_windows,)`."""
    n_windows = 1 + max(0, math.ceil((n_samples - WINDOW_SAMPLES) / hop))
    return np.arange(n_windows, dtype=np.int64) * hop


def edge_frames(n_fft: int, hop_length: int) -> int:
    """Frames at each end of a window whose centred STFT reaches past the window."""
    return math.ceil((n_fft // 2) / hop_length)


class WindowFeatures:
    """The model's input for a run of windows spaced `hop` samples apart, from one shared spectrogram."""

    def __init__(self, loaded: LoadedModel) -> None:
        extractor = loaded.features
        assert isinstance(extractor, FeatureExtractor)
        self.mfcc = extractor.mfcc
        self.normalize = extractor.normalize
        self.n_frames = extractor.n_frames
        self.hop_length = extractor.mfcc.hop_length
        self.window_frames = int(frame_lengths(torch.tensor(WINDOW_SAMPLES), self.hop_length))
        self.edge = edge_frames(extractor.n_fft, self.hop_length)
        # Head and tail segments: long enough that their `edge` frames never see their inner end's reflection
        self.segment = 2 * self.edge * self.hop_length
        if WINDOW_SAMPLES % self.hop_length or self.segment >= WINDOW_SAMPLES:
            raise KWSError(
                f"feature hop {self.hop_length} does not divide the {WINDOW_SAMPLES}-sample window"
            )

    def _frames(self, audio: Tensor) -> Tensor:
        """`(batch, samples)` float -> `(batch, n_mfcc, frames)` centred MFCC frames."""
        lengths = torch.full((audio.shape[0],), audio.shape[1], device=audio.device)
        return self.mfcc(audio, lengths)[0]

    def __call__(self, span: Tensor, n_windows: int, hop: int) -> Tensor:
        """`span` `(samples,)` float, holding windows at 0, hop, ... -> `(n_windows, n_mfcc, n_frames)`."""
        hop_frames = hop // self.hop_length
        frames = self._frames(span[None])[0]  # (n_mfcc, span frames)
        feats = frames.unfold(1, self.window_frames, hop_frames)[:, :n_windows].permute(1, 0, 2).contiguous()
        windows = span.unfold(0, WINDOW_SAMPLES, hop)[:n_windows]  # (n_windows, WINDOW_SAMPLES), a view
        head = self._frames(windows[:, : self.segment])[:, :, : self.edge]
        tail = self._frames(windows[:, WINDOW_SAMPLES - self.segment :])[:, :, -self.edge :]
        feats[:, :, : self.edge] = head
        feats[:, :, -self.edge :] = tail
        return self._finish(feats)

    def exact(self, windows: Tensor) -> Tensor:
        """Each window alone, as `kws evaluate` scores a clip: `(n, WINDOW_SAMPLES)` -> model input."""
        return self._finish(self._frames(windows))

    def _finish(self, feats: Tensor) -> Tensor:
        lengths = torch.full((feats.shape[0],), feats.shape[2], device=feats.device)
        if self.normalize == "per_utterance":
            feats = normalize_per_utterance(feats, lengths)
        return crop_or_pad(feats, lengths, self.n_frames, train=False)[0]


def feature_hop_length(loaded: LoadedModel | OnnxModel) -> int:
    """The features' hop in samples: a window hop is a whole number of these."""
    if isinstance(loaded, OnnxModel):
        return loaded.metadata.feature_hop_samples
    return WindowFeatures(loaded).hop_length


def inference_model(loaded: LoadedModel) -> torch.nn.Module:
    """The model with its BatchNorms folded into the convolutions (kws.model.fold_batchnorm): a quarter
    faster on a CPU, equal up to float rounding (bench/stream.py reports the difference)."""
    assert isinstance(loaded.model, Classifier)
    return fold_batchnorm(loaded.model)


def score_audio(
    loaded: LoadedModel | OnnxModel,
    audio: np.ndarray,
    hop_s: float = DEFAULT_HOP_S,
    *,
    exact: bool = False,
    batch_windows: int = BATCH_WINDOWS,
    advance: Callable[[float], None] | None = None,
) -> StreamScores:
    """Probabilities of every window of `audio` `(samples,)` int16. `exact` computes each window's MFCC from
    its own samples alone and runs the model as trained (slower: the reference that the shared spectrogram
    and the folded BatchNorms are measured against); an exported model (OnnxModel) always runs each window
    whole through its file. `advance` is called with the seconds of audio done after each batch of windows."""
    hop = hop_samples(hop_s, feature_hop_length(loaded))
    starts = window_starts(len(audio), hop)
    padded = np.zeros(int(starts[-1]) + WINDOW_SAMPLES, dtype=np.float32)
    padded[: len(audio)] = audio
    padded *= 1.0 / INT16_SCALE
    score = _onnx_scorer(loaded, padded, hop) if isinstance(loaded, OnnxModel) else None
    if score is None:
        assert isinstance(loaded, LoadedModel)
        score = _torch_scorer(loaded, padded, hop, exact)
    probs = np.zeros((len(starts), len(loaded.labels)), dtype=np.float32)
    done_s = 0.0
    for first in range(0, len(starts), batch_windows):
        n = min(batch_windows, len(starts) - first)
        probs[first : first + n] = score(first, n)
        if advance is not None:
            now_s = (len(audio) if first + n == len(starts) else int(starts[first]) + n * hop) / SAMPLE_RATE
            advance(now_s - done_s)
            done_s = now_s
    times = (starts + WINDOW_SAMPLES / 2) / SAMPLE_RATE
    return StreamScores(times, probs, hop / SAMPLE_RATE, len(audio) / SAMPLE_RATE)


def _onnx_scorer(loaded: OnnxModel, signal: np.ndarray, hop: int) -> Callable[[int, int], np.ndarray]:
    """Windows `first .. first + n` of the float `signal` -> their probabilities, by the exported file."""
    windows = np.lib.stride_tricks.sliding_window_view(signal, WINDOW_SAMPLES)[::hop]  # a view

    def score(first: int, n: int) -> np.ndarray:
        return loaded.probs(windows[first : first + n], n)

    return score


def _torch_scorer(
    loaded: LoadedModel, padded: np.ndarray, hop: int, exact: bool
) -> Callable[[int, int], np.ndarray]:
    """Windows `first .. first + n` of the float `padded` signal -> their probabilities, by the checkpoint's
    model on one shared spectrogram per batch (or each window alone, `exact`)."""
    features = WindowFeatures(loaded)
    device = next(loaded.model.parameters()).device
    model = loaded.model if exact else inference_model(loaded)
    signal = torch.from_numpy(padded).to(device)

    def score(first: int, n: int) -> np.ndarray:
        begin = first * hop
        span = signal[begin : begin + (n - 1) * hop + WINDOW_SAMPLES]
        with torch.inference_mode():
            if exact:
                feats = features.exact(span.unfold(0, WINDOW_SAMPLES, hop)[:n])
            else:
                feats = features(span, n, hop)
            lengths = torch.full((n,), feats.shape[2], device=device)
            logits = model(feats, lengths)  # (n, n_classes)
            return torch.softmax(logits.float(), dim=-1).cpu().numpy()

    return score
