"""kws.prepare.splits: split rule, class sets, silence and unknown, rebalancing, idempotence, bad trees."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from rich.console import Console

from kws.console import prepare_table
from kws.errors import ConfigError, DataError
from kws.manifest import Entry, read_manifest
from kws.prepare.splits import (
    SILENCE_DIR,
    SILENCE_REGIONS,
    SPLITS,
    SUB_WORDS,
    ManifestOptions,
    PrepareResult,
    build_manifests,
)
from tests.helpers.speech_commands import (
    SpeechCommandsTree,
    build_speech_commands_tree,
    copy_tree,
    tone,
    write_wav,
)


@pytest.fixture
def tree(template: SpeechCommandsTree, tmp_path: Path) -> SpeechCommandsTree:
    return copy_tree(template, tmp_path / "sc")


def _read(result: PrepareResult) -> dict[str, list[Entry]]:
    return {
        split: read_manifest(path) if path.stat().st_size else [] for split, path in result.manifests.items()
    }


def _rel(entry: Entry, root: Path) -> str:
    return str(Path(entry.audio_filepath).relative_to(root.resolve()))


def test_every_clip_lands_in_exactly_one_split_by_speaker(tree: SpeechCommandsTree) -> None:
    result = build_manifests(tree.root, ManifestOptions())
    manifests = _read(result)
    seen = Counter(_rel(e, tree.root) for entries in manifests.values() for e in entries)
    assert sorted(seen) == sorted(tree.clips) and set(seen.values()) == {1}
    speakers_of: dict[str, set[str]] = {}
    for split, entries in manifests.items():
        for e in entries:
            assert tree.split_of(_rel(e, tree.root)) == split  # the lists, applied by speaker
            speakers_of.setdefault(Path(e.audio_filepath).name.split("_nohash_")[0], set()).add(split)
    assert all(len(splits) == 1 for splits in speakers_of.values())
    assert tree.unlisted  # clips the lists omit still follow their speaker
    for clip in tree.unlisted:
        assert clip in {_rel(e, tree.root) for e in manifests[tree.split_of(clip)]}


def test_manifest_lines_have_absolute_paths_header_durations_and_labels(tree: SpeechCommandsTree) -> None:
    result = build_manifests(tree.root, ManifestOptions())
    line = json.loads(result.manifests["train"].read_text().splitlines()[0])
    assert set(line) == {"audio_filepath", "duration", "command"}
    path = Path(line["audio_filepath"])
    assert path.is_absolute() and line["command"] == path.parent.name
    assert line["duration"] == sf.info(str(path)).frames / 16_000


def test_all_classes_are_the_word_folders(tree: SpeechCommandsTree) -> None:
    result = build_manifests(tree.root, ManifestOptions(classes="all"))
    for split, entries in _read(result).items():
        assert {e.label for e in entries} == set(tree.words), split
    assert [s.n_classes for s in result.stats] == [len(tree.words)] * 3
    assert not (tree.root / SILENCE_DIR).exists()


def test_sub_has_ten_words_unknown_and_silence_in_the_right_numbers(tree: SpeechCommandsTree) -> None:
    everything = _read(build_manifests(tree.root, ManifestOptions(classes="all")))
    result = build_manifests(tree.root, ManifestOptions(classes="sub", seed=3))
    for split, entries in _read(result).items():
        counts = Counter(e.label for e in entries)
        n_words = sum(n for label, n in counts.items() if label in SUB_WORDS)
        assert set(counts) == {w for w in tree.words if w in SUB_WORDS} | {"unknown", "silence"}
        assert counts["silence"] == counts["unknown"] == math.ceil(0.1 * n_words) > 0
        others = {e.audio_filepath for e in everything[split] if e.label not in SUB_WORDS}
        unknown = [e.audio_filepath for e in entries if e.label == "unknown"]
        assert len(set(unknown)) == len(unknown) and set(unknown) <= others  # drawn from this split's words
        for e in (e for e in entries if e.label == "silence"):
            info = sf.info(e.audio_filepath)
            assert (info.frames, info.samplerate, e.duration) == (16_000, 16_000, 1.0)
            assert Path(e.audio_filepath).parent == tree.root.resolve() / SILENCE_DIR / split


def test_silence_comes_from_disjoint_regions_of_each_recording(tree: SpeechCommandsTree) -> None:
    result = build_manifests(tree.root, ManifestOptions(classes="sub"))
    for split, entries in _read(result).items():
        lo, hi = SILENCE_REGIONS[split]
        for e in (e for e in entries if e.label == "silence"):
            stem, start, _ = Path(e.audio_filepath).stem.rsplit("_", 2)
            noise = sf.read(str(tree.root / "_background_noise_" / f"{stem}.wav"), dtype="int16")[0]
            start_i = int(start)
            assert int(len(noise) * lo) <= start_i and start_i + 16_000 <= int(len(noise) * hi), split
            window = noise[start_i : start_i + 16_000].astype(np.float64)
            clip = sf.read(e.audio_filepath, dtype="int16")[0].astype(np.float64)
            gain = clip @ window / (window @ window)  # the clip is the window scaled by a gain in [0, 1]
            assert 0.0 <= gain <= 1.0 and np.abs(clip - gain * window).max() <= 1.0


def test_rebalance_equalizes_train_only_and_is_deterministic_per_seed(tree: SpeechCommandsTree) -> None:
    for path in (tree.root / "cat").glob("*_nohash_1.wav"):
        path.unlink()  # "cat" is now half the size of the other words
    for classes in ("all", "sub"):
        plain = _read(build_manifests(tree.root, ManifestOptions(classes=classes)))
        assert len(set(Counter(e.label for e in plain["train"]).values())) > 1
        texts = []
        for seed in (0, 0, 1):
            result = build_manifests(tree.root, ManifestOptions(classes=classes, rebalance=True, seed=seed))
            manifests = _read(result)
            counts = Counter(e.label for e in manifests["train"])
            assert len(set(counts.values())) == 1 and set(counts) == {e.label for e in plain["train"]}
            assert result.stats[0].smallest[1] == result.stats[0].largest[1] == max(counts.values())
            if classes == "all":  # duplicates of the same clips; validation and test untouched
                assert {e.audio_filepath for e in manifests["train"]} == {
                    e.audio_filepath for e in plain["train"]
                }
                assert manifests["validation"] == plain["validation"] and manifests["test"] == plain["test"]
            texts.append(result.manifests["train"].read_text())
        assert texts[0] == texts[1] and texts[0] != texts[2]


def test_rerun_with_the_same_options_does_nothing(tree: SpeechCommandsTree) -> None:
    opts = ManifestOptions(classes="sub", rebalance=True, seed=5)
    first = build_manifests(tree.root, opts)
    mtimes = {p: p.stat().st_mtime_ns for p in first.manifests.values()}
    second = build_manifests(tree.root, opts)
    assert second.up_to_date and not first.up_to_date
    assert second.stats == first.stats
    assert {p: p.stat().st_mtime_ns for p in second.manifests.values()} == mtimes
    assert build_manifests(
        tree.root, ManifestOptions(classes="sub", rebalance=True, seed=5, workers=1)
    ).up_to_date

    clip_mtime = (tree.root / tree.clips[0]).stat().st_mtime_ns
    third = build_manifests(tree.root, ManifestOptions(classes="all"))  # other options: manifests only
    assert not third.up_to_date and (tree.root / tree.clips[0]).stat().st_mtime_ns == clip_mtime
    assert build_manifests(tree.root, ManifestOptions(classes="all", seed=9)).up_to_date  # no randomness

    write_wav(tree.root / "yes" / "newspeaker_nohash_0.wav", tone(3200, np.random.default_rng(0)))
    fourth = build_manifests(tree.root, ManifestOptions(classes="all"))  # the data changed
    assert not fourth.up_to_date and fourth.stats[0].n_clips == third.stats[0].n_clips + 1


@pytest.mark.parametrize("how", ["move", "copy"])
def test_a_moved_or_copied_tree_gets_manifests_with_its_new_paths(
    tree: SpeechCommandsTree, tmp_path: Path, how: str
) -> None:
    opts = ManifestOptions(classes="sub")
    build_manifests(tree.root, opts)
    new_root = tmp_path / "moved"
    if how == "move":
        os.rename(tree.root, new_root)
    else:  # like `cp -a`: same sizes and mtimes, so the listing fingerprint alone would not see it
        shutil.copytree(tree.root, new_root, symlinks=True)
    result = build_manifests(new_root, opts)
    assert not result.up_to_date
    paths = [Path(e.audio_filepath) for entries in _read(result).values() for e in entries]
    assert paths and all(p.is_relative_to(new_root.resolve()) and p.is_file() for p in paths)
    assert build_manifests(new_root, opts).up_to_date


def test_exclude_drops_listed_clips_everywhere(tree: SpeechCommandsTree, tmp_path: Path) -> None:
    dropped = [tree.clips[0], tree.clips[5], str((tree.root / tree.clips[-1]).resolve())]
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("# clips with bad labels\n" + "\n".join(dropped) + "\nyes/not_in_the_dataset.wav\n")
    result = build_manifests(tree.root, ManifestOptions(exclude=exclude))
    kept = {_rel(e, tree.root) for entries in _read(result).values() for e in entries}
    assert result.n_excluded == 3 and len(kept) == len(tree.clips) - 3
    assert not {tree.clips[0], tree.clips[5], tree.clips[-1]} & kept


def test_results_do_not_depend_on_the_number_of_workers(tree: SpeechCommandsTree) -> None:
    one = build_manifests(tree.root, ManifestOptions(classes="sub", workers=1))
    texts = [p.read_text() for p in one.manifests.values()]
    (tree.root / ".kws_manifests.json").unlink()
    many = build_manifests(tree.root, ManifestOptions(classes="sub", workers=4))
    assert [p.read_text() for p in many.manifests.values()] == texts


def test_summary_table_lists_every_split(tree: SpeechCommandsTree) -> None:
    console = Console(width=120, record=True)
    console.print(prepare_table(build_manifests(tree.root, ManifestOptions())))
    text = console.export_text()
    for word in [*SPLITS, "smallest class", "hours"]:
        assert word in text


def test_bad_sample_rate_is_named_with_its_path(tree: SpeechCommandsTree) -> None:
    bad = write_wav(tree.root / "no" / "deadbeef_nohash_0.wav", np.zeros(800, np.int16), rate=8000)
    with pytest.raises(DataError, match=f"{bad}.* 8000 Hz"):
        build_manifests(tree.root, ManifestOptions())
    assert not (tree.root / "train_manifest.json").exists()


def test_stereo_and_unreadable_wavs_are_named(tree: SpeechCommandsTree) -> None:
    stereo = write_wav(tree.root / "up" / "cafe_nohash_0.wav", np.zeros((800, 2), np.int16))
    with pytest.raises(DataError, match=f"{stereo} has 2 channels"):
        build_manifests(tree.root, ManifestOptions())
    stereo.write_bytes(b"not a wav")
    with pytest.raises(DataError, match=f"cannot read wav file {stereo}"):
        build_manifests(tree.root, ManifestOptions())


def test_an_excluded_bad_clip_is_not_read(tree: SpeechCommandsTree, tmp_path: Path) -> None:
    write_wav(tree.root / "no" / "deadbeef_nohash_0.wav", np.zeros(800, np.int16), rate=8000)
    (tmp_path / "ex.txt").write_text("no/deadbeef_nohash_0.wav\n")
    assert build_manifests(tree.root, ManifestOptions(exclude=tmp_path / "ex.txt")).n_excluded == 1


def test_empty_label_folder_is_an_error(tree: SpeechCommandsTree) -> None:
    (tree.root / "wow").mkdir()
    with pytest.raises(DataError, match=f"label folder {tree.root.resolve() / 'wow'} has no wav files"):
        build_manifests(tree.root, ManifestOptions())


@pytest.mark.parametrize("name", ["validation_list.txt", "testing_list.txt"])
def test_missing_lists_are_an_error(tree: SpeechCommandsTree, name: str) -> None:
    (tree.root / name).unlink()
    with pytest.raises(DataError, match=f"{name} is missing"):
        build_manifests(tree.root, ManifestOptions())


def test_sub_needs_background_noise_long_enough(tmp_path: Path) -> None:
    tree = build_speech_commands_tree(tmp_path / "short", n_noise=1, noise_s=3.0)
    with pytest.raises(DataError, match="no recording long enough for validation silence"):
        build_manifests(tree.root, ManifestOptions(classes="sub"))
    for path in (tree.root / "_background_noise_").iterdir():
        path.unlink()
    with pytest.raises(DataError, match="_background_noise_ has no wav files"):
        build_manifests(tree.root, ManifestOptions(classes="sub"))


def test_bad_options_are_config_errors(tree: SpeechCommandsTree) -> None:
    with pytest.raises(ConfigError, match="unknown class set 'some'"):
        build_manifests(tree.root, ManifestOptions(classes="some"))
    with pytest.raises(ConfigError, match="--workers must be at least 1"):
        build_manifests(tree.root, ManifestOptions(workers=0))
    with pytest.raises(DataError, match="does not exist"):
        build_manifests(tree.root / "nope", ManifestOptions())
    assert os.path.isdir(tree.root)


@pytest.mark.parametrize("workers", [0, -1])
def test_bad_workers_are_refused_before_any_download(tmp_path: Path, workers: int) -> None:
    from kws.prepare.speech_commands import prepare_speech_commands

    with pytest.raises(ConfigError, match="--workers must be at least 1"):  # not "cannot reach"
        prepare_speech_commands(
            tmp_path / "data",
            2,
            ManifestOptions(workers=workers),
            url="http://127.0.0.1:1/x.tar.gz",
            archive=None,
            sha256=None,
            verify=True,
            source=None,
        )
    assert not (tmp_path / "data").exists()
