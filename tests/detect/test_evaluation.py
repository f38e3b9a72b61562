"""`kws evaluate CHECKPOINT STREAM_MANIFEST` end to end on hand-made recordings, the DET curve of a real
model, thresholds.json through `kws detect`, and `kws listen-errors` on the stream evaluation's folder."""

from __future__ import annotations

import base64
import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from kws import cli
from kws.audio import SAMPLE_RATE, float_to_int16, write_wav
from kws.checkpoint import load_for_inference
from kws.config import load_config
from kws.detect.evaluation import (
    DEFAULT_TARGET_FA_PER_HOUR,
    StreamOptions,
    keywords_of,
    read_streams,
    score_recording,
)
from kws.detect.matching import DEFAULT_TOLERANCE_S
from kws.detect.sweep import det_curve
from kws.errors import DataError
from kws.files import file_sha256
from kws.manifest import Entry, write_manifest
from kws.stream_manifest import Event, Stream, write_stream_manifest
from kws.thresholds import DEFAULT_HOP_S, DEFAULT_REFRACTORY_S, DEFAULT_SMOOTH_S
from tests.helpers import SMOKE, kws
from tests.helpers.checkpoints import random_checkpoint
from tests.helpers.chromium import FIRST_AUDIO_LOADED_JS, Chromium
from tests.helpers.report_checks import PNG_SIGNATURE, assert_png
from tests.helpers.tiny_dataset import synth_clip

LABELS = ["down", "up", "unknown", "silence"]
CHIRPS = {"up": (400.0, 2400.0), "down": (2400.0, 400.0), "unknown": (1500.0, 1500.0)}


def write_stream(path: Path, duration_s: float, sounds: list[tuple[str, float]], seed: int) -> Stream:
    """Faint noise with a chirp clip placed at each (label, time); the keyword clips are the events."""
    rng = np.random.default_rng(seed)
    audio = rng.normal(0.0, 0.003, int(duration_s * SAMPLE_RATE))
    events = []
    for label, at_s in sounds:
        clip = synth_clip(rng, *CHIRPS[label]).astype(np.float64) / 32768.0
        start = int(at_s * SAMPLE_RATE)
        audio[start : start + len(clip)] += clip
        if label != "unknown":
            events.append(Event(label, at_s, round(at_s + len(clip) / SAMPLE_RATE, 3)))
    write_wav(path, float_to_int16(audio))
    return Stream(str(path.resolve()), duration_s, tuple(events))


@dataclass
class Evaluated:
    checkpoint: Path
    streams: list[Stream]
    manifest: Path
    clips: Path  # a clip manifest evaluated in the same call
    out_dir: Path
    stdout: str


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Evaluated:
    root = tmp_path_factory.mktemp("stream_eval")
    checkpoint = random_checkpoint(root / "run" / "best.pt", load_config(SMOKE), LABELS, step=7)
    streams = [
        write_stream(root / "a.wav", 14.0, [("up", 1.5), ("down", 4.0), ("unknown", 7.0), ("up", 10.0)], 1),
        write_stream(root / "quiet.wav", 8.0, [("unknown", 3.0)], 2),  # keyword-free
    ]
    manifest = root / "streams.json"
    write_stream_manifest(manifest, streams)
    write_stream_manifest(root / "negatives.json", streams[1:])  # keyword-free audio alone
    rng = np.random.default_rng(3)
    entries = []
    for i, label in enumerate(["up", "down", "up", "down"]):
        write_wav(root / f"clip{i}.wav", synth_clip(rng, *CHIRPS[label]))
        entries.append(Entry(str(root / f"clip{i}.wav"), 1.0, label))
    clips = root / "clips.json"
    write_manifest(clips, entries)
    negatives = root / "negatives.json"
    proc = kws("evaluate", checkpoint, clips, manifest, negatives, "--target-fa-per-hour", "300")
    assert proc.returncode == 0, proc.stderr
    return Evaluated(checkpoint, streams, manifest, clips, root / "run" / "eval" / "streams", proc.stdout)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_report_thresholds_detections_and_det(evaluated: Evaluated) -> None:
    out = evaluated.out_dir
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "stream" and report["labels"] == LABELS
    assert report["checkpoint"] == str(evaluated.checkpoint.resolve()) and report["checkpoint_step"] == 7
    assert report["manifest"] == str(evaluated.manifest.resolve())
    assert report["options"] == {  # the library's defaults where the command gave none
        "hop_s": DEFAULT_HOP_S, "smooth_s": DEFAULT_SMOOTH_S, "refractory_s": DEFAULT_REFRACTORY_S,
        "tolerance_s": DEFAULT_TOLERANCE_S, "target_fa_per_hour": 300.0, "sweep_floor": 0.05,
    }  # fmt: skip
    assert report["hours"] == pytest.approx(22.0 / 3600) and report["n_recordings"] == 2
    assert report["n_events"] == 3 and set(report["per_keyword"]) == {"down", "up"}

    # detections.jsonl holds the final detections, and the counts of report.json are theirs
    lines = read_jsonl(out / "detections.jsonl")
    assert all(d["score"] >= report["thresholds"][d["label"]] - 1e-6 for d in lines)
    for label, k in report["per_keyword"].items():
        mine = [d for d in lines if d["label"] == label]
        n_events = sum(e.label == label for s in evaluated.streams for e in s.events)
        assert k["n_events"] == n_events and k["hits"] + k["misses"] == n_events
        assert k["hits"] == sum(d["outcome"] == "hit" for d in mine)
        assert k["false_accepts"] == sum(d["outcome"] != "hit" for d in mine)
        assert k["substitutions"] == sum(d["outcome"] == "substitution" for d in mine)
        assert k["fa_per_hour"] == pytest.approx(k["false_accepts"] / report["hours"])
        assert k["threshold"] == report["thresholds"][label]
        curve = report["det_curves"][label]
        assert len(curve["threshold"]) == len(curve["miss_rate"]) == len(curve["fa_per_hour"]) > 0
        assert curve["chosen"]["fa_per_hour"] <= 300.0 or "note" in k
    total = report["overall"]
    assert total["false_accepts"] == sum(d["outcome"] != "hit" for d in lines)
    assert total["hits"] == sum(d["outcome"] == "hit" for d in lines)
    assert total["n_events"] == 3 and len(report["missed"]) == total["misses"]
    assert {(m["label"], m["start_s"]) for m in report["missed"]} <= {
        (e.label, e.start_s) for s in evaluated.streams for e in s.events
    }

    thresholds = json.loads((out / "thresholds.json").read_text())
    assert thresholds == {
        "target_fa_per_hour": 300.0, "thresholds": report["thresholds"], "hop_s": 0.2, "smooth_s": 0.3,
        "refractory_s": 1.0, "checkpoint": evaluated.checkpoint.name,
        "checkpoint_sha256": file_sha256(evaluated.checkpoint), "checkpoint_step": report["checkpoint_step"],
    }  # fmt: skip
    assert_png(out / "det.png", (600, 400))

    # printed: the clip evaluation as before, then the stream table with each threshold
    stdout = evaluated.stdout
    assert "clips.json: accuracy" in stdout and "streams.json: recall" in stdout
    assert "false accepts per hour" in stdout and "per keyword, at the chosen thresholds" in stdout
    for label, x in report["thresholds"].items():
        assert re.search(rf"{label} .* {x:.3f}", stdout)
    assert f"listen: kws listen-errors {out}" in stdout
    clip_report = json.loads((out.parent / "clips" / "report.json").read_text())
    assert clip_report["num_samples"] == 4 and "kind" not in clip_report


def test_keyword_free_audio_sets_thresholds_by_false_accepts_alone(evaluated: Evaluated) -> None:
    out = evaluated.out_dir.parent / "negatives"
    report = json.loads((out / "report.json").read_text())
    assert report["n_events"] == 0 and report["overall"]["recall"] is None
    assert report["hours"] == pytest.approx(8.0 / 3600)
    for label, k in report["per_keyword"].items():
        assert k["recall"] is None and k["hits"] == 0 and report["det_curves"][label]["miss_rate"] is None
        curve = report["det_curves"][label]
        fa, x = curve["fa_per_hour"], curve["threshold"]
        i = int(np.searchsorted(np.asarray(x), k["threshold"]))  # the first curve point above it
        if "note" in k:  # even the highest threshold lets a false accept through
            assert i == len(x) - 1 and fa[i] > 300.0
        else:  # the lowest threshold at or under the target
            assert fa[i] <= 300.0 and (i == 0 or fa[i - 1] > 300.0)
    assert "negatives.json: recall - (0/0 events)" in evaluated.stdout
    assert_png(out / "det.png")


def test_thresholds_json_gives_kws_detect_the_same_detections(evaluated: Evaluated, tmp_path: Path) -> None:
    out = tmp_path / "found.jsonl"
    wavs = [s.audio_filepath for s in evaluated.streams]
    proc = kws("detect", evaluated.checkpoint, *wavs, "--thresholds", evaluated.out_dir / "thresholds.json",
               "--out", out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    keys = ("audio_filepath", "time_s", "label", "score")
    ours = [tuple(d[k] for k in keys) for d in read_jsonl(evaluated.out_dir / "detections.jsonl")]
    assert [tuple(d[k] for k in keys) for d in read_jsonl(out)] == ours
    assert "chosen for another checkpoint" not in proc.stderr

    # the same file, as if chosen for another checkpoint: a note, the same detections
    saved = json.loads((evaluated.out_dir / "thresholds.json").read_text())
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**saved, "checkpoint": "old.pt", "checkpoint_sha256": "0" * 64}))
    proc = kws("detect", evaluated.checkpoint, *wavs, "--thresholds", other, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert f"note: the thresholds in {other} were chosen for another checkpoint (old.pt)" in proc.stderr
    assert [tuple(d[k] for k in keys) for d in read_jsonl(out)] == ours


def test_det_curve_of_a_real_model_is_monotone(evaluated: Evaluated) -> None:
    loaded = load_for_inference(evaluated.checkpoint, torch.device("cpu"))
    options = StreamOptions()
    recordings = [score_recording(loaded, s, options) for s in evaluated.streams]
    hours = sum(s.duration for s in evaluated.streams) / 3600
    for keyword in keywords_of(LABELS):
        curve = det_curve(keyword, [(r.stream.events, r.candidates) for r in recordings], 0.5, hours)
        assert len(curve.thresholds) >= 3, "a random model still gives candidates to sweep"
        assert np.all(np.diff(curve.thresholds) > 0)
        assert curve.miss_rate is not None and np.all(np.diff(curve.miss_rate) >= 0)
        assert np.all(np.diff(curve.fa_per_hour) <= 0)
        n_candidates = sum(d.label == keyword for r in recordings for d in r.candidates)
        assert curve.hits[0] + curve.false_accepts[0] == n_candidates


def test_events_the_model_cannot_detect_are_a_one_line_error(evaluated: Evaluated, tmp_path: Path) -> None:
    stream = evaluated.streams[0]
    bad = Stream(stream.audio_filepath, stream.duration, (*stream.events[:1], Event("left", 12.0, 12.5)))
    write_stream_manifest(tmp_path / "bad.json", [bad])
    proc = kws("evaluate", evaluated.checkpoint, tmp_path / "bad.json", "--out", tmp_path / "eval")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "left" in proc.stderr
    assert not (tmp_path / "eval").exists()
    with pytest.raises(DataError, match="left"):
        read_streams(tmp_path / "bad.json", LABELS)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("past_end", "past the end of the audio"),
        ("overlap", "overlap"),
        ("stereo", "2 channels, expected mono"),
        ("8k", "sample rate of 8000 Hz, expected 16000 Hz"),
    ],
)
def test_bad_stream_manifests_are_one_line_errors_before_any_scoring(
    evaluated: Evaluated, tmp_path: Path, case: str, message: str
) -> None:
    stream = evaluated.streams[0]
    up, down = evaluated.streams[0].events[0], Event("down", 1.0, 1.5)
    if case == "past_end":
        bad = Stream(
            stream.audio_filepath, stream.duration, (Event("up", stream.duration - 0.2, stream.duration + 1),)
        )
    elif case == "overlap":
        bad = Stream(
            stream.audio_filepath, stream.duration, (up, Event("down", up.start_s + 0.1, up.end_s + 0.5))
        )
    else:
        rate, channels = (16000, 2) if case == "stereo" else (8000, 1)
        wav = tmp_path / f"{case}.wav"
        sf.write(str(wav), np.zeros((rate * 3, channels), dtype=np.int16), rate)
        bad = Stream(str(wav), 3.0, (down,))
    write_stream_manifest(tmp_path / "bad.json", [bad])
    proc = kws("evaluate", evaluated.checkpoint, tmp_path / "bad.json", "--out", tmp_path / "eval")
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "scoring" not in proc.stdout + proc.stderr and not (tmp_path / "eval").exists()


def test_a_duration_the_recording_does_not_have_is_an_error(evaluated: Evaluated, tmp_path: Path) -> None:
    stream = evaluated.streams[1]  # 8 s
    write_stream_manifest(tmp_path / "long.json", [Stream(stream.audio_filepath, 3600.0, ())])
    with pytest.raises(DataError, match=r"lasts 8.00 s but .* says 3600 s; fix its duration"):
        read_streams(tmp_path / "long.json", LABELS)
    write_stream_manifest(tmp_path / "gone.json", [Stream(str(tmp_path / "gone.wav"), 8.0, ())])
    with pytest.raises(DataError, match="gone.wav"):
        read_streams(tmp_path / "gone.json", LABELS)


@pytest.mark.parametrize(
    ("option", "value"), [("--tolerance", "-1"), ("--target-fa-per-hour", "nan"), ("--hop", "0")]
)
def test_bad_stream_options_are_one_line_errors(
    evaluated: Evaluated, tmp_path: Path, option: str, value: str
) -> None:
    proc = kws("evaluate", evaluated.checkpoint, evaluated.manifest, option, value, "--out", tmp_path / "e")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and option in proc.stderr, proc.stderr


def test_cli_defaults_are_the_library_defaults(evaluated: Evaluated, tmp_path: Path) -> None:
    params = inspect.signature(cli.evaluate).parameters
    assert params["tolerance"].default == DEFAULT_TOLERANCE_S
    # hop, smoothing, refractory period and target: None, so that a --thresholds file's can apply; with
    # neither, the library's defaults
    assert all(params[name].default is None for name in ("hop", "smooth", "refractory", "target_fa_per_hour"))
    proc = kws("evaluate", evaluated.checkpoint, evaluated.manifest, "--out", tmp_path / "e")
    assert proc.returncode == 0, proc.stderr
    options = json.loads((tmp_path / "e" / "report.json").read_text())["options"]
    assert options == {
        "hop_s": DEFAULT_HOP_S, "smooth_s": DEFAULT_SMOOTH_S, "refractory_s": DEFAULT_REFRACTORY_S,
        "tolerance_s": DEFAULT_TOLERANCE_S, "target_fa_per_hour": DEFAULT_TARGET_FA_PER_HOUR,
        "sweep_floor": 0.05,
    }  # fmt: skip


def test_thresholds_chosen_elsewhere_are_reported_as_they_are(evaluated: Evaluated, tmp_path: Path) -> None:
    chosen = json.loads((evaluated.out_dir / "thresholds.json").read_text())
    given = tmp_path / "given.json"  # "up" as chosen on streams.json, "down" left out: it never fires
    given.write_text(
        json.dumps({**chosen, "thresholds": {"up": chosen["thresholds"]["up"]}, "smooth_s": 0.0})
    )
    out = tmp_path / "held_out"
    proc = kws("evaluate", evaluated.checkpoint, evaluated.manifest, "--thresholds", given, "--out", out)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["thresholds_from"] == str(given)
    assert report["thresholds"] == {"down": None, "up": chosen["thresholds"]["up"]}
    assert report["options"] == {  # the file's smoothing; no target: nothing was chosen here
        "hop_s": 0.2, "smooth_s": 0.0, "refractory_s": 1.0, "tolerance_s": 0.5, "sweep_floor": 0.05,
    }  # fmt: skip
    down = report["per_keyword"]["down"]
    assert down["threshold"] is None and down["hits"] == 0 and down["false_accepts"] == 0
    assert down["note"] == f"not in {given}: never fires"
    assert not (out / "thresholds.json").exists()  # `kws export` finds only thresholds chosen on their audio
    assert_png(out / "det.png")
    assert f"thresholds from {given}" in proc.stdout and "at the given thresholds" in proc.stdout
    assert re.search(r"down .* off\*", proc.stdout)

    # what is counted is what `kws detect` finds with the same file
    found = tmp_path / "found.jsonl"
    wavs = [s.audio_filepath for s in evaluated.streams]
    proc = kws("detect", evaluated.checkpoint, *wavs, "--thresholds", given, "--out", found)
    assert proc.returncode == 0, proc.stderr
    keys = ("audio_filepath", "time_s", "label", "score")
    detected = [tuple(d[k] for k in keys) for d in read_jsonl(found)]
    assert [tuple(d[k] for k in keys) for d in read_jsonl(out / "detections.jsonl")] == detected
    up = report["per_keyword"]["up"]
    assert up["hits"] + up["false_accepts"] == len(detected) and all(d[2] == "up" for d in detected)

    assert "note" not in report and "chosen for another checkpoint" not in proc.stdout

    # thresholds chosen for another model: the same figures, and the note `kws detect` prints
    other = tmp_path / "other.json"
    other.write_text(
        json.dumps({**json.loads(given.read_text()), "checkpoint": "old.pt", "checkpoint_sha256": "0" * 64})
    )
    proc = kws(
        "evaluate", evaluated.checkpoint, evaluated.manifest, "--thresholds", other, "--out", tmp_path / "o"
    )
    assert proc.returncode == 0, proc.stderr
    noted = json.loads((tmp_path / "o" / "report.json").read_text())
    assert noted["note"].startswith(
        f"note: the thresholds in {other} were chosen for another checkpoint (old.pt)"
    )
    assert noted["overall"] == report["overall"]
    assert "chosen for another checkpoint (old.pt)" in " ".join(proc.stdout.split())  # wrapped by rich

    # a given option beats the file's; a target cannot be met by thresholds that are given
    proc = kws("evaluate", evaluated.checkpoint, evaluated.manifest, "--thresholds", given, "--smooth", "0.6",
               "--out", tmp_path / "smoothed")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "smoothed" / "report.json").read_text())["options"]["smooth_s"] == 0.6
    proc = kws("evaluate", evaluated.checkpoint, evaluated.manifest, "--thresholds", given,
               "--target-fa-per-hour", "1", "--out", tmp_path / "both")  # fmt: skip
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "--thresholds and --target-fa-per-hour both given" in proc.stderr
    proc = kws(
        "evaluate", evaluated.checkpoint, evaluated.clips, "--thresholds", given, "--out", tmp_path / "c"
    )
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "--thresholds applies to stream manifests" in proc.stderr

    # the page of errors of that evaluation says where its thresholds came from
    proc = kws("listen-errors", out)
    assert proc.returncode == 0, proc.stderr
    page = (out / "errors.html").read_text()
    assert f"given: {given}" in page and "off" in page


JS_CHECKS = (
    "(async () => {\n"
    + FIRST_AUDIO_LOADED_JS
    + """  const select = document.getElementById('f-pred');
  select.value = 'missed';
  select.dispatchEvent(new Event('input'));
  const shown = document.getElementById('shown').textContent;
  return { duration: audio.duration, cards: document.querySelectorAll('.card').length, shown };
})()"""
)


def test_listen_errors_shows_each_false_accept_and_miss(evaluated: Evaluated, tmp_path: Path) -> None:
    out = evaluated.out_dir
    lines = read_jsonl(out / "detections.jsonl")
    report = json.loads((out / "report.json").read_text())
    n_false, n_missed = sum(d["outcome"] != "hit" for d in lines), len(report["missed"])
    assert n_false + n_missed > 0, "the random model makes mistakes to look at"
    proc = kws("listen-errors", out, "--top", "0")
    assert proc.returncode == 0, proc.stderr
    assert f"{n_false} false accepts and {n_missed} missed events" in proc.stdout
    page = (out / "errors.html").read_text()
    n = n_false + n_missed
    assert page.count('class="card"') == n and page.count("<audio ") == n
    assert page.count('data-pred="missed"') == n_missed
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', page))
    assert not re.search(r"<link|@import|https?://", page)
    picture = re.search(r'<img [^>]*src="data:image/png;base64,([^"]+)"', page)
    assert picture is not None and base64.b64decode(picture.group(1))[:8] == PNG_SIGNATURE
    with Chromium(tmp_path) as browser:
        checks = browser.open((out / "errors.html").as_uri()).evaluate(JS_CHECKS)
        errors = browser.console_errors()
    assert errors == [], errors
    assert checks["cards"] == n and checks["shown"] == f"showing {n_missed} of {n} errors"
    assert 1.5 <= checks["duration"] <= 4.5  # the seconds around a detection or event, not the recording

    top = kws("listen-errors", out, "--top", "1", "--no-html")
    assert top.returncode == 0 and "1 selected" in top.stdout
    play = kws("listen-errors", out, "--play")
    assert play.returncode == 1 and "--play" in play.stderr and play.stderr.count("\n") == 1
