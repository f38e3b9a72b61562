"""`kws prepare --dataset tts` end to end through the CLI, plus the pieces: split hash, noises, voices."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kws.audio import CLIP_SAMPLES, SAMPLE_RATE
from kws.errors import KWSError
from kws.manifest import read_manifest
from kws.prepare.splits import speaker_of
from kws.prepare.tts.clip import fit_to_clip, resample, trim
from kws.prepare.tts.keywords import parse_words
from kws.prepare.tts.noise import NOISE_KINDS, make_noise, write_background_noises
from kws.prepare.tts.source import ClipTask, check_fits, render_clip
from kws.prepare.tts.speakers import assign_splits, which_set
from kws.prepare.tts.styles import FRAME_S, STYLE_WEIGHTS, Style, draw_style, speak, style_ssml
from kws.prepare.tts.voices import (
    ACCENTS,
    ESPEAK,
    VARIANT_FAMILIES,
    VARIANTS,
    Draw,
    Voice,
    draw_speakers,
    synthesize,
    synthesize_ssml,
    variant_family,
)

WORDS = "yes,no,up"
N_SPEAKERS = 8
RMS_FLOOR = 30.0  # int16 units (-61 dBFS): far below the quietest clip (peak >= -20 dBFS), far above silence

needs_espeak = pytest.mark.skipif(
    subprocess.run(["which", ESPEAK], capture_output=True).returncode != 0, reason="espeak-ng not installed"
)


def run_kws(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kws", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def prepare(root: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    args = ["prepare", "--dataset", "tts", "--words", WORDS, "--speakers", str(N_SPEAKERS), "--data-root"]
    return run_kws(*args, str(root), *extra, env=env)


def wavs(dataset: Path) -> dict[str, bytes]:
    return {p.relative_to(dataset).as_posix(): p.read_bytes() for p in sorted(dataset.rglob("*.wav"))}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tts")
    proc = prepare(root, "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "clips/s" in proc.stdout
    return root / "tts_keywords"


# ---------------------------------------------------------------- end to end


@needs_espeak
def test_clips_are_one_second_16khz_mono_int16_and_not_silent(dataset: Path) -> None:
    clips = sorted(p for p in dataset.glob("*/*.wav") if not p.parent.name.startswith("_"))
    assert len(clips) == 3 * N_SPEAKERS
    assert {p.parent.name for p in clips} == {"yes", "no", "up"}
    for path in clips:
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (
            SAMPLE_RATE,
            1,
            "PCM_16",
            CLIP_SAMPLES,
        )
        audio, _ = sf.read(str(path), dtype="int16")
        assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) > RMS_FLOOR, path
        assert path.stem.split("_nohash_")[0] in {s.id for s in draw_speakers(0, N_SPEAKERS)}


@needs_espeak
def test_background_noises_are_written(dataset: Path) -> None:
    names = sorted(p.stem for p in (dataset / "_background_noise_").glob("*.wav"))
    assert names == sorted(NOISE_KINDS)
    info = sf.info(str(dataset / "_background_noise_" / "pink_noise.wav"))
    assert (info.samplerate, info.channels, info.frames) == (SAMPLE_RATE, 1, 60 * SAMPLE_RATE)


@needs_espeak
def test_manifests_list_every_clip_once_and_speakers_never_cross_splits(dataset: Path) -> None:
    clips = {str(p) for p in dataset.glob("*/*.wav") if not p.parent.name.startswith("_")}
    split_of: dict[str, set[str]] = {}
    listed: list[str] = []
    for split in ("train", "validation", "test"):
        entries = read_manifest(dataset / f"{split}_manifest.json")
        assert entries, f"{split} is empty"
        for e in entries:
            assert e.label == Path(e.audio_filepath).parent.name
            split_of.setdefault(speaker_of(e.audio_filepath), set()).add(split)
            listed.append(e.audio_filepath)
    assert sorted(listed) == sorted(clips)
    assert all(len(splits) == 1 for splits in split_of.values()), split_of
    for name in ("validation_list.txt", "testing_list.txt"):
        for line in (dataset / name).read_text().splitlines():
            assert (dataset / line).is_file()


@needs_espeak
def test_same_seed_gives_identical_bytes_and_rerun_does_nothing(dataset: Path, tmp_path: Path) -> None:
    proc = prepare(tmp_path, "--workers", "1")  # another worker count: clips must not depend on it
    assert proc.returncode == 0, proc.stderr
    assert wavs(tmp_path / "tts_keywords") == wavs(dataset)

    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "tts_keywords").rglob("*")}
    proc = prepare(tmp_path, "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert "already" in proc.stdout and "up to date" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "tts_keywords").rglob("*")} == mtimes


@needs_espeak
def test_missing_espeak_gives_the_install_command(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path / "empty")}  # python itself is found via sys.executable
    proc = prepare(tmp_path, env=env)
    assert proc.returncode == 1
    assert "sudo apt-get install espeak-ng" in proc.stderr and "brew install espeak-ng" in proc.stderr


@pytest.mark.parametrize("words", ["", " , ", "yes,,no", "yes,caf\u00e9", "yes,YES"])
def test_bad_words_are_refused_by_the_cli(tmp_path: Path, words: str) -> None:
    proc = run_kws("prepare", "--dataset", "tts", "--words", words, "--data-root", str(tmp_path))
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and "--words" in proc.stderr
    assert not (tmp_path / "tts_keywords").exists()


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_bad_workers_are_refused_before_synthesis(tmp_path: Path, workers: str) -> None:
    proc = run_kws("prepare", "--dataset", "tts", "--workers", workers, "--data-root", str(tmp_path))
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and "--workers" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


@needs_espeak
def test_an_unwritable_data_root_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    root = tmp_path / "file" / "data"  # under a regular file: every write fails
    proc = run_kws(
        "prepare", "--dataset", "tts", "--words", "yes", "--speakers", "3", "--data-root", str(root)
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot write ") and "--data-root" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@needs_espeak
def test_a_clip_that_cannot_be_written_is_a_data_error(tmp_path: Path) -> None:
    from kws.errors import DataError
    from kws.prepare.tts.source import _write_clip

    (tmp_path / "file").write_text("not a folder")
    speaker = draw_speakers(0, 1)[0]
    task = ClipTask("yes", speaker, 0, 0, tmp_path / "file" / "yes" / f"{speaker.id}_nohash_0.wav")
    with pytest.raises(DataError, match="cannot write .*--data-root"):  # not an OSError: it pickles
        _write_clip(task)


# ---------------------------------------------------------------- killed and stopped runs (issue 10 item 5)

STOP_WORDS, STOP_SPEAKERS = "yes,no", "32"  # 64 clips in 4 worker tasks: long enough to stop midway


def start_prepare(root: Path) -> subprocess.Popen[str]:
    """`kws prepare --dataset tts --workers 2` in a session (process group) of its own. Its stderr goes to a
    file, not a pipe: a worker that outlived it would hold a pipe open."""
    args = ["prepare", "--dataset", "tts", "--words", STOP_WORDS, "--speakers", STOP_SPEAKERS]
    with (root / "stderr.txt").open("w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "kws", *args, "--workers", "2", "--data-root", str(root)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
            start_new_session=True,
            # as from a terminal: a test run in the background of a script inherits SIGINT ignored, and a
            # Python started that way never turns Ctrl-C into KeyboardInterrupt
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def prepare_stopping_words(root: Path) -> subprocess.CompletedProcess[str]:
    args = ["prepare", "--dataset", "tts", "--words", STOP_WORDS, "--speakers", STOP_SPEAKERS]
    return run_kws(*args, "--workers", "2", "--data-root", str(root))


def wait_for_clips(proc: subprocess.Popen[str], dataset: Path) -> None:
    deadline = time.monotonic() + 120
    while not any(dataset.glob("*/*_nohash_*.wav")):
        assert proc.poll() is None, "kws prepare ended before writing a clip"
        assert time.monotonic() < deadline, "no clip written in 120 s"
        time.sleep(0.01)


def group_members(pgid: int) -> list[int]:
    """Live processes of process group `pgid` (zombies, already dead, are not counted)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # the process ended while we looked
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def assert_group_gone(pgid: int) -> None:
    deadline = time.monotonic() + 5
    try:
        while group_members(pgid):
            assert time.monotonic() < deadline, f"processes {group_members(pgid)} outlived kws prepare"
            time.sleep(0.05)
    finally:  # never leave them running after a failure
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("whole")
    proc = prepare_stopping_words(root)
    assert proc.returncode == 0, proc.stderr
    return wavs(root / "tts_keywords")


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc's process table")


@needs_espeak
@needs_proc
def test_a_killed_run_leaves_no_worker_writing_and_a_rerun_completes_it(
    uninterrupted: dict[str, bytes], tmp_path: Path
) -> None:
    dataset = tmp_path / "tts_keywords"
    proc = start_prepare(tmp_path)
    wait_for_clips(proc, dataset)
    proc.kill()  # SIGKILL: the parent cleans up nothing
    proc.wait(timeout=60)
    written = wavs(dataset)
    assert_group_gone(proc.pid)
    time.sleep(0.5)
    assert wavs(dataset) == written, "clips were written after kws prepare was killed"
    assert 0 < len(written) < len(uninterrupted)

    again = prepare_stopping_words(tmp_path)
    assert again.returncode == 0, again.stderr
    assert wavs(dataset) == uninterrupted


@needs_espeak
@needs_proc
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_stops_like_ctrl_c_and_a_rerun_completes_the_dataset(
    uninterrupted: dict[str, bytes], tmp_path: Path, signum: int, code: int
) -> None:
    dataset = tmp_path / "tts_keywords"
    proc = start_prepare(tmp_path)
    wait_for_clips(proc, dataset)
    proc.send_signal(signum)
    proc.wait(timeout=60)
    assert_group_gone(proc.pid)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == code, stderr
    assert stderr.strip().splitlines()[-1] == "interrupted" and "Traceback" not in stderr
    assert 0 < len(wavs(dataset)) < len(uninterrupted)
    assert not list(dataset.glob("*/.*.tmp-*")), "a half-written clip was left under a temporary name"

    again = prepare_stopping_words(tmp_path)
    assert again.returncode == 0, again.stderr
    assert wavs(dataset) == uninterrupted


def test_parse_words() -> None:
    assert len(parse_words(None)) == 30
    assert parse_words(" Yes , hey   KWS ,don't,7-up") == ["yes", "hey kws", "don't", "7-up"]
    for bad in [
        "",
        "yes,",
        "yes/no",
        "../x",
        "a_b",
        "yes,no,yes",
        "dont,don't",
        "silence",
        "hey  ,",
        "x" * 41,
    ]:
        with pytest.raises(KWSError):
            parse_words(bad)


# ---------------------------------------------------------------- split rule


def readme_which_set(filename: str) -> str:
    """The Speech Commands README's which_set(), transcribed (validation 10 %, testing 10 %)."""
    import re

    hash_name = re.sub(r"_nohash_.*$", "", os.path.basename(filename))
    hashed = hashlib.sha1(hash_name.encode()).hexdigest()
    percentage = (int(hashed, 16) % (2**27 - 1 + 1)) * (100.0 / (2**27 - 1))
    return "validation" if percentage < 10 else "testing" if percentage < 20 else "training"


def test_which_set_follows_speech_commands_and_splits_10_10_80() -> None:
    ids = [hashlib.md5(str(i).encode()).hexdigest()[:8] for i in range(5000)]
    got = [which_set(f"yes/{sid}_nohash_{i % 3}.wav") for i, sid in enumerate(ids)]
    assert got == [readme_which_set(sid) for sid in ids]
    assert got == [which_set(sid) for sid in ids]  # only the speaker part counts
    fractions = {s: got.count(s) / len(got) for s in ("validation", "testing", "training")}
    assert abs(fractions["validation"] - 0.1) < 0.015 and abs(fractions["testing"] - 0.1) < 0.015


def test_assign_splits_keeps_validation_and_test_non_empty() -> None:
    for n in (3, 5, 8, 20):
        ids = [s.id for s in draw_speakers(0, n)]
        split = assign_splits(ids)
        assert set(split) == set(ids)
        assert {"validation", "testing", "training"} <= set(split.values())
    many = [s.id for s in draw_speakers(0, 300)]
    assert assign_splits(many) == {
        sid: which_set(sid) for sid in many
    }  # enough speakers: the rule, untouched


def test_assign_splits_with_three_speakers_keeps_a_training_speaker_or_says_so() -> None:
    for seed in range(300):
        ids = [s.id for s in draw_speakers(seed, 3)]
        try:
            split = assign_splits(ids)
        except KWSError as exc:  # never an IndexError
            assert "--speakers" in str(exc)
            continue
        assert set(split) == set(ids) and "training" in split.values()


# ---------------------------------------------------------------- noises


def log_log_slope(x: np.ndarray, low_hz: float = 100.0, high_hz: float = 4000.0) -> float:
    """Slope of log10 power against log10 frequency: 0 white, -1 pink, -2 brown."""
    frames = x[: len(x) // 1024 * 1024].reshape(-1, 1024) * np.hanning(1024)
    power = np.mean(np.abs(np.fft.rfft(frames, axis=1)) ** 2, axis=0)
    freqs = np.fft.rfftfreq(1024, 1 / SAMPLE_RATE)
    band = (freqs >= low_hz) & (freqs <= high_hz)
    return float(np.polyfit(np.log10(freqs[band]), np.log10(power[band]), 1)[0])


@pytest.mark.parametrize(
    ("kind", "slope"), [("white_noise", 0.0), ("pink_noise", -1.0), ("brown_noise", -2.0)]
)
def test_noise_spectral_tilt(kind: str, slope: float) -> None:
    x = make_noise(kind, 10 * SAMPLE_RATE, np.random.default_rng(0))
    assert len(x) == 10 * SAMPLE_RATE
    assert np.sqrt(np.mean(x**2)) == pytest.approx(1.0)
    assert log_log_slope(x) == pytest.approx(slope, abs=0.2)


def test_band_limited_and_modulated_noise() -> None:
    rng = np.random.default_rng(0)
    power = np.abs(np.fft.rfft(make_noise("high_hiss", SAMPLE_RATE, rng))) ** 2
    freqs = np.fft.rfftfreq(SAMPLE_RATE, 1 / SAMPLE_RATE)
    assert power[freqs >= 1500].sum() > 0.99 * power.sum()
    x = make_noise("modulated_pink", 4 * SAMPLE_RATE, rng)
    rms_10ms = np.sqrt(np.mean(x.reshape(-1, 160) ** 2, axis=1))
    assert np.percentile(rms_10ms, 95) > 3 * np.percentile(rms_10ms, 5)  # the swell is there


def test_background_noise_files(tmp_path: Path) -> None:
    paths = write_background_noises(tmp_path, seed=3, n_samples=2 * SAMPLE_RATE)
    again = write_background_noises(tmp_path / "again", seed=3, n_samples=2 * SAMPLE_RATE)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]
    for path in paths:
        audio, rate = sf.read(str(path), dtype="float64")
        assert rate == SAMPLE_RATE and audio.shape == (2 * SAMPLE_RATE,)
        assert 20 * np.log10(np.sqrt(np.mean(audio**2))) == pytest.approx(-20.0, abs=0.5)


# ---------------------------------------------------------------- voices and clips


def test_resample_keeps_a_tone() -> None:
    t = np.arange(22050) / 22050
    out = resample(np.sin(2 * np.pi * 1000 * t), 22050, SAMPLE_RATE)
    assert out.shape == (SAMPLE_RATE,)
    expected = np.sin(2 * np.pi * 1000 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)
    assert np.max(np.abs(out - expected)[100:-100]) < 1e-2


@pytest.mark.parametrize("seconds", [0.5, 1.0, 1.001, 1.03, 1.2, 1.5])
def test_fit_to_clip_resamples_and_speeds_up_what_is_longer_than_a_second(seconds: float) -> None:
    speech = np.random.default_rng(0).standard_normal(round(22050 * seconds))
    out = fit_to_clip(speech, 22050)
    if seconds <= 1.0:
        assert len(out) == math.ceil(len(speech) * SAMPLE_RATE / 22050)
    else:  # sped up by resampling to a rate just below 16 kHz: fills the clip to within a 50 Hz step
        assert CLIP_SAMPLES * (1 - 50 / SAMPLE_RATE) - 1 <= len(out) <= CLIP_SAMPLES


def test_speakers_are_reproducible_and_prefix_stable() -> None:
    a, b = draw_speakers(5, 40), draw_speakers(5, 60)
    assert a == b[:40]
    assert len({s.id for s in b}) == 60 and all(len(s.id) == 8 for s in b)
    assert draw_speakers(6, 40) != a
    assert Draw("k").uniform("x") == Draw("k").uniform("x") != Draw("k").uniform("y")


@needs_espeak
def test_every_accent_and_variant_exists() -> None:
    # espeak-ng falls back silently to the default voice for an unknown variant: demand distinct audio.
    base = Voice("en-us", "m1", 175, 50, 100, 0, 100)
    audio = {v: synthesize(replace(base, variant=v), "seven")[0].tobytes() for v in VARIANTS}
    assert len(set(audio.values())) == len(VARIANTS)
    for accent in ACCENTS:
        samples, rate = synthesize(replace(base, accent=accent), "seven")
        assert rate == 22050 and len(samples) > rate // 10


@needs_espeak
def test_pitch_range_changes_the_audio() -> None:
    flat, wide = (Voice("en-us", "m3", 175, 50, r, 0, 100) for r in (0, 180))
    assert synthesize(flat, "hello there")[0].tobytes() != synthesize(wide, "hello there")[0].tobytes()


@needs_espeak
def test_long_phrase_is_fitted_into_one_second(tmp_path: Path) -> None:
    slow = replace(draw_speakers(0, 1)[0], voice=Voice("en-gb", "m1", 120, 50, 100, 8, 100))
    task = ClipTask("okay computer turn on the light", slow, 0, 0, tmp_path / "x.wav")
    clip = render_clip(task)
    assert clip.shape == (CLIP_SAMPLES,) and clip.dtype == np.int16
    assert np.sqrt(np.mean(clip.astype(np.float64) ** 2)) > RMS_FLOOR
    assert np.array_equal(clip, render_clip(task))


@needs_espeak
def test_a_phrase_too_long_for_a_clip_is_refused_before_synthesis(tmp_path: Path) -> None:
    long = "abcdefghij klmnopqrst uvwxyz abcdefghijk"  # 40 characters, spelled out letter by letter
    args = ["prepare", "--dataset", "tts", "--words", f"yes,{long},no", "--speakers", "3"]
    proc = run_kws(*args, "--data-root", str(tmp_path))
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: --words {long!r} (") and "use a shorter phrase" in proc.stderr
    assert "'yes'" not in proc.stderr and "'no'" not in proc.stderr  # only the phrases that do not fit
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("*.wav"))


@needs_espeak
@pytest.mark.parametrize("style", ["plain", "rich"])
def test_a_long_phrase_that_fits_is_accepted(style: str) -> None:
    check_fits(["please turn off all the lights right now", "okay computer turn on the light"], style)


# ---------------------------------------------------------------- rich style (issue 7) and speakers.json


@needs_espeak
def test_speakers_json_lists_every_speaker_with_its_split(dataset: Path) -> None:
    doc = json.loads((dataset / "speakers.json").read_text())
    assert (doc["seed"], doc["style"]) == (0, "rich")
    speakers = draw_speakers(0, N_SPEAKERS)
    assert sorted(doc["speakers"]) == sorted(s.id for s in speakers)
    split_of_clip = {
        e.audio_filepath: split
        for split in ("train", "validation", "test")
        for e in read_manifest(dataset / f"{split}_manifest.json")
    }
    for s in speakers:
        row = doc["speakers"][s.id]
        assert (row["accent"], row["variant"], row["rate_wpm"], row["pitch"]) == (
            s.voice.accent,
            s.voice.variant,
            s.voice.rate_wpm,
            s.voice.pitch,
        )
        assert (row["pitch_range_pct"], row["word_gap"], row["amplitude"]) == (
            s.voice.pitch_range_pct,
            s.voice.word_gap,
            s.voice.amplitude,
        )
        assert row["variant_family"] == variant_family(s.voice.variant) in VARIANT_FAMILIES
        clips = sorted(dataset.glob(f"*/{s.id}_nohash_*.wav"))
        assert row["n_clips"] == len(clips) == 3
        assert {split_of_clip[str(p)] for p in clips} == {row["split"]}


@needs_espeak
def test_plain_style_is_the_issue_3_source_and_rich_keeps_its_plain_clips(
    dataset: Path, tmp_path: Path
) -> None:
    proc = prepare(tmp_path, "--style", "plain", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    plain, rich = wavs(tmp_path / "tts_keywords"), wavs(dataset)
    assert json.loads((tmp_path / "tts_keywords" / "speakers.json").read_text())["style"] == "plain"
    n_same = 0
    for name, data in plain.items():
        if name.startswith("_"):
            continue
        word, stem = name.split("/")
        sid, k = stem[:-4].split("_nohash_")
        drawn = draw_style(Draw(f"kws-tts/0/clip/{word}/{sid}/{k}"), "rich")
        assert (data == rich[name]) == (drawn == Style()), name  # same speakers, same draws
        n_same += drawn == Style()
    assert 0 < n_same < len(rich) - len(NOISE_KINDS)


def test_style_draws_are_reproducible_and_follow_the_weights() -> None:
    styles = [draw_style(Draw(f"k/{i}"), "rich") for i in range(2000)]
    assert styles == [draw_style(Draw(f"k/{i}"), "rich") for i in range(2000)]
    counts = {name: sum(s.name == name for s in styles) / len(styles) for name in STYLE_WEIGHTS}
    for name, weight in STYLE_WEIGHTS.items():
        assert abs(counts[name] - weight) < 0.04, counts
    carriers = [s for s in styles if s.name == "carrier"]
    assert any(s.lead_in and not s.tail for s in carriers) and any(s.tail and not s.lead_in for s in carriers)
    assert any(s.prosody for s in styles if s.name == "question")
    assert all(draw_style(Draw(f"k/{i}"), "plain") == Style() for i in range(50))
    voice = Voice("en-gb", "klatt3", 160, 40, 120, 2, 90)
    assert style_ssml(voice, Style(), "hey kws") == voice.ssml("hey kws")  # plain clips keep their bytes


def test_every_variant_family_is_well_represented() -> None:
    families = [variant_family(s.voice.variant) for s in draw_speakers(0, 300)]
    for family in VARIANT_FAMILIES:
        assert families.count(family) >= 0.1 * len(families), (family, families.count(family))
    assert variant_family("klatt4") == variant_family("david") == "klatt" and variant_family("m7") == "m"


def envelope(audio: np.ndarray, n: int = 40) -> np.ndarray:
    """Log energy of `n` equal slices: a tempo-free outline of the word."""
    slices = np.array_split(audio, n)
    return np.log10(np.array([np.mean(x**2) for x in slices]) + 1e-8)


def trimmed(audio: np.ndarray, rate: int) -> np.ndarray:
    """The speech from its first to its last loud frame, as the carrier cut measures it (no margin)."""
    return trim(audio, rate, frame_s=FRAME_S, margin_s=0.0)


@needs_espeak
@pytest.mark.parametrize("word", ["seven", "left", "happy", "zero"])
def test_carrier_cut_recovers_the_word(word: str) -> None:
    voice = Voice("en-us", "m3", 170, 50, 110, 1, 100)
    isolated, rate = speak(voice, word, Style())
    isolated = trimmed(isolated, rate)
    lead = trimmed(speak(voice, word, Style(name="carrier", lead_in="the word is", break_ms=250))[0], rate)
    tail = trimmed(speak(voice, word, Style(name="carrier", tail="please"))[0], rate)
    full = trimmed(synthesize_ssml(voice, style_ssml(voice, Style(tail="please"), word))[0] / 32768.0, rate)
    # After a lead-in the word is phrase-final, as when alone: about as long, the same energy outline.
    assert 0.8 < len(lead) / len(isolated) < 1.25
    assert np.corrcoef(envelope(lead), envelope(isolated))[0, 1] > 0.8
    # Before a tail it is non-final, so shorter (espeak-ng's word events put the cut within -35..+40 ms
    # of the boundary), but neither a fragment nor anything of "please".
    alone = trimmed(speak(voice, "", Style(name="carrier", tail="please"))[0], rate)
    assert 0.5 < len(tail) / len(isolated) < 1.05 and len(tail) < len(full) - 0.9 * len(alone)
    assert np.corrcoef(envelope(tail), envelope(isolated))[0, 1] > 0.4


@needs_espeak
def test_a_carrier_clip_is_one_second_and_not_silent(tmp_path: Path) -> None:
    speaker = draw_speakers(0, 1)[0]
    tasks = [ClipTask("seven", speaker, k, 0, tmp_path / "x.wav", "rich") for k in range(40)]
    carrier = next(t for t in tasks if draw_style(t.draw(), "rich").name == "carrier")
    clip = render_clip(carrier)
    assert clip.shape == (CLIP_SAMPLES,) and clip.dtype == np.int16
    assert np.sqrt(np.mean(clip.astype(np.float64) ** 2)) > RMS_FLOOR
    assert np.array_equal(clip, render_clip(carrier))


def final_pitch_hz(audio: np.ndarray, rate: int) -> float:
    """Autocorrelation pitch of the last voiced 120 ms (30 ms before the end, past the release)."""
    speech = trimmed(audio, rate)
    seg = speech[-round(0.15 * rate) : -round(0.03 * rate)]
    ac = np.correlate(seg, seg, "full")[len(seg) - 1 :]
    lo, hi = rate // 400, rate // 60
    return rate / (lo + int(np.argmax(ac[lo:hi])))


@needs_espeak
@pytest.mark.parametrize("word", ["seven", "marvin"])
def test_question_rises_where_the_statement_falls(word: str) -> None:
    voice = Voice("en-us", "m1", 175, 50, 100, 0, 100)
    statement, rate = speak(voice, word, Style())
    question, _ = speak(voice, word, Style(name="question", mark="?"))
    exclamation, _ = speak(voice, word, Style(name="exclamation", mark="!"))
    assert len({statement.tobytes(), question.tobytes(), exclamation.tobytes()}) == 3
    assert final_pitch_hz(question, rate) > 1.08 * final_pitch_hz(statement, rate)


def test_unknown_style_is_refused(tmp_path: Path) -> None:
    proc = run_kws("prepare", "--dataset", "tts", "--style", "fancy", "--data-root", str(tmp_path))
    assert proc.returncode == 1 and "--style" in proc.stderr
    assert not (tmp_path / "tts_keywords").exists()
