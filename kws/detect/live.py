"""`kws detect --mic`: detection on audio as it arrives, with the rule of kws.detect.decode applied causally.

`LiveDetector.feed(block)` takes int16 samples as they come and returns the detections that became final: a
candidate is final once the audio `lookahead_s` after it has been heard (half the refractory period, which
the peak needs, plus the smoothing). The refractory period then runs forward only: in time order, a
detection silences every keyword for `refractory_s` after it, whatever the block sizes. Offline detection
(kws.detect.detector) keeps the most confident of candidates closer than that instead, so on the same
recording the two agree except where two candidates compete within one refractory period.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from kws.audio import SAMPLE_RATE, sounddevice_module
from kws.detect.decode import Detection, find_peaks, smooth, smooth_windows, threshold_array
from kws.detect.detector import DetectSettings
from kws.detect.scores import WINDOW_SAMPLES, feature_hop_length, hop_samples, span_scorer, window_span
from kws.errors import KWSError
from kws.exported import OnnxModel

if TYPE_CHECKING:
    from kws.checkpoint import LoadedModel

HISTORY_S = 8.0  # window scores kept for decoding; far more than the lookahead
BACKLOG_S = 2.0  # audio the microphone may get ahead of detection; past that its new blocks are dropped


class LiveDetector:
    """Feed audio blocks, get final detections. Times are seconds since the first sample fed."""

    def __init__(self, loaded: LoadedModel | OnnxModel, settings: DetectSettings, name: str = "mic") -> None:
        self.loaded, self.settings, self.name = loaded, settings, name
        self.hop = hop_samples(settings.hop_s, feature_hop_length(loaded))
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
        self.score = span_scorer(loaded, self.hop)  # as offline detection scores

    def feed(self, block: np.ndarray) -> list[Detection]:
        """int16 samples `(n,)` -> the detections that became final. A long block is taken a second at a time:
        the same detections whatever the block size, and memory that does not grow with it."""
        block = np.asarray(block, dtype=np.int16).reshape(-1)
        found: list[Detection] = []
        for i in range(0, len(block), WINDOW_SAMPLES):
            self.audio = np.concatenate([self.audio, block[i : i + WINDOW_SAMPLES]])
            if self._score_windows():
                found += self._decide(self.times[-1] - self.lookahead_s)
        return found

    def flush(self) -> list[Detection]:
        """The end of the audio: the last, zero-padded window as offline detection scores it, then every
        remaining candidate decided."""
        if len(self.audio) > WINDOW_SAMPLES - self.hop or (not self.times and len(self.audio)):
            self.audio = np.concatenate([self.audio, np.zeros(WINDOW_SAMPLES, dtype=np.int16)])[
                :WINDOW_SAMPLES
            ]
            self._score_windows()
        return self._decide(np.inf)

    def skip(self, n_samples: int) -> list[Detection]:
        """`n_samples` of audio after what was fed are lost (detection fell behind the microphone): what was
        fed is finished as at the end of a recording (`flush`), and what follows starts afresh, its times
        still counted from the first sample fed."""
        end = self.offset + len(self.audio)  # the first sample not fed
        found = self.flush()
        self.offset = end + int(n_samples)
        self.audio = np.zeros(0, dtype=np.int16)
        self.times, self.probs = [], []
        self.horizon_s = self.offset / SAMPLE_RATE  # every window from here on is centred after it
        return found

    def _score_windows(self) -> int:
        """Score every whole window in the audio not yet scored; how many there were."""
        n_windows = (
            0 if len(self.audio) < WINDOW_SAMPLES else 1 + (len(self.audio) - WINDOW_SAMPLES) // self.hop
        )
        if n_windows == 0:
            return 0
        probs = self.score(window_span(self.audio, 0, n_windows, self.hop), n_windows)
        starts = self.offset + np.arange(n_windows) * self.hop
        self.times += ((starts + WINDOW_SAMPLES / 2) / SAMPLE_RATE).tolist()
        self.probs += list(probs)
        self.audio = self.audio[n_windows * self.hop :]
        self.offset += n_windows * self.hop
        keep = int(HISTORY_S * SAMPLE_RATE / self.hop)
        self.times, self.probs = self.times[-keep:], self.probs[-keep:]
        return n_windows

    def _decide(self, horizon_s: float) -> list[Detection]:
        """The candidates up to `horizon_s` not yet decided, in time order: each above its threshold fires
        unless the last detection is less than `refractory_s` before it (ties in time: the higher score)."""
        if not self.times or horizon_s <= self.horizon_s:
            return []
        times = np.array(self.times)
        smoothed = smooth(np.stack(self.probs), self.n_smooth)
        peaks = find_peaks(self.name, times, smoothed, self.loaded.labels, self.settings.refractory_s)
        new = (peaks.times_s > self.horizon_s) & (peaks.times_s <= horizon_s)
        new &= peaks.scores >= self.thresholds[peaks.class_ids]
        self.horizon_s = horizon_s
        found = []
        for i in np.lexsort((-peaks.scores, peaks.times_s)).tolist():
            t = float(peaks.times_s[i])
            if new[i] and t >= self.last_s + self.settings.refractory_s:
                found.append(
                    Detection(self.name, t, self.loaded.labels[peaks.class_ids[i]], float(peaks.scores[i]))
                )
                self.last_s = t
        return found


class Backlog:
    """Blocks from the sound card's thread to detection, at most `max_samples` of them waiting. When detection
    falls that far behind, new blocks are dropped instead of piling up in memory (and detections ever later
    than the speech) until it has taken every block waiting, so that each such episode is one stretch of lost
    audio; the next block is preceded by the number of samples lost: an int in the stream of blocks, which
    `run_live` hands to `LiveDetector.skip`."""

    def __init__(self, max_samples: int) -> None:
        self.max_samples = max_samples
        self.items: queue.Queue[np.ndarray | int] = queue.Queue()
        self.lock = threading.Lock()
        self.waiting = 0  # samples queued and not yet taken
        self.lost = 0  # samples dropped since the last block queued

    def put(self, block: np.ndarray) -> None:
        """From the audio thread: never waits."""
        with self.lock:
            if (self.lost and self.waiting) or self.waiting + len(block) > self.max_samples:
                self.lost += len(block)
                return
            self.waiting += len(block)
            if self.lost:
                self.items.put(self.lost)
                self.lost = 0
            self.items.put(block)

    def get(self) -> np.ndarray | int:
        """The next block, or the number of samples dropped before it; waits for one."""
        item = self.items.get()
        if not isinstance(item, int):
            with self.lock:
                self.waiting -= len(item)
        return item


def microphone_blocks(block_samples: int) -> Iterator[np.ndarray | int]:
    """int16 blocks from the default input device (the optional `sounddevice` package), until Ctrl-C; an int
    where detection fell more than BACKLOG_S behind: the samples dropped there (Backlog)."""
    sounddevice = sounddevice_module("--mic", "pass recordings instead")
    backlog = Backlog(int(BACKLOG_S * SAMPLE_RATE))

    def callback(data: np.ndarray, frames: int, when: object, status: object) -> None:
        backlog.put(data[:, 0].copy())

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
            yield backlog.get()


def run_live(
    detector: LiveDetector,
    blocks: Iterator[np.ndarray | int],
    emit: Callable[[Detection], None],
    lost: Callable[[int], None] | None = None,
) -> None:
    """Feed `blocks` to `detector`, calling `emit` for each detection as it becomes final; an int among the
    blocks is audio lost there (`LiveDetector.skip`), reported to `lost`."""
    try:
        for block in blocks:
            if isinstance(block, int):
                found = detector.skip(block)
                if lost is not None:
                    lost(block)
            else:
                found = detector.feed(block)
            for detection in found:
                emit(detection)
    finally:
        for detection in detector.flush():
            emit(detection)
