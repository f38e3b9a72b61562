"""From synthesized speech to a one-second clip: trim the silence around it, fade the cut edges, resample it
to 16 kHz (a little faster when it is too long) and place it at a random level and offset; or, for running
speech longer than a clip, cut a random second out of it.

The TTS source, its speaking styles (kws.prepare.tts.styles) and every engine's speakers
(kws.prepare.tts.engines) cut and fit their speech here, so a change to the clip recipe happens once.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from kws.audio import CLIP_SAMPLES, SAMPLE_RATE
from kws.prepare.tts.voices import Draw

SILENCE_DB = -50.0  # frames this far below the loudest frame are silence (espeak-ng's pauses are ~zero)
SILENT_RMS = 1e-4  # a whole utterance quieter than this (full scale 1.0) is silence
TRIM_FRAME_S = 0.01  # a clip's speech is found in frames this long
TRIM_MARGIN_S = 0.02  # kept on each side of the speech, so soft onsets and releases survive
FADE_S = 0.005  # raised-cosine fade of the trimmed speech's edges
PEAK_DBFS = (-20.0, -1.0)  # random gain: the clip's peak level
# Resampling: a windowed-sinc polyphase filter, the same design as torchaudio.functional.resample (hann
# window, 6 zero crossings), written in numpy so that worker processes start without importing torch.
LOWPASS_ZEROS = 6
ROLLOFF = 0.99
MAX_FILTER_BANK = 1 << 20  # phases x input step of the reduced rate ratio; 22050 -> 16000 is 320 x 441
SPEED_UP_STEP_HZ = 50  # a sped-up clip is resampled to a multiple of this: keeps the filter bank small

Ramp = Literal["linear", "raised_cosine"]


def frame_levels(audio: np.ndarray, rate: int, frame_s: float) -> tuple[np.ndarray, int]:
    """RMS of consecutive `frame_s` frames `(n_frames,)` and the frame length in samples."""
    frame = max(1, round(frame_s * rate))
    n = len(audio) // frame
    return np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1)), frame


def active_frames(audio: np.ndarray, rate: int, frame_s: float) -> tuple[np.ndarray, int]:
    """Which `frame_s` frames are speech (within SILENCE_DB of the loudest), `(n_frames,)` bool, and the frame
    length in samples. All False for silence."""
    rms, frame = frame_levels(audio, rate, frame_s)
    if len(rms) == 0 or rms.max() < SILENT_RMS:
        return np.zeros(len(rms), dtype=bool), frame
    return rms >= rms.max() * 10 ** (SILENCE_DB / 20), frame


def trim(
    audio: np.ndarray, rate: int, *, frame_s: float = TRIM_FRAME_S, margin_s: float = TRIM_MARGIN_S
) -> np.ndarray:
    """The audio from its first to its last speech frame, plus `margin_s` each side (silence where the audio
    has none: speech that starts or ends at the audio's edge still gets its margin, so that a clip never
    starts or ends mid-word); empty for silence."""
    on, frame = active_frames(audio, rate, frame_s)
    idx = np.flatnonzero(on)
    if len(idx) == 0:
        return audio[:0]
    margin = round(margin_s * rate)
    start, end = idx[0] * frame - margin, (idx[-1] + 1) * frame + margin
    out = audio[max(0, start) : min(len(audio), end)]
    if start < 0 or end > len(audio):
        out = np.pad(out, (max(0, -start), max(0, end - len(audio))))
    return out


def fade(audio: np.ndarray, rate: int, seconds: float = FADE_S, ramp: Ramp = "raised_cosine") -> np.ndarray:
    """Fade-in and fade-out of `seconds` (at most half the audio each), so a cut edge does not click."""
    n = min(round(seconds * rate), len(audio) // 2)
    if n == 0:
        return audio
    if ramp == "raised_cosine":
        gain = np.sin(np.linspace(0.0, np.pi / 2, n + 2)[1:-1]) ** 2
    else:
        gain = np.linspace(0.0, 1.0, n + 2)[1:-1]
    out = audio.copy()
    out[:n] *= gain
    out[len(out) - n :] *= gain[::-1]
    return out


@functools.lru_cache(maxsize=32)
def _sinc_kernel(orig: int, new: int) -> tuple[np.ndarray, int]:
    """(new, 2*width + orig) filter bank: row i makes output phase i from a window of the input."""
    base = min(orig, new) * ROLLOFF
    width = math.ceil(LOWPASS_ZEROS * orig / base)
    taps = np.arange(-width, width + orig) / orig
    t = np.clip((taps[None, :] - np.arange(new)[:, None] / new) * base, -LOWPASS_ZEROS, LOWPASS_ZEROS)
    window = np.cos(t * np.pi / LOWPASS_ZEROS / 2) ** 2
    return np.sinc(t) * window * (base / orig), width


def resample(audio: np.ndarray, orig_hz: int, new_hz: int) -> np.ndarray:
    """Band-limited resampling of float audio `(samples,)`; output length ceil(samples * new / orig)."""
    g = math.gcd(orig_hz, new_hz)
    orig, new = orig_hz // g, new_hz // g
    if orig * new > MAX_FILTER_BANK:  # the bank is (new, ~orig) floats: refuse rather than exhaust memory
        raise ValueError(
            f"resample {orig_hz} Hz -> {new_hz} Hz needs a {new}x{orig} filter bank; round the rates"
        )
    kernel, width = _sinc_kernel(orig, new)
    padded = np.pad(audio.astype(np.float64), (width, width + orig))
    frames = sliding_window_view(padded, kernel.shape[1])[::orig]  # (blocks, taps): one per `orig` inputs
    # einsum, not matmul: small enough that BLAS threads only add overhead (and contention with the workers).
    out = np.einsum("bt,nt->bn", frames, kernel).reshape(-1)
    return out[: math.ceil(len(audio) * new / orig)]


def speed_up(n_samples: int, rate: int) -> float:
    """How much faster than spoken `n_samples` at `rate` must play to fit one clip (1.0: it fits)."""
    return max(1.0, n_samples * SAMPLE_RATE / (CLIP_SAMPLES * rate))


def fit_to_clip(speech: np.ndarray, rate: int) -> np.ndarray:
    """Resample speech at `rate` to 16 kHz. Longer than 1 s, it is played slightly faster: resampled to a
    lower rate (a multiple of SPEED_UP_STEP_HZ, which keeps the filter bank small) and taken as 16 kHz."""
    target_hz = SAMPLE_RATE
    if len(speech) * SAMPLE_RATE > CLIP_SAMPLES * rate:
        target_hz = CLIP_SAMPLES * rate // len(speech) // SPEED_UP_STEP_HZ * SPEED_UP_STEP_HZ
    return resample(speech, rate, target_hz)[:CLIP_SAMPLES]


def place_in_clip(speech: np.ndarray, draw: Draw) -> tuple[np.ndarray, np.ndarray]:
    """Scale 16 kHz `speech` to a random peak level and put it at a random offset in one second of silence;
    returns the scaled speech and the float clip `(CLIP_SAMPLES,)`."""
    peak = max(float(np.max(np.abs(speech))), 1e-9)
    speech = speech * (10 ** (draw.uniform("peak_dbfs", *PEAK_DBFS) / 20) / peak)
    clip = np.zeros(CLIP_SAMPLES)
    offset = draw.integer("offset", 0, CLIP_SAMPLES - len(speech))
    clip[offset : offset + len(speech)] = speech
    return speech, clip


def speech_to_clip(speech: np.ndarray, rate: int, draw: Draw) -> tuple[np.ndarray, np.ndarray]:
    """Trimmed `speech` at `rate` -> (the 16 kHz speech as placed, the float clip `(CLIP_SAMPLES,)`): fitted
    to one second, faded at its edges, at the draw's level and offset."""
    return place_in_clip(fade(fit_to_clip(speech, rate), SAMPLE_RATE), draw)


def cut_clip(speech: np.ndarray, rate: int, draw: Draw) -> tuple[np.ndarray, np.ndarray]:
    """A random one-second stretch of running `speech` at `rate` -> (the 16 kHz speech, the float clip
    `(CLIP_SAMPLES,)` at the draw's level): cut hard, as a detector's window cuts a recording; speech
    shorter than a second is placed as by `speech_to_clip`."""
    audio = resample(speech, rate, SAMPLE_RATE)
    if len(audio) <= CLIP_SAMPLES:
        return place_in_clip(fade(audio, SAMPLE_RATE), draw)
    start = draw.integer("cut_start", 0, len(audio) - CLIP_SAMPLES)
    return place_in_clip(audio[start : start + CLIP_SAMPLES], draw)
