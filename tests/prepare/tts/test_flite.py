"""kws.prepare.tts.flite: the held-out-synthesizer (flite) test set of bench/generalization.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kws.manifest import read_manifest
from kws.prepare.tts import flite
from kws.prepare.tts.clip import trim
from tests.helpers import REPO

BENCH = REPO / "bench"
needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="needs flite (apt-get install flite)")


def test_speakers_are_reproducible_and_cover_every_voice() -> None:
    speakers = flite.draw_speakers(20, seed=0)
    assert speakers == flite.draw_speakers(20, seed=0)
    assert speakers != flite.draw_speakers(20, seed=1)
    assert {s.voice for s in speakers} == set(flite.VOICES)
    assert len({s.id for s in speakers}) == 20
    for s in speakers:
        assert flite.TEMPO[0] <= s.stretch <= flite.TEMPO[1]
        assert (s.f0_hz is not None) == (s.voice in flite.DIPHONE)


@needs_flite
def test_test_set_is_one_second_clips_with_a_manifest_and_byte_identical_on_rerun(tmp_path: Path) -> None:
    manifest = flite.make_test_set(["yes", "no"], 5, tmp_path / "a", seed=0)
    entries = read_manifest(manifest)
    assert len(entries) == 10 and sorted({e.label for e in entries}) == ["no", "yes"]
    for e in entries:
        audio, rate = sf.read(e.audio_filepath, dtype="int16")
        assert rate == 16000 and audio.shape == (16000,)
        assert np.abs(audio).max() > 3000, "speech, not silence"
        assert Path(e.audio_filepath).parent.name == e.label
    again = read_manifest(flite.make_test_set(["yes", "no"], 5, tmp_path / "b", seed=0))
    for a, b in zip(entries, again, strict=True):
        assert Path(a.audio_filepath).read_bytes() == Path(b.audio_filepath).read_bytes()


@needs_flite
def test_voices_differ_and_tempo_is_respected() -> None:
    slow = flite.FliteSpeaker("rms", 1.3, None)
    fast = flite.FliteSpeaker("rms", 0.8, None)
    lengths = {}
    for speaker in (slow, fast):
        audio, rate = flite.speak(speaker, "seven")
        lengths[speaker.stretch] = len(trim(audio, rate)) / rate
    assert lengths[1.3] / lengths[0.8] == pytest.approx(1.3 / 0.8, rel=0.2)
    a, _ = flite.speak(flite.FliteSpeaker("slt", 1.0, None), "seven")
    b, _ = flite.speak(flite.FliteSpeaker("awb", 1.0, None), "seven")
    assert len(a) != len(b) or not np.allclose(a, b)
    low = flite.render(flite.FliteSpeaker("kal16", 1.0, 80.0), "seven", seed=0)
    high = flite.render(flite.FliteSpeaker("kal16", 1.0, 160.0), "seven", seed=0)
    assert pitch_hz(high) / pitch_hz(low) == pytest.approx(2.0, rel=0.2)


def pitch_hz(clip: np.ndarray) -> float:
    """Autocorrelation pitch of the loudest 50 ms."""
    x = clip.astype(np.float64)
    centre = int(np.argmax(np.convolve(x**2, np.ones(800), "same")))
    seg = x[max(0, centre - 400) : centre + 400]
    ac = np.correlate(seg, seg, "full")[len(seg) - 1 :]
    lo, hi = 16000 // 400, 16000 // 60
    return 16000 / (lo + int(np.argmax(ac[lo:hi])))


def test_the_bench_script_still_runs() -> None:
    # bench/generalization.py imports make_test_set from it, run from the bench folder
    script = "import other_synth; print(other_synth.make_test_set.__name__)"
    proc = subprocess.run([sys.executable, "-c", script], cwd=BENCH, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "make_test_set", proc.stderr
