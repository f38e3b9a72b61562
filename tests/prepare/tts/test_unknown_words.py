"""`kws prepare --dataset tts --classes sub`: keywords + unknown + silence; unknown words chosen by sound."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf

from kws.errors import KWSError
from kws.manifest import read_manifest
from kws.prepare.splits import speaker_of
from kws.prepare.tts.clip import active_frames
from kws.prepare.tts.keywords import V1_WORDS, WORD_RE, parse_unknown_words, parse_words
from kws.prepare.tts.phonemes import confusables, homophone_of, pronunciations
from kws.prepare.tts.unknown_words import choose_unknown_words, n_unknown_clips
from kws.prepare.tts.vocabulary import CANDIDATE_WORDS, GENERAL_WORDS
from tests.prepare.tts.test_source import needs_espeak, run_kws, wavs

KEYWORDS = ["yes", "no", "stop"]
N_SPEAKERS = 8
SPLITS = ("train", "validation", "test")


def prepare_sub(root: Path, *extra: str) -> str:
    args = ["prepare", "--dataset", "tts", "--words", ",".join(KEYWORDS), "--speakers", str(N_SPEAKERS)]
    proc = run_kws(*args, "--style", "plain", "--data-root", str(root), *extra)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def manifests(dataset: Path) -> dict[str, list[tuple[str, str]]]:
    return {
        split: [(e.label, e.audio_filepath) for e in read_manifest(dataset / f"{split}_manifest.json")]
        for split in SPLITS
    }


@pytest.fixture(scope="module")
def sub_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("sub")
    stdout = prepare_sub(root, "--classes", "sub", "--unknown-words", "window,pumpkin", "--workers", "2")
    return root / "tts_keywords", stdout


@needs_espeak
def test_sub_gives_keywords_unknown_and_silence_in_every_split(sub_dataset: tuple[Path, str]) -> None:
    dataset, stdout = sub_dataset
    assert "Manifests in" in stdout and "│       5 │" in stdout  # the table: 5 classes in each split
    for split, entries in manifests(dataset).items():
        counts = Counter(label for label, _ in entries)
        assert set(counts) == {*KEYWORDS, "unknown", "silence"}, split
        n_keyword_clips = sum(counts[k] for k in KEYWORDS)
        assert counts["unknown"] == counts["silence"] == math.ceil(0.1 * n_keyword_clips) > 0
        for label, path in entries:  # unknown clips are other words of the split's own speakers
            if label == "unknown":
                assert Path(path).parent.name not in KEYWORDS and Path(path).parent.parent == dataset
            if label in KEYWORDS:
                assert Path(path).parent.name == label


@needs_espeak
def test_every_speaker_says_its_unknown_clips_in_its_own_split(sub_dataset: tuple[Path, str]) -> None:
    dataset, _ = sub_dataset
    doc = json.loads((dataset / "unknown_words.json").read_text())
    speakers = json.loads((dataset / "speakers.json").read_text())["speakers"]
    clips = [p for p in dataset.glob("*/*_nohash_*.wav") if p.parent.name not in KEYWORDS]
    assert sum(doc["n_clips"].values()) == len(clips) >= N_SPEAKERS * math.ceil(0.1 * len(KEYWORDS))
    assert {p.parent.name for p in clips} <= set(doc["general"]) | set(doc["extra"]) | {"phrases"} | {
        w for words in doc["confusables"].values() for w in words
    }
    assert doc["n_clips"]["phrases"] == len(list((dataset / "phrases").glob("*.wav"))) > 0
    assert doc["extra"] == ["window", "pumpkin"] and doc["keywords"] == KEYWORDS
    for split, entries in manifests(dataset).items():  # each speaker's unknown clips stay in its split
        for label, path in entries:
            if label == "unknown":
                assert speakers[speaker_of(path)]["split"] == split


@needs_espeak
def test_phrase_clips_are_a_second_cut_from_running_speech(sub_dataset: tuple[Path, str]) -> None:
    dataset, _ = sub_dataset
    phrases = sorted((dataset / "phrases").glob("*.wav"))
    assert phrases
    for path in phrases:  # a hard cut from 4-8 words: speech nearly all through, not one word in silence
        audio, rate = sf.read(path, dtype="float32")
        assert rate == 16000 and audio.shape == (16000,)
        on, _ = active_frames(audio, rate, 0.01)
        assert on.mean() > 0.6, path


@needs_espeak
def test_phrases_are_half_the_unknown_clips_and_say_unknown_words_only() -> None:
    unknown = choose_unknown_words(["go", "off", "right"])
    picks = [unknown.pick(0, f"{s:08x}", m) for s in range(300) for m in range(2)]
    phrases = [c for c in picks if c.phrase]
    assert 0.4 < len(phrases) / len(picks) < 0.6
    for clip in phrases:
        words = clip.text.split()
        assert 4 <= len(words) <= 8 and set(words) <= set(unknown.words) and clip.folder == "phrases"
    assert {c.folder for c in picks if not c.phrase} <= set(unknown.words)
    assert picks == [unknown.pick(0, f"{s:08x}", m) for s in range(300) for m in range(2)]  # deterministic
    # the confusables come up inside phrases too: "bright" holds "right", "goal" starts like "go"
    assert set(unknown.confusable_pool) & {w for c in phrases for w in c.text.split()}


@needs_espeak
@pytest.mark.parametrize("option", ["--words", "--unknown-words"])
def test_a_word_named_like_the_phrase_folder_is_refused(tmp_path: Path, option: str) -> None:
    words = ["yes", "phrases"] if option == "--words" else ["yes"]
    args = ["--unknown-words", "phrases"] if option == "--unknown-words" else []
    proc = run_kws(
        "prepare", "--dataset", "tts", "--words", ",".join(words), "--classes", "sub", *args,
        "--data-root", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: {option} 'phrases' would share the folder 'phrases' of the unknown class's phrase clips "
        "under --classes sub; choose another word"
    ]
    assert not (tmp_path / "tts_keywords").exists()


@needs_espeak
def test_unknown_words_are_never_a_keyword_or_its_homophone() -> None:
    unknown = choose_unknown_words(V1_WORDS)
    words = set(unknown.words)
    assert not words & set(V1_WORDS) and not words & {"unknown", "silence"}
    assert all(WORD_RE.fullmatch(w) for w in words)
    assert not words & {"know", "write", "to", "too", "for", "won", "ate", "fore"}  # homophones of v1 words
    prons = pronunciations([*words, *V1_WORDS])
    assert all(homophone_of(w, V1_WORDS, prons) is None for w in words)
    assert len(unknown.general) > 150 and set(unknown.general) <= set(GENERAL_WORDS)
    assert {"water", "door"} <= set(GENERAL_WORDS)
    assert not {"water", "door", "dore"} & set(choose_unknown_words(["water", "door"]).words)


@needs_espeak
def test_confusables_share_the_keywords_sounds() -> None:
    keywords = ["go", "off", "four", "two", "right"]
    prons = pronunciations([*keywords, *CANDIDATE_WORDS])
    chosen = confusables(keywords, CANDIDATE_WORDS, prons)
    assert "goal" in chosen["go"] and all(w.startswith("go") or w == "ghost" for w in chosen["go"])
    assert {"office", "offer"} & set(chosen["off"])
    assert {"force", "fork", "fourth", "forward"} & set(chosen["four"])
    assert all(0 < len(words) <= 4 for words in chosen.values())
    never = {"for", "fore", "to", "too", "write", *keywords}
    assert not never & {w for words in chosen.values() for w in words}


@needs_espeak
@pytest.mark.parametrize(
    ("extra", "match"),
    [("window,yes", r"'yes' is also a keyword"), ("know", r"'know' sounds the same as the keyword 'no'")],
)
def test_an_unknown_word_that_is_or_sounds_like_a_keyword_is_an_error(
    tmp_path: Path, extra: str, match: str
) -> None:
    with pytest.raises(KWSError, match=match):
        choose_unknown_words(KEYWORDS, parse_unknown_words(extra))
    args = [
        "prepare",
        "--dataset",
        "tts",
        "--words",
        "yes,no,stop",
        "--classes",
        "sub",
        "--unknown-words",
        extra,
    ]
    proc = run_kws(*args, "--data-root", str(tmp_path))
    assert proc.returncode == 1 and proc.stderr.startswith("error: --unknown-words ")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("*.wav"))


def test_unknown_words_need_classes_sub_and_valid_words(tmp_path: Path) -> None:
    proc = run_kws("prepare", "--dataset", "tts", "--unknown-words", "window", "--data-root", str(tmp_path))
    assert proc.returncode == 1 and "--classes sub" in proc.stderr
    for bad in ["", "window,,door", "silence", "caf\u00e9"]:
        with pytest.raises(KWSError, match="--unknown-words"):
            parse_unknown_words(bad)
    assert parse_words(None, "sub") == ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
    assert len(parse_words(None)) == 30


def test_unknown_clip_counts_cover_what_the_splits_draw() -> None:
    assert n_unknown_clips(3, 1) == 1 and n_unknown_clips(10, 1) == 1 and n_unknown_clips(30, 2) == 6
    for n_speakers, n_keywords, clips in itertools.product(range(1, 30), range(1, 40), range(1, 6)):
        n_keyword_clips = n_speakers * n_keywords * clips  # a split's; kws.prepare.splits draws 10 % unknown
        assert n_speakers * n_unknown_clips(n_keywords, clips) >= math.ceil(0.1 * n_keyword_clips)


@needs_espeak
def test_two_runs_are_byte_identical_and_rebalance_evens_the_classes(
    sub_dataset: tuple[Path, str], tmp_path: Path
) -> None:
    dataset, _ = sub_dataset
    stdout = prepare_sub(tmp_path, "--classes", "sub", "--unknown-words", "window,pumpkin", "--workers", "1")
    again = tmp_path / "tts_keywords"
    assert wavs(again) == wavs(dataset)
    assert (again / "unknown_words.json").read_bytes() == (dataset / "unknown_words.json").read_bytes()
    assert "synthesized" in stdout

    prepare_sub(tmp_path, "--classes", "sub", "--unknown-words", "window,pumpkin", "--rebalance")
    counts = Counter(label for label, _ in manifests(again)["train"])
    assert len(set(counts.values())) == 1 and set(counts) == {*KEYWORDS, "unknown", "silence"}


@needs_espeak
def test_classes_all_after_sub_removes_the_unknown_clips(tmp_path: Path) -> None:
    prepare_sub(tmp_path, "--classes", "sub")
    dataset = tmp_path / "tts_keywords"
    mtimes = {p: p.stat().st_mtime_ns for p in dataset.rglob("*")}
    assert "up to date" in prepare_sub(tmp_path, "--classes", "sub")  # the same again: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in dataset.rglob("*")} == mtimes
    assert len([p for p in dataset.iterdir() if p.is_dir() and not p.name.startswith("_")]) > len(KEYWORDS)
    prepare_sub(tmp_path)
    assert sorted(p.name for p in dataset.iterdir() if p.is_dir() and not p.name.startswith("_")) == sorted(
        KEYWORDS
    )
    assert not (dataset / "unknown_words.json").exists() and not (dataset / "_silence_").exists()
    assert {label for entries in manifests(dataset).values() for label, _ in entries} == set(KEYWORDS)
