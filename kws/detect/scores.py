"""A trained clip model run over a recording of any length: class probabilities for 1 s windows at a hop.

`(samples,)` int16 audio -> window centres `(n_windows,)` in seconds and probabilities
`(n_windows, n_classes)`. Window w covers samples `[w * hop, w * hop + window)`; the recording is padded with
zeros at the end so that the last window reaches its last sample (a recording shorter than a window is one
window).

A checkpoint's windows share one spectrogram (kws.detect.window_features, which imports torch); an exported
`.onnx` runs each window whole through its file with onnxruntime, and this module imports no torch for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from kws.audio import INT16_SCALE, SAMPLE_RATE
from kws.errors import KWSError
from kws.exported import WINDOW_SAMPLES, OnnxModel
from kws.thresholds import DEFAULT_HOP_S

if TYPE_CHECKING:
    from kws.checkpoint import LoadedModel

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


def feature_hop_length(loaded: LoadedModel | OnnxModel) -> int:
    """The features' hop in samples: a window hop is a whole number of these."""
    if isinstance(loaded, OnnxModel):
        return loaded.metadata.feature_hop_samples
    from kws.detect.window_features import WindowFeatures

    return WindowFeatures(loaded).hop_length


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
    score = span_scorer(loaded, hop, exact=exact)
    probs = np.zeros((len(starts), len(loaded.labels)), dtype=np.float32)
    done_s = 0.0
    for first in range(0, len(starts), batch_windows):
        n = min(batch_windows, len(starts) - first)
        probs[first : first + n] = score(window_span(audio, int(starts[first]), n, hop), n)
        if advance is not None:
            now_s = (len(audio) if first + n == len(starts) else int(starts[first]) + n * hop) / SAMPLE_RATE
            advance(now_s - done_s)
            done_s = now_s
    times = (starts + WINDOW_SAMPLES / 2) / SAMPLE_RATE
    return StreamScores(times, probs, hop / SAMPLE_RATE, len(audio) / SAMPLE_RATE)


def span_scorer(
    loaded: LoadedModel | OnnxModel, hop: int, *, exact: bool = False
) -> Callable[[np.ndarray, int], np.ndarray]:
    """`(span, n)` -> the probabilities `(n, n_classes)` of the `n` windows, `hop` samples apart, of a float
    span (`window_span`): an exported file runs each window whole, a checkpoint shares one spectrogram
    (kws.detect.window_features; torch is imported only then). Offline and live detection both use it."""
    if isinstance(loaded, OnnxModel):
        return _onnx_scorer(loaded, hop)
    from kws.detect.window_features import checkpoint_scorer

    return checkpoint_scorer(loaded, hop, exact)


def window_span(audio: np.ndarray, begin: int, n: int, hop: int) -> np.ndarray:
    """The float samples of `n` windows from sample `begin` on, zeros past the recording's end: one batch
    at a time, so that memory does not grow with the recording (a memory-mapped file is read as it goes)."""
    span = np.zeros((n - 1) * hop + WINDOW_SAMPLES, dtype=np.float32)
    part = audio[begin : begin + len(span)]
    span[: len(part)] = part
    span *= 1.0 / INT16_SCALE
    return span


def _onnx_scorer(loaded: OnnxModel, hop: int) -> Callable[[np.ndarray, int], np.ndarray]:
    """A float span holding `n` windows `hop` apart -> their probabilities, by the exported file."""

    def score(span: np.ndarray, n: int) -> np.ndarray:
        return loaded.probs(np.lib.stride_tricks.sliding_window_view(span, WINDOW_SAMPLES)[::hop][:n], n)

    return score
