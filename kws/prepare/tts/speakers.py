"""Speakers of the TTS source on disk: their split (the Speech Commands hash rule) and `speakers.json`.

`DATA_ROOT/NAME/speakers.json` describes every synthetic speaker, so that an experiment can choose its own
held-out speakers, e.g. whole voice families (accent + variant family) never heard in training:

    {"format": 1, "seed": 0, "style": "rich", "espeak_ng": "1.51",
     "speakers": {"3f2a9c01": {"index": 0, "engine": "espeak-ng", "accent": "en-gb", "variant": "klatt3",
                               "rate_wpm": 171, "pitch": 44, "pitch_range_pct": 120, "word_gap": 2,
                               "amplitude": 95, "variant_family": "klatt", "split": "train", "n_clips": 30},
                  "9b01c2d4": {"index": 1, "engine": "flite", "voice": "awb", "tempo": 1.08, "size": 0.95,
                               "split": "train", "n_clips": 30}, ...}}

`split` is the manifest the speaker's clips are in: train, validation or test. With `--engines`, the header
also has "engines": each engine's version (Piper: the voice file's hash).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kws.errors import KWSError
from kws.files import write_json_if_changed, write_text_atomic
from kws.prepare.tts.voices import Speaker, Voice, variant_family

SPEAKERS_FILE = "speakers.json"
SPEAKERS_FORMAT = 1
MAX_NUM_WAVS_PER_CLASS = 2**27 - 1  # ~134M, from the Speech Commands README's which_set()
VALIDATION_PCT = 10.0
TESTING_PCT = 10.0
MANIFEST_SPLIT = {"training": "train", "validation": "validation", "testing": "test"}


def hash_percentage(filename: str) -> float:
    """Speech Commands' stable speaker bucket in [0, 100]: sha1 of the name before `_nohash_`."""
    speaker = re.sub(r"_nohash_.*$", "", os.path.basename(filename))
    bucket = int(hashlib.sha1(speaker.encode()).hexdigest(), 16) % (MAX_NUM_WAVS_PER_CLASS + 1)
    return bucket * (100.0 / MAX_NUM_WAVS_PER_CLASS)


def which_set(filename: str, validation_pct: float = VALIDATION_PCT, testing_pct: float = TESTING_PCT) -> str:
    """'validation', 'testing' or 'training', as the Speech Commands README's which_set()."""
    p = hash_percentage(filename)
    if p < validation_pct:
        return "validation"
    if p < validation_pct + testing_pct:
        return "testing"
    return "training"


def assign_splits(speaker_ids: list[str]) -> dict[str, str]:
    """Speaker -> split by which_set. With few speakers the hash can leave validation or testing empty; then
    (3+ speakers) the training speakers with the lowest hash buckets move there, so both splits exist, as
    long as one training speaker stays. KWSError when no speaker is left for training."""
    split = {sid: which_set(sid) for sid in speaker_ids}
    if len(speaker_ids) >= 3:
        for name in ("validation", "testing"):
            training = sorted((s for s in speaker_ids if split[s] == "training"), key=hash_percentage)
            if name not in split.values() and len(training) >= 2:
                split[training[0]] = name
    if speaker_ids and "training" not in split.values():
        raise KWSError(
            f"the {len(speaker_ids)} speakers all fall into the validation or test split, leaving none for "
            "training; pass more --speakers (or another --seed)"
        )
    return split


def _write_if_changed(path: Path, text: str) -> None:
    # splits.build_manifests fingerprints files by mtime: rewriting identical lists would redo the manifests.
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        write_text_atomic(path, text)


def write_split_lists(dataset_dir: Path, clips: Sequence[tuple[Path, str]], split: dict[str, str]) -> None:
    """`validation_list.txt` and `testing_list.txt` from (clip path, speaker id) pairs and speaker splits."""
    for name, file in (("validation", "validation_list.txt"), ("testing", "testing_list.txt")):
        lines = sorted(path.relative_to(dataset_dir).as_posix() for path, sid in clips if split[sid] == name)
        _write_if_changed(dataset_dir / file, "".join(line + "\n" for line in lines))


def speakers_document(
    speakers: Sequence[Speaker], split: dict[str, str], n_clips: dict[str, int], **header: Any
) -> dict[str, Any]:
    """The content of speakers.json (see the module docstring); `header` holds seed, style, espeak_ng."""
    table = {
        s.id: {
            "index": s.index,
            "engine": s.engine,
            **_settings(s),
            "split": MANIFEST_SPLIT[split[s.id]],
            "n_clips": n_clips.get(s.id, 0),
        }
        for s in speakers
    }
    return {"format": SPEAKERS_FORMAT, **header, "speakers": table}


def _settings(speaker: Speaker) -> dict[str, Any]:
    """espeak-ng: its settings and variant family; another engine: voice, tempo, size, f0_hz."""
    fields = {
        k: v for k, v in asdict(speaker.voice).items() if v is not None and k not in ("engine", "model")
    }
    if isinstance(speaker.voice, Voice):
        fields["variant_family"] = variant_family(speaker.voice.variant)
    return fields


def write_speakers_json(
    dataset_dir: Path,
    speakers: Sequence[Speaker],
    split: dict[str, str],
    clips: Sequence[tuple[Path, str]],
    **header: Any,
) -> Path:
    """Write DATA_ROOT/NAME/speakers.json atomically, unless it already holds the same content."""
    path = dataset_dir / SPEAKERS_FILE
    doc = speakers_document(speakers, split, dict(Counter(sid for _, sid in clips)), **header)
    write_json_if_changed(path, doc)
    return path
