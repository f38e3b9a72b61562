"""Audio constants and wav I/O. Everything in kws is 16 kHz mono; the constants are defined once, here."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import soundfile as sf

from kws.errors import DataError, KWSError
from kws.files import atomic_path

SAMPLE_RATE = 16_000  # Hz
CLIP_S = 1.0  # seconds: a Speech Commands clip is at most this long
CLIP_SAMPLES = int(SAMPLE_RATE * CLIP_S)
INT16_SCALE = 32768.0  # int16 full scale, to turn PCM into floats in [-1, 1)
# The analysis window of the features (kws.config.FeaturesConfig's defaults) and of the errors page.
WIN_S = 0.025  # seconds
HOP_S = 0.010  # seconds: one second -> 101 frames
WIN_LENGTH = round(WIN_S * SAMPLE_RATE)  # samples
HOP_LENGTH = round(HOP_S * SAMPLE_RATE)  # samples
N_FFT = 512  # samples: the power of two above WIN_LENGTH
N_MELS = 64
# Dataset layout (Speech Commands, and the TTS source that copies it): the background noise recordings.
NOISE_DIR = "_background_noise_"


def wav_frames(path: Path) -> int:
    """Number of samples of a 16 kHz mono wav, read from its header (no decoding)."""
    return int(_wav_info(path).frames)


def _wav_info(path: Path) -> Any:
    """The header of a 16 kHz mono audio file (soundfile's info), or a one-line DataError."""
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise DataError(f"cannot read wav file {path}: {exc}; replace or remove the file") from None
    if info.samplerate != SAMPLE_RATE:
        raise DataError(
            f"{path} has a sample rate of {info.samplerate} Hz, expected {SAMPLE_RATE} Hz; "
            f"resample it (e.g. `sox in.wav -r {SAMPLE_RATE} out.wav`) or remove it"
        )
    if info.channels != 1:
        raise DataError(f"{path} has {info.channels} channels, expected mono; convert or remove it")
    return info


def read_wav(path: Path) -> np.ndarray:
    """Decode a 16 kHz mono wav into int16 samples `(samples,)`."""
    try:
        data, rate = sf.read(str(path), dtype="int16", always_2d=False)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise DataError(f"cannot read wav file {path}: {exc}; replace or remove the file") from None
    if rate != SAMPLE_RATE:
        raise DataError(
            f"{path} has a sample rate of {rate} Hz, expected {SAMPLE_RATE} Hz; resample or remove it"
        )
    if data.ndim != 1:
        raise DataError(f"{path} has {data.shape[1]} channels, expected mono; convert or remove it")
    return np.asarray(data, dtype=np.int16)


def wav_samples(path: Path) -> np.ndarray:
    """A recording's int16 samples `(samples,)`, as `read_wav`, but a 16-bit PCM wav is memory-mapped instead
    of decoded: hours of audio cost no memory until a part is read (kws detect, stream evaluation). The file
    must not be rewritten while its samples are in use."""
    info = _wav_info(path)  # 16 kHz mono, or a one-line DataError
    if (info.format, info.subtype) != ("WAV", "PCM_16") or (offset := _pcm_data_offset(path)) is None:
        return read_wav(path)
    try:
        return np.memmap(path, dtype="<i2", mode="r", offset=offset, shape=(int(info.frames),))
    except (ValueError, OSError):  # an empty or truncated data chunk, or a file system without mmap
        return read_wav(path)


def _pcm_data_offset(path: Path) -> int | None:
    """Where a RIFF/WAVE file's `data` chunk starts; None for a file laid out otherwise (RF64, ...)."""
    with open(path, "rb") as f:
        riff = f.read(12)
        if riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
            return None
        while len(header := f.read(8)) == 8:
            size = int.from_bytes(header[4:], "little")
            if header[:4] == b"data":
                return f.tell()
            f.seek(size + (size & 1), 1)  # chunks are padded to an even size
    return None


def write_wav(path: Path, samples: np.ndarray) -> None:
    """Write int16 samples `(samples,)` as 16-bit PCM, atomically (temporary name, then rename)."""
    if samples.dtype != np.int16:
        raise ValueError(f"write_wav expects int16 samples, got {samples.dtype}")
    with atomic_path(path) as tmp:
        sf.write(str(tmp), samples, SAMPLE_RATE, subtype="PCM_16", format="WAV")


def float_to_int16(audio: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] -> int16 PCM, clipped."""
    return np.clip(np.round(audio * INT16_SCALE), -32768, 32767).astype(np.int16)


def sounddevice_module(option: str, instead: str) -> ModuleType:
    """The optional `sounddevice` package (`pip install 'kws[audio]'`) that `option` (--play, --mic) needs,
    or a one-line KWSError saying how to install it or what to do `instead`."""
    try:
        import sounddevice
    except (ImportError, OSError) as exc:  # OSError: the PortAudio library itself is missing
        raise KWSError(
            f"{option} needs the sounddevice package and PortAudio ({exc}); install them with "
            f"`pip install 'kws[audio]'` (and `apt install libportaudio2`), or {instead}"
        ) from None
    return sounddevice
