"""A checkpoint's model over the windows of a recording, in PyTorch (kws.detect.scores runs exported `.onnx`
files without it, so `kws evaluate` and `kws detect` on an exported model never import torch).

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

import numpy as np
import torch
from torch import Tensor

from kws.checkpoint import LoadedModel
from kws.errors import KWSError
from kws.exported import WINDOW_SAMPLES
from kws.features import FeatureExtractor, crop_or_pad, frame_lengths, normalize_per_utterance
from kws.model import Classifier, fold_batchnorm


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


def checkpoint_scorer(loaded: LoadedModel, hop: int, exact: bool) -> Callable[[np.ndarray, int], np.ndarray]:
    """A float span holding `n` windows `hop` apart -> their probabilities, by the checkpoint's model on the
    span's one shared spectrogram (or each window alone, `exact`)."""
    features = WindowFeatures(loaded)
    device = next(loaded.model.parameters()).device
    assert isinstance(loaded.model, Classifier)
    # BatchNorms folded into the convolutions (kws.model.fold_batchnorm): a quarter faster on a CPU, equal up
    # to float rounding (bench/stream.py reports the difference)
    model = loaded.model if exact else fold_batchnorm(loaded.model)

    def score(samples: np.ndarray, n: int) -> np.ndarray:
        span = torch.from_numpy(samples).to(device)
        with torch.inference_mode():
            if exact:
                feats = features.exact(span.unfold(0, WINDOW_SAMPLES, hop)[:n])
            else:
                feats = features(span, n, hop)
            lengths = torch.full((n,), feats.shape[2], device=device)
            logits = model(feats, lengths)  # (n, n_classes)
            return torch.softmax(logits.float(), dim=-1).cpu().numpy()

    return score
