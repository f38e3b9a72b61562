"""`kws prepare --dataset tts --streams N`: long recordings with their keyword events, and their sentences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kws.audio import SAMPLE_RATE
from kws.prepare.splits import ManifestOptions
from kws.prepare.tts import stream_chunk
from kws.prepare.tts.keywords import V1_WORDS
from kws.prepare.tts.sentences import SENTENCES, keyword_free
from kws.prepare.tts.source import prepare_tts
from kws.prepare.tts.speakers import assign_splits
from kws.prepare.tts.stream_chunk import ChunkTask, render_chunk
from kws.prepare.tts.streams import MANIFEST, STREAM_DIR, StreamPlan
from kws.prepare.tts.voices import draw_speakers
from kws.stream_manifest import Stream, read_stream_audio, read_stream_manifest
from tests.prepare.tts.test_source import needs_espeak, run_kws

KEYWORDS = ["yes", "no", "stop"]
N_SPEAKERS = 12  # seed 0: two of them in the test split
MINUTES = 0.5
MIN_GAP_S = stream_chunk.PAUSE_S[0] - 0.002  # events are rounded outwards to the millisecond


def make_streams(root: Path, workers: int, n_streams: int = 1) -> list[str]:
    result = prepare_tts(
        root,
        "tts",
        KEYWORDS,
        n_speakers=N_SPEAKERS,
        clips_per_speaker=1,
        opts=ManifestOptions(workers=workers),
        style="plain",
        n_streams=n_streams,
        stream_minutes=MINUTES,
        free_minutes=MINUTES,  # the CLI's hour of keyword-free audio, shrunk for the test
    )
    return result.notes


def recordings(dataset: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((dataset / STREAM_DIR).glob("*.wav"))}


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Stream]]:
    root = tmp_path_factory.mktemp("streams")
    notes = make_streams(root, workers=2)
    assert any("wrote 2 recordings" in note for note in notes), notes
    dataset = root / "tts"
    return dataset, read_stream_manifest(dataset / MANIFEST, KEYWORDS)


@needs_espeak
def test_a_keyword_stream_and_a_keyword_free_one(streams: tuple[Path, list[Stream]]) -> None:
    dataset, manifest = streams
    assert [Path(s.audio_filepath) for s in manifest] == [
        dataset / STREAM_DIR / "stream_000.wav",
        dataset / STREAM_DIR / "free_000.wav",
    ]
    for stream in manifest:
        info = sf.info(stream.audio_filepath)
        assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
        assert info.frames == stream.duration * SAMPLE_RATE == MINUTES * 60 * SAMPLE_RATE
    keyword_stream, free = manifest
    assert free.events == ()
    assert len(keyword_stream.events) >= 2  # one every 5-15 s
    assert {e.label for e in keyword_stream.events} <= set(KEYWORDS)
    for line in (dataset / MANIFEST).read_text().splitlines():
        assert set(json.loads(line)) == {"audio_filepath", "duration", "events"}


def rms_db(audio: np.ndarray) -> float:
    return float(10 * np.log10(np.mean((audio.astype(np.float64) / 32768) ** 2) + 1e-12))


@needs_espeak
def test_events_are_speech_inside_the_audio_and_apart(streams: tuple[Path, list[Stream]]) -> None:
    _, manifest = streams
    stream = manifest[0]
    audio = read_stream_audio(Path(stream.audio_filepath))
    events = stream.events
    assert all(0 <= e.start_s < e.end_s <= stream.duration for e in events)
    assert all(b.start_s - a.end_s >= MIN_GAP_S for a, b in zip(events, events[1:], strict=False))
    for e in events:
        said = audio[round(e.start_s * SAMPLE_RATE) : round(e.end_s * SAMPLE_RATE)]
        before = audio[round((e.start_s - 0.25) * SAMPLE_RATE) : round(e.start_s * SAMPLE_RATE)]
        assert 0.15 < e.end_s - e.start_s < 1.5
        assert rms_db(said) > -40.0  # speech at -32..-20 dBFS, under noise at most as loud
        assert rms_db(said) > rms_db(before) + 0.5  # the pause before it holds only noise


@needs_espeak
def test_in_a_clean_chunk_each_event_is_one_utterance_with_silence_around_it(
    streams: tuple[Path, list[Stream]], monkeypatch: pytest.MonkeyPatch
) -> None:
    speakers = draw_speakers(0, N_SPEAKERS)
    split = assign_splits([s.id for s in speakers])
    plan = StreamPlan.build(1, MINUTES, MINUTES, KEYWORDS, speakers, split, seed=0, style="rich")
    assert plan is not None
    monkeypatch.setattr(stream_chunk, "CLEAN_CHANCE", 1.0)  # no noise: the pauses are exact zeros
    audio, events = render_chunk(ChunkTask(plan.voices, "stream_000", 0, 30 * SAMPLE_RATE, True))
    assert len(events) >= 2
    gap = round(0.29 * SAMPLE_RATE)
    for e in events:
        assert np.any(audio[e.start : e.end] != 0)
        assert not np.any(audio[max(0, e.start - gap) : e.start]) and not np.any(audio[e.end : e.end + gap])
    speech = np.flatnonzero(audio)
    assert speech[0] >= round(0.3 * SAMPLE_RATE) and speech[-1] < 30 * SAMPLE_RATE  # nothing in the overlap


@needs_espeak
def test_no_keyword_near_a_chunk_edge_so_neighbouring_chunks_keep_them_apart() -> None:
    speakers = draw_speakers(0, N_SPEAKERS)
    split = assign_splits([s.id for s in speakers])
    plan = StreamPlan.build(1, MINUTES, MINUTES, KEYWORDS, speakers, split, seed=0, style="plain")
    assert plan is not None
    edge = stream_chunk.KEYWORD_EDGE_S * SAMPLE_RATE
    n = 30 * SAMPLE_RATE
    n_events = 0
    for index in range(8):  # chunks whose first keyword is due early and whose last one is late, among them
        _, events = render_chunk(ChunkTask(plan.voices, "stream_000", index, n, True))
        n_events += len(events)
        assert all(e.start >= edge and e.end <= n - edge for e in events), (index, events)
    assert n_events >= 8


@needs_espeak
def test_streams_are_byte_identical_whatever_the_workers_and_rerun_skips(
    streams: tuple[Path, list[Stream]], tmp_path: Path
) -> None:
    dataset, manifest = streams
    make_streams(tmp_path, workers=1)
    again = tmp_path / "tts"
    assert recordings(again) == recordings(dataset)
    assert [s.events for s in read_stream_manifest(again / MANIFEST)] == [s.events for s in manifest]

    mtimes = {p: p.stat().st_mtime_ns for p in (again / STREAM_DIR).iterdir()}
    notes = make_streams(tmp_path, workers=1)
    assert any("are up to date" in note for note in notes), notes
    assert {p: p.stat().st_mtime_ns for p in (again / STREAM_DIR).iterdir()} == mtimes

    make_streams(tmp_path, workers=1, n_streams=0)  # --streams 0: the recordings are removed
    assert not (again / STREAM_DIR).exists() and not (again / MANIFEST).exists()
    assert (again / "yes").is_dir()


@needs_espeak
def test_the_keyword_free_total_is_at_least_an_hour_by_default() -> None:
    speakers = draw_speakers(0, N_SPEAKERS)
    split = assign_splits([s.id for s in speakers])
    for n, minutes, n_free in [(1, 10.0, 6), (2, 7.0, 9), (8, 10.0, 8)]:
        plan = StreamPlan.build(n, minutes, None, KEYWORDS, speakers, split, seed=0, style="rich")
        assert plan is not None
        names = [r.name for r in plan.recordings]
        assert names == [f"stream_{i:03d}" for i in range(n)] + [f"free_{i:03d}" for i in range(n_free)]
        assert {r.n_samples for r in plan.recordings} == {round(minutes * 60 * SAMPLE_RATE)}
        assert n_free * minutes >= max(n * minutes, 60)
    assert StreamPlan.build(0, 10.0, None, KEYWORDS, speakers, split, seed=0, style="rich") is None


@needs_espeak
@pytest.mark.parametrize(
    ("args", "match"),
    [
        (
            ["--speakers", "2", "--streams", "1"],
            "none of the 2 speakers is in the test split; pass more --speakers",
        ),
        (["--streams", "-1"], "--streams must be 0"),
        (["--streams", "1", "--stream-minutes", "0.1"], "--stream-minutes must be between 0.25 and"),
    ],
)
def test_bad_stream_options_are_one_line_errors_before_synthesis(
    tmp_path: Path, args: list[str], match: str
) -> None:
    proc = run_kws("prepare", "--dataset", "tts", "--words", "yes", *args, "--data-root", str(tmp_path))
    assert proc.returncode == 1 and match in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("*.wav"))


def test_stream_options_belong_to_the_tts_dataset(tmp_path: Path) -> None:
    proc = run_kws("prepare", "--streams", "1", "--source", str(tmp_path), "--data-root", str(tmp_path))
    assert proc.returncode == 1 and "--dataset tts" in proc.stderr


@needs_espeak
def test_sentences_never_say_a_keyword_or_its_homophone() -> None:
    sentences = [
        "I know the way.",
        "Write it down.",
        "A quiet day.",
        "Turn right here.",
        "The for sale sign.",
    ]
    assert keyword_free(["no", "right", "four"], sentences) == ["A quiet day."]
    assert keyword_free(["hey there"], ["Hey there, friend.", "Hey, over there."]) == ["Hey, over there."]
    assert keyword_free(["seven up"], ["Seven up, please.", "Seven went up."]) == ["Seven went up."]
    assert len(keyword_free(V1_WORDS)) == len(SENTENCES) >= 300  # written without the Speech Commands words
    assert len(keyword_free(["the"])) < len(SENTENCES) / 4
