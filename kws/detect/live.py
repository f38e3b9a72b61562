"""`kws detect --mic`: detection on audio as it arrives, with the rule of kws.detect.decode applied causally.

`LiveDetector.feed(block)` takes int16 samples as they come and returns the detections that became final: a
candidate is final once the audio `lookahead_s` after it has been heard (half the refractory period, which
the peak needs, plus the smoothing). The refractory period then runs forward only: a detection silences
every keyword for `refractory_s` after it. Offline detection (kws.detect.detector) also looks back, so on
the same recording the two agree except where two keywords compete within one refractory period.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator

import numpy as np
import torch

from kws.audio import INT16_SCALE, SAMPLE_RATE
from kws.checkpoint import LoadedModel
from kws.detect.decode import Detection, find_peaks, select, smooth, smooth_windows, threshold_array
from kws.detect.detector import DetectSettings
from kws.detect.scores import WINDOW_SAMPLES, WindowFeatures, hop_samples, inference_model
from kws.errors import KWSError

HISTORY_S = 8.0  # window scores kept for decoding; far more than the lookahead


class LiveDetector:
    """Feed audio blocks, get final detections. Times are seconds since the first sample fed."""

    def __init__(self, loaded: LoadedModel, settings: DetectSettings, name: str = "mic") -> None:
        self.loaded, self.settings, self.name = loaded, settings, name
        self.features = WindowFeatures(loaded)
        self.hop = hop_samples(settings.hop_s, self.features.hop_length)
        self.n_smooth = smooth_windows(settings.smooth_s, self.hop / SAMPLE_RATE)
        self.thresholds = threshold_array(
            loaded.labels, dict(settings.thresholds), settings.default_threshold
        )
        self.lookahead_s = settings.refractory_s / 2 + (self.n_smooth // 2 + 1) * self.hop / SAMPLE_RATE
        self.audio = np.zeros(0, dtype=np.int16)  # not yet scored, from sample `self.offset` on
        self.offset = 0
        self.times: list[float] = []
        self.probs: list[np.ndarray] = []
        self.horizon_s = -np.inf  # candidates up to here have been decided
        self.last_s = -np.inf  # the last detection's time
        self.device = next(loaded.model.parameters()).device
        self.model = inference_model(loaded)

    def feed(self, block: np.ndarray) -> list[Detection]:
        """int16 samples `(n,)` -> the detections that became final."""
        self.audio = np.concatenate([self.audio, np.asarray(block, dtype=np.int16).reshape(-1)])
        n_windows = (
            0 if len(self.audio) < WINDOW_SAMPLES else 1 + (len(self.audio) - WINDOW_SAMPLES) // self.hop
        )
        if n_windows == 0:
            return []
        span = torch.from_numpy(self.audio[: (n_windows - 1) * self.hop + WINDOW_SAMPLES].astype(np.float32))
        windows = span.to(self.device).mul_(1.0 / INT16_SCALE).unfold(0, WINDOW_SAMPLES, self.hop)
        with torch.inference_mode():
            feats = self.features.exact(windows)
            lengths = torch.full((n_windows,), feats.shape[2], device=self.device)
            probs = torch.softmax(self.model(feats, lengths).float(), dim=-1).cpu().numpy()
        starts = self.offset + np.arange(n_windows) * self.hop
        self.times += ((starts + WINDOW_SAMPLES / 2) / SAMPLE_RATE).tolist()
        self.probs += list(probs)
        self.audio = self.audio[n_windows * self.hop :]
        self.offset += n_windows * self.hop
        keep = int(HISTORY_S * SAMPLE_RATE / self.hop)
        self.times, self.probs = self.times[-keep:], self.probs[-keep:]
        return self._decide(self.times[-1] - self.lookahead_s)

    def flush(self) -> list[Detection]:
        """The end of the audio: decide every remaining candidate."""
        return self._decide(np.inf)

    def _decide(self, horizon_s: float) -> list[Detection]:
        if not self.times or horizon_s <= self.horizon_s:
            return []
        times = np.array(self.times)
        smoothed = smooth(np.stack(self.probs), self.n_smooth)
        peaks = find_peaks(self.name, times, smoothed, self.loaded.labels, self.settings.refractory_s)
        new = (peaks.times_s > self.horizon_s) & (peaks.times_s <= horizon_s)
        new &= peaks.times_s >= self.last_s + self.settings.refractory_s
        self.horizon_s = horizon_s
        chosen = select(
            type(peaks)(peaks.audio_filepath, peaks.times_s[new], peaks.class_ids[new], peaks.scores[new]),
            self.loaded.labels,
            self.thresholds,
            self.settings.refractory_s,
        )
        if chosen:
            self.last_s = chosen[-1].time_s
        return chosen


def microphone_blocks(block_samples: int) -> Iterator[np.ndarray]:
    """int16 blocks from the default input device (the optional `sounddevice` package), until Ctrl-C."""
    try:
        import sounddevice
    except (ImportError, OSError) as exc:  # OSError: the PortAudio library itself is missing
        raise KWSError(
            f"--mic needs the sounddevice package and PortAudio ({exc}); install them with "
            "`pip install 'kws[audio]'` (and `apt install libportaudio2`), or pass recordings instead"
        ) from None
    blocks: queue.Queue[np.ndarray] = queue.Queue()

    def callback(data: np.ndarray, frames: int, when: object, status: object) -> None:
        blocks.put(data[:, 0].copy())

    try:
        stream = sounddevice.InputStream(
            samplerate=SAMPLE_RATE, channels=1, dtype="int16", blocksize=block_samples, callback=callback
        )
    except Exception as exc:  # PortAudioError or ValueError, depending on the host API
        raise KWSError(
            f"cannot open the microphone at {SAMPLE_RATE} Hz mono ({exc}); check the input device"
        ) from None
    with stream:
        while True:
            yield blocks.get()


def run_live(detector: LiveDetector, blocks: Iterator[np.ndarray], emit: Callable[[Detection], None]) -> None:
    """Feed `blocks` to `detector`, calling `emit` for each detection as it becomes final."""
    try:
        for block in blocks:
            for detection in detector.feed(block):
                emit(detection)
    finally:
        for detection in detector.flush():
            emit(detection)
