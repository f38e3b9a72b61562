"""`kws detect` end to end on recordings with known events, and the live detector against the offline one."""

from __future__ import annotations

import importlib.util
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from kws.audio import SAMPLE_RATE, read_wav, wav_samples, write_wav
from kws.checkpoint import load_for_inference
from kws.detect.decode import smooth, smooth_windows
from kws.detect.detector import DetectSettings, detect_audio
from kws.detect.live import Backlog, LiveDetector, run_live
from kws.detect.scores import score_audio
from tests.helpers import kws
from tests.helpers.tone_streams import Placed, tone_stream, train_tone_detector

EVENTS = [
    ("up", 2.0),
    ("down", 6.3),
    ("unknown", 10.0),
    ("up", 14.7),
    ("unknown", 18.0),
    ("down", 22.2),
    ("down", 26.05),
]


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Placed]]:
    root = tmp_path_factory.mktemp("tone_detector")
    checkpoint = train_tone_detector(root)
    placed = tone_stream(root / "stream.wav", seed=1, duration_s=30.0, events=EVENTS)
    return checkpoint, root / "stream.wav", placed


def keyword_events(placed: list[Placed]) -> list[Placed]:
    return [p for p in placed if p.label != "unknown"]


def test_one_detection_per_keyword_at_its_time_and_none_for_other_sounds(
    detector: tuple[Path, Path, list[Placed]], tmp_path: Path
) -> None:
    checkpoint, stream, placed = detector
    out = tmp_path / "detections.jsonl"
    proc = kws("detect", checkpoint, stream, "--out", out)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    expected = keyword_events(placed)
    assert [d["label"] for d in lines] == [e.label for e in expected]
    for d, e in zip(lines, expected, strict=True):
        assert e.start_s - 0.5 <= d["time_s"] <= e.end_s + 0.5, (d, e)
        assert d["audio_filepath"] == str(stream.resolve()) and 0.8 <= d["score"] <= 1.0
    # printed too, one line each, and the summary with the real-time factor
    assert sum(" up " in line or " down " in line for line in proc.stdout.splitlines()) == len(expected)
    assert "5 detections in 0.01 h of audio" in proc.stderr and "x real time" in proc.stderr
    assert "thresholds (default): down 0.8, up 0.8" in proc.stderr


def test_unknown_and_silence_never_fire_even_at_threshold_zero(
    detector: tuple[Path, Path, list[Placed]],
) -> None:
    checkpoint, stream, _ = detector
    loaded = load_for_inference(checkpoint, torch.device("cpu"))
    found = detect_audio(loaded, str(stream), read_wav(stream), DetectSettings(default_threshold=0.0))
    assert found and {d.label for d in found} <= {"up", "down"}
    # one per refractory period at most, whatever the threshold
    times = [d.time_s for d in found]
    assert all(b - a >= 1.0 for a, b in zip(times, times[1:], strict=False))


def test_thresholds_file_sets_each_keyword_and_the_decoding(
    detector: tuple[Path, Path, list[Placed]], tmp_path: Path
) -> None:
    checkpoint, stream, placed = detector
    thresholds = tmp_path / "thresholds.json"
    # A keyword missing from the file never fires; the file's hop and smoothing are used
    thresholds.write_text(json.dumps({"thresholds": {"up": 0.9}, "hop_s": 0.2, "smooth_s": 0.0}))
    out = tmp_path / "d.jsonl"
    proc = kws("detect", checkpoint, stream, "--thresholds", thresholds, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert f"thresholds ({thresholds}): down off, up 0.9" in proc.stderr
    found = [json.loads(line) for line in out.read_text().splitlines()]
    assert [d["label"] for d in found] == ["up", "up"]
    # hop 0.2 s: every detection sits on a window centre 0.5 + k * 0.2
    assert all(abs((d["time_s"] - 0.5) / 0.2 - round((d["time_s"] - 0.5) / 0.2)) < 1e-6 for d in found)


def test_live_detection_matches_the_offline_one(detector: tuple[Path, Path, list[Placed]]) -> None:
    checkpoint, stream, _ = detector
    loaded = load_for_inference(checkpoint, torch.device("cpu"))
    audio = read_wav(stream)
    settings = DetectSettings()
    offline = [(round(d.time_s, 3), d.label) for d in detect_audio(loaded, "mic", audio, settings)]
    for size in (1234, len(audio)):  # blocks of any size; one 30 s block loses nothing
        live = LiveDetector(loaded, settings)
        heard: list[tuple[float, str]] = []
        blocks = (audio[i : i + size] for i in range(0, len(audio), size))
        run_live(live, blocks, lambda d, heard=heard: heard.append((round(d.time_s, 3), d.label)))
        assert heard == offline, size


def test_audio_lost_to_a_slow_detector_costs_only_the_keywords_in_it(
    detector: tuple[Path, Path, list[Placed]],
) -> None:
    checkpoint, stream, _ = detector
    loaded = load_for_inference(checkpoint, torch.device("cpu"))
    audio = read_wav(stream)
    offline = [(round(d.time_s, 3), d.label) for d in detect_audio(loaded, "mic", audio, DetectSettings())]
    assert [label for _, label in offline] == ["up", "down", "up", "down", "down"]
    # 13.6-16.0 s never reach the detector (the "up" at 14.7 s is in it): the microphone's Backlog reports
    # them as an int between the blocks
    cut, resume = int(13.6 * SAMPLE_RATE), int(16.0 * SAMPLE_RATE)
    blocks: list[np.ndarray | int] = [audio[i : min(i + 3000, cut)] for i in range(0, cut, 3000)]
    blocks += [resume - cut] + [audio[i : i + 3000] for i in range(resume, len(audio), 3000)]
    heard: list[tuple[float, str]] = []
    lost: list[int] = []
    live = LiveDetector(loaded, DetectSettings())
    run_live(live, iter(blocks), lambda d: heard.append((round(d.time_s, 3), d.label)), lost.append)
    assert lost == [resume - cut]
    # the other keywords at the offline times (counted from the first sample, the lost audio included)
    assert heard == [d for d in offline if not 13.6 < d[0] < 16.0] and len(heard) == 4


def test_the_microphone_backlog_drops_what_detection_cannot_take_and_says_how_much() -> None:
    backlog = Backlog(max_samples=4000)
    blocks = [np.full(1000, i, dtype=np.int16) for i in range(7)]
    for block in blocks:  # nobody takes any: four fit, three are dropped
        backlog.put(block)
    got = [backlog.get()]
    backlog.put(blocks[0])  # room for it, but the backlog is not taken yet: one stretch of lost audio
    got += [backlog.get() for _ in range(3)]
    assert all(isinstance(g, np.ndarray) and g[0] == i for i, g in enumerate(got))
    assert backlog.items.empty() and backlog.waiting == 0
    backlog.put(blocks[0])  # all taken: the lost samples come first, then the block
    assert backlog.get() == 4000
    last = backlog.get()
    assert isinstance(last, np.ndarray) and np.array_equal(last, blocks[0])
    backlog.put(blocks[1])  # and no more ints while detection keeps up
    assert isinstance(backlog.get(), np.ndarray) and backlog.items.empty()


def test_shared_spectrogram_scores_equal_each_window_alone(detector: tuple[Path, Path, list[Placed]]) -> None:
    checkpoint, stream, _ = detector
    loaded = load_for_inference(checkpoint, torch.device("cpu"))
    audio = read_wav(stream)[: 7 * SAMPLE_RATE + 123]
    shared = score_audio(loaded, audio, 0.1, batch_windows=16)  # several batches
    exact = score_audio(loaded, audio, 0.1, exact=True)
    assert shared.probs.shape == exact.probs.shape == (62, len(loaded.labels))
    np.testing.assert_allclose(shared.probs, exact.probs, atol=1e-5)
    np.testing.assert_allclose(shared.times_s, 0.5 + 0.1 * np.arange(62))
    smoothed = smooth(shared.probs, smooth_windows(0.3, 0.1))
    np.testing.assert_allclose(smoothed[5], shared.probs[4:7].mean(axis=0), rtol=1e-5)


def test_memory_does_not_grow_with_the_recording(
    detector: tuple[Path, Path, list[Placed]], tmp_path: Path
) -> None:
    checkpoint, stream, _ = detector
    loaded = load_for_inference(checkpoint, torch.device("cpu"))
    long = tmp_path / "long.wav"
    write_wav(long, np.tile(read_wav(stream), 40))  # 20 minutes: 77 MB as float32
    audio = wav_samples(long)
    assert isinstance(audio, np.memmap)
    tracemalloc.start()
    try:
        mapped = score_audio(loaded, audio, 0.2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8e6, f"{peak / 1e6:.1f} MB of numpy memory for a 20-minute recording"
    assert mapped.duration_s == 1200.0
    np.testing.assert_array_equal(mapped.probs, score_audio(loaded, read_wav(long), 0.2).probs)


def test_a_recording_shorter_than_a_window_is_one_window(detector: tuple[Path, Path, list[Placed]]) -> None:
    checkpoint, _, _ = detector
    loaded = load_for_inference(checkpoint, torch.device("cpu"))
    scores = score_audio(loaded, np.zeros(4000, dtype=np.int16), 0.1)
    assert scores.probs.shape == (1, len(loaded.labels)) and scores.duration_s == 0.25


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hop", "0.013"], "--hop 0.013 s is not a multiple of the feature hop (10 ms); use e.g. 0.01"),
        (["--threshold", "1.5"], "--threshold must lie in [0, 1], got 1.5"),
        (["--threshold", "0.5", "--thresholds", "t.json"], "--threshold and --thresholds both given"),
        (["--smooth", "-1"], "--smooth must be a non-negative number of seconds, got -1.0"),
        (["--hop", "2"], "--hop 2 s is longer than the 1 s window"),
    ],
)
def test_bad_options_are_one_line_errors(
    detector: tuple[Path, Path, list[Placed]], args: list[str], message: str
) -> None:
    checkpoint, stream, _ = detector
    proc = kws("detect", checkpoint, stream, *args)
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2


@pytest.mark.parametrize(("rate", "channels", "message"), [(8000, 1, "8000 Hz"), (16000, 2, "2 channels")])
def test_recordings_kws_cannot_read_are_named_before_any_scoring(
    detector: tuple[Path, Path, list[Placed]], tmp_path: Path, rate: int, channels: int, message: str
) -> None:
    checkpoint, stream, _ = detector
    bad = tmp_path / "bad.wav"
    sf.write(str(bad), np.zeros((rate, channels), dtype=np.int16), rate)
    proc = kws("detect", checkpoint, stream, bad)
    assert proc.returncode == 1 and message in proc.stderr and str(bad) in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "detecting" not in proc.stderr


def test_recordings_or_mic_exactly_one(detector: tuple[Path, Path, list[Placed]]) -> None:
    checkpoint, stream, _ = detector
    for args in ([], [stream, "--mic"]):
        proc = kws("detect", checkpoint, *args)
        assert proc.returncode == 1 and "pass recordings to scan or --mic" in proc.stderr, proc.stderr
    proc = kws("detect", checkpoint, "--mic", "--out", "d.jsonl")
    assert proc.returncode == 1 and "with --mic they are printed as they come" in proc.stderr, proc.stderr


@pytest.mark.skipif(importlib.util.find_spec("sounddevice") is not None, reason="sounddevice is installed")
def test_mic_without_the_audio_extra_names_the_install(detector: tuple[Path, Path, list[Placed]]) -> None:
    checkpoint, _, _ = detector
    proc = kws("detect", checkpoint, "--mic")
    assert proc.returncode == 1 and "pip install 'kws[audio]'" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().splitlines()[-1].startswith("error: --mic")
