"""flite, an engine of the TTS source (kws.prepare.tts.engines): its diphone voice kal (at 8 and 16 kHz) and
its clustergen voices made from recordings of people (awb: Scottish male, rms: US male, slt: US female).
Each clip is one flite process (about 40 ms)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from kws.errors import KWSError
from kws.prepare.tts.engines import program_version

if TYPE_CHECKING:
    from kws.prepare.tts.engines import EngineSpec, EngineVoice

FLITE = "flite"
INSTALL = "sudo apt-get install flite"
VOICES = ("kal", "kal16", "awb", "rms", "slt")
F0_VOICES = {"kal": (70.0, 170.0), "kal16": (70.0, 170.0)}  # the voices int_f0_target_mean sets, and ranges


def voices(spec: EngineSpec) -> tuple[str, ...]:
    return VOICES


def version(spec: EngineSpec) -> str:
    return program_version(FLITE, r"flite-(\S+)", INSTALL)[1]


def speak(voice: EngineVoice, text: str, tempo: float, f0_hz: float | None) -> tuple[np.ndarray, int]:
    """flite's float samples `(samples,)` and their rate for `text`; `tempo` > 1 is faster."""
    cmd = [FLITE, "-voice", voice.voice, "--setf", f"duration_stretch={1 / tempo:.4f}"]
    if f0_hz is not None:
        cmd += ["--setf", f"int_f0_target_mean={f0_hz:.1f}"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        try:
            proc = subprocess.run([*cmd, "-t", text, "-o", str(out)], capture_output=True, check=False)
        except FileNotFoundError:
            raise KWSError(f"flite is not installed; install it with `{INSTALL}`") from None
        if proc.returncode != 0 or not out.is_file():
            err = proc.stderr.decode(errors="replace").strip()
            raise KWSError(f"flite failed for {text!r} (voice {voice.voice}): {err}")
        audio, rate = sf.read(out, dtype="float64")
    return audio, int(rate)
