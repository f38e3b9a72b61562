"""kws.manifest: reading JSON-lines manifests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kws.errors import DataError
from kws.manifest import read_manifest


def test_a_line_separator_inside_a_json_string_does_not_split_the_line(tmp_path: Path) -> None:
    # json.dumps(..., ensure_ascii=False) writes U+2028 as is; only "\n" ends a manifest line.
    odd = str(tmp_path / "say\u2028yes.wav")
    lines = [
        json.dumps({"audio_filepath": odd, "duration": 1.0, "command": "yes"}, ensure_ascii=False),
        json.dumps({"audio_filepath": str(tmp_path / "b.wav"), "duration": 0.5, "label": "no"}),
    ]
    path = tmp_path / "m.json"
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    entries = read_manifest(path)
    assert [(e.audio_filepath, e.label) for e in entries] == [(odd, "yes"), (str(tmp_path / "b.wav"), "no")]


def test_a_folder_or_a_binary_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"is a directory; pass a JSON-lines manifest"):
        read_manifest(tmp_path)
    (tmp_path / "clip.wav").write_bytes(b"RIFF\xff\xfe\x00\x80" * 8)
    with pytest.raises(DataError, match=r"clip\.wav: it is not UTF-8 text"):
        read_manifest(tmp_path / "clip.wav")
