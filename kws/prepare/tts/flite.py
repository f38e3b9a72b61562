"""Held-out test speech from a second synthesizer, flite (bench/generalization.py, issue 7).

espeak-ng stays the only synthesizer of kws's data source; this is test data only. A model trained on
espeak-ng speech meets voices here that no espeak-ng setting makes: flite's diphone voice (kal, at 8 and
16 kHz) and its clustergen voices recorded from people (awb: Scottish male, rms: US male, slt: US female).
Each "speaker" is a reproducible draw of voice, tempo and (for the diphone voices, the only ones that honour
it) pitch; clips are trimmed, fitted into one second and placed like the TTS source's clips
(kws.prepare.tts.clip).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from kws.audio import CLIP_S, float_to_int16, write_wav
from kws.errors import KWSError
from kws.manifest import Entry, write_manifest
from kws.prepare.tts.clip import speech_to_clip, trim
from kws.prepare.tts.keywords import word_folder
from kws.prepare.tts.voices import Draw

FLITE = "flite"
VOICES = ("kal", "kal16", "awb", "rms", "slt")
DIPHONE = ("kal", "kal16")  # the voices whose pitch flite's int_f0_target_mean sets
TEMPO = (0.8, 1.3)  # duration_stretch: > 1 is slower
F0_HZ = (70.0, 170.0)
MANIFEST = "test_manifest.json"


@dataclass(frozen=True)
class FliteSpeaker:
    voice: str
    stretch: float
    f0_hz: float | None

    @property
    def id(self) -> str:
        pitch = f"_f0{self.f0_hz:.0f}" if self.f0_hz is not None else ""
        return f"flite_{self.voice}_s{self.stretch:.2f}{pitch}".replace(".", "p")


def draw_speakers(n: int, seed: int) -> list[FliteSpeaker]:
    """`n` speakers, the voices taken in turn so that each is about equally common."""
    speakers = []
    for i in range(n):
        draw = Draw(f"flite/{seed}/{i}")
        voice = VOICES[i % len(VOICES)]
        f0 = round(draw.uniform("f0", *F0_HZ)) if voice in DIPHONE else None
        speakers.append(FliteSpeaker(voice, round(draw.uniform("stretch", *TEMPO), 2), f0))
    return speakers


def speak(speaker: FliteSpeaker, word: str) -> tuple[np.ndarray, int]:
    """flite's float samples `(samples,)` and their rate for `word`."""
    cmd = [FLITE, "-voice", speaker.voice, "--setf", f"duration_stretch={speaker.stretch}"]
    if speaker.f0_hz is not None:
        cmd += ["--setf", f"int_f0_target_mean={speaker.f0_hz}"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        subprocess.run([*cmd, "-t", word, "-o", str(out)], check=True, capture_output=True)
        audio, rate = sf.read(out, dtype="float64")
    return audio, int(rate)


def render(speaker: FliteSpeaker, word: str, seed: int) -> np.ndarray:
    """int16 `(CLIP_SAMPLES,)`: the trimmed word at a random level and offset in one second of silence."""
    audio, rate = speak(speaker, word)
    _, clip = speech_to_clip(trim(audio, rate), rate, Draw(f"flite/{seed}/{speaker.id}/{word}"))
    return float_to_int16(clip)


def make_test_set(words: list[str], n_speakers: int, out: Path, seed: int = 0, workers: int = 2) -> Path:
    """Write `out/<word>/<speaker>_nohash_0.wav` for every word and speaker (keeping those already there),
    and `out/test_manifest.json`; returns the manifest's path."""
    if shutil.which(FLITE) is None:
        raise KWSError("flite is not installed: `sudo apt-get install flite` (or leave out --other-synth)")
    jobs = [
        (s, w, Path(out) / word_folder(w) / f"{s.id}_nohash_0.wav")
        for s in draw_speakers(n_speakers, seed)
        for w in words
    ]

    def one(job: tuple[FliteSpeaker, str, Path]) -> Entry:
        speaker, word, path = job
        if not path.is_file():
            write_wav(path, render(speaker, word, seed))
        return Entry(str(path), CLIP_S, word_folder(word))

    with ThreadPoolExecutor(workers) as pool:  # flite runs as a subprocess: threads are enough
        entries = list(pool.map(one, jobs))
    manifest = Path(out) / MANIFEST
    write_manifest(manifest, entries)
    return manifest
