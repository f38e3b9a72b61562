"""Stream manifests: round trip, the check of every line (one-line errors with the line number), audio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kws.audio import SAMPLE_RATE
from kws.errors import DataError
from kws.manifest import Entry, write_manifest
from kws.stream_manifest import (
    Event,
    Stream,
    is_stream_manifest,
    read_stream_audio,
    read_stream_manifest,
    write_stream_manifest,
)

GOOD = {
    "audio_filepath": "/data/a.wav",
    "duration": 60.0,
    "events": [
        {"label": "go", "start_s": 12.34, "end_s": 12.81},
        {"label": "stop", "start_s": 3.0, "end_s": 3.5},
    ],
}


def write_lines(path: Path, *objs: object) -> Path:
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs))
    return path


def one_line_error(path: Path, match: str, labels: list[str] | None = None) -> str:
    with pytest.raises(DataError, match=match) as info:
        read_stream_manifest(path, labels)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_round_trip_sorts_events_and_keeps_values(tmp_path: Path) -> None:
    free = Stream("/data/free.wav", 3600.0, ())
    path = write_lines(tmp_path / "s.json", GOOD)
    streams = read_stream_manifest(path, ["go", "stop", "unknown"])
    assert streams == [Stream("/data/a.wav", 60.0, (Event("stop", 3.0, 3.5), Event("go", 12.34, 12.81)))]
    write_stream_manifest(tmp_path / "again.json", [*streams, free])
    assert read_stream_manifest(tmp_path / "again.json") == [*streams, free]
    lines = (tmp_path / "again.json").read_text().splitlines()
    assert json.loads(lines[1]) == {"audio_filepath": "/data/free.wav", "duration": 3600.0, "events": []}
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically: no temporary left


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = write_lines(tmp_path / "sub" / "s.json", {**GOOD, "audio_filepath": "rec/a.wav"})
    assert read_stream_manifest(path)[0].audio_filepath == str(tmp_path / "sub" / "rec" / "a.wav")


def test_is_stream_manifest(tmp_path: Path) -> None:
    assert is_stream_manifest(write_lines(tmp_path / "s.json", "", GOOD))
    write_manifest(tmp_path / "clips.json", [Entry("/data/yes/a.wav", 1.0, "yes")])
    assert not is_stream_manifest(tmp_path / "clips.json")
    assert not is_stream_manifest(write_lines(tmp_path / "bad.json", "{not json"))
    assert not is_stream_manifest(tmp_path / "missing.json")
    (tmp_path / "empty.json").write_text("")
    assert not is_stream_manifest(tmp_path / "empty.json")


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("{not json", r"line 2 of .* is not valid JSON"),
        ({"audio_filepath": "/a.wav", "duration": 5.0}, r"line 2 of .* has no 'events'"),
        ({"duration": 5.0, "events": []}, r"line 2 of .* has no 'audio_filepath'"),
        ({**GOOD, "duration": -1}, r"line 2 of .* \"duration\" of -1"),
        ({**GOOD, "events": [{"label": "go", "start_s": 4.0}]}, r"line 2 of .* without \"label\""),
        ({**GOOD, "events": [{"label": "go", "start_s": 4.0, "end_s": 4.0}]}, r"line 2 of .* not after"),
        ({**GOOD, "events": [{"label": "go", "start_s": 59.8, "end_s": 60.02}]}, r"line 2 .* past the end"),
        (
            {
                **GOOD,
                "events": [
                    {"label": "go", "start_s": 1.0, "end_s": 2.0},
                    {"label": "go", "start_s": 1.5, "end_s": 2.5},
                ],
            },
            r"line 2 of .* overlapping events: 'go' 1.0-2.0 s and 'go' 1.5-2.5 s",
        ),
    ],
)
def test_a_bad_line_is_a_one_line_error_with_its_number(tmp_path: Path, line: object, match: str) -> None:
    path = write_lines(tmp_path / "s.json", GOOD, line)
    one_line_error(path, match)


def test_an_event_just_past_the_end_within_rounding_is_accepted(tmp_path: Path) -> None:
    line = {**GOOD, "events": [{"label": "go", "start_s": 59.5, "end_s": 60.009}]}
    assert read_stream_manifest(write_lines(tmp_path / "s.json", line))[0].events[0].end_s == 60.009


def test_unknown_labels_are_an_error_listing_the_known_ones(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "s.json", {**GOOD, "events": [{"label": "jump", "start_s": 1.0, "end_s": 2.0}]}
    )
    message = one_line_error(path, r"line 1 of .* 'jump'", labels=["go", "stop"])
    assert "(go, stop)" in message
    assert read_stream_manifest(path)[0].events[0].label == "jump"  # without labels, any label goes


def test_an_empty_manifest_or_a_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.json").write_text("\n\n")
    one_line_error(tmp_path / "empty.json", "lists no recordings")
    with pytest.raises(DataError, match="is a directory"):
        read_stream_manifest(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        read_stream_manifest(tmp_path / "nope.json")


def test_read_stream_audio(tmp_path: Path) -> None:
    audio = (np.arange(SAMPLE_RATE * 2) % 200 - 100).astype(np.int16)
    sf.write(tmp_path / "ok.wav", audio, SAMPLE_RATE, subtype="PCM_16")
    out = read_stream_audio(tmp_path / "ok.wav")
    assert out.dtype == np.int16 and np.array_equal(out, audio)


@pytest.mark.parametrize(
    ("shape", "rate", "match"),
    [((16000, 2), SAMPLE_RATE, "2 channels, expected mono"), (8000, 8000, "8000 Hz")],
)
def test_stereo_or_8khz_audio_is_a_one_line_error_naming_the_file(
    tmp_path: Path, shape: int | tuple[int, int], rate: int, match: str
) -> None:
    path = tmp_path / "bad.wav"
    sf.write(path, np.zeros(shape, dtype=np.int16), rate, subtype="PCM_16")
    with pytest.raises(DataError, match=match) as info:
        read_stream_audio(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
