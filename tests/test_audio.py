"""kws.audio's wav reading: a 16-bit PCM recording memory-mapped (`wav_samples`) reads exactly what decoding
it reads, whatever chunks the file holds; anything else is decoded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kws.audio import SAMPLE_RATE, read_wav, wav_samples, write_wav
from kws.errors import DataError


def _samples(n: int = 40_000) -> np.ndarray:
    return np.random.default_rng(0).integers(-32768, 32768, n, dtype=np.int16)


def test_a_pcm_wav_is_memory_mapped_with_the_decoded_samples(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    write_wav(path, _samples())
    mapped = wav_samples(path)
    assert isinstance(mapped, np.memmap) and mapped.dtype == np.int16
    assert np.array_equal(mapped, read_wav(path))


def test_chunks_before_the_data_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "tagged.wav"
    with sf.SoundFile(path, "w", SAMPLE_RATE, 1, subtype="PCM_16", format="WAV") as f:
        f.comment = "recorded in the kitchen"  # a LIST chunk before the data, as audio editors write it
        f.write(_samples())
    raw = path.read_bytes()
    assert raw.index(b"LIST") < raw.index(b"data")
    # and a chunk of odd length, which RIFF pads to an even size, right after the format chunk
    odd = b"junk" + (3).to_bytes(4, "little") + b"abc\x00"
    raw = raw[:36] + odd + raw[36:]
    path.write_bytes(raw[:4] + (len(raw) - 8).to_bytes(4, "little") + raw[8:])
    mapped = wav_samples(path)
    assert isinstance(mapped, np.memmap) and np.array_equal(mapped, _samples())
    assert np.array_equal(read_wav(path), _samples())


@pytest.mark.parametrize(("subtype", "fmt"), [("FLOAT", "WAV"), ("PCM_16", "FLAC"), ("PCM_24", "WAV")])
def test_other_encodings_are_decoded(tmp_path: Path, subtype: str, fmt: str) -> None:
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, _samples() / 32768.0, SAMPLE_RATE, subtype=subtype, format=fmt)
    decoded = wav_samples(path)
    assert not isinstance(decoded, np.memmap) and np.array_equal(decoded, read_wav(path))


def test_a_recording_kws_cannot_use_is_a_one_line_error(tmp_path: Path) -> None:
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.zeros((1600, 2), dtype=np.int16), SAMPLE_RATE, subtype="PCM_16")
    with pytest.raises(DataError, match="has 2 channels, expected mono"):
        wav_samples(stereo)
    narrow = tmp_path / "8k.wav"
    sf.write(narrow, np.zeros(800, dtype=np.int16), 8000, subtype="PCM_16")
    with pytest.raises(DataError, match="sample rate of 8000 Hz"):
        wav_samples(narrow)
