"""The curation loop, end to end, as a user runs it (issue 14): evaluate a model on its own training data,
listen to the confident errors and mark the mislabeled clips, prepare the dataset again without them,
fine-tune from the first model with `--init`, and evaluate the new model. Real files, the real CLI."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from kws.audio import write_wav
from kws.checkpoint import load_checkpoint
from kws.evaluate import listen
from kws.manifest import read_manifest
from tests.helpers import CONFIGS, SMOKE
from tests.helpers.listening import Recorder, run_cli, scripted
from tests.helpers.speech_commands import build_speech_commands_tree
from tests.helpers.tiny_dataset import synth_clip

# Each word gets a tone of its own (Hz; far apart, so a tiny model learns them in a few steps), so a clip
# copied into another word's folder is a mislabeled clip the model contradicts.
SOUNDS = {"yes": 2400.0, "no": 400.0, "up": 1000.0, "down": 5000.0}
# (word whose clip is copied, folder it is copied into): one wrong label each way and one more
PLANTS = (("yes", "no"), ("no", "yes"), ("up", "down"))


def build_tree_with_wrong_labels(root: Path) -> tuple[Path, list[str]]:
    """A Speech Commands tree whose clips sound like their word, plus a few training clips copied into
    another word's folder; returns the tree and the absolute paths of those copies."""
    tree = build_speech_commands_tree(root, words=tuple(SOUNDS), n_speakers=10, clips_per_word=4)
    rng = np.random.default_rng(0)
    for clip in tree.clips:
        word = clip.split("/")[0]
        write_wav(tree.root / clip, synth_clip(rng, SOUNDS[word], SOUNDS[word]))
    planted = []
    for speaker, (word, folder) in zip(tree.speakers["train"], PLANTS, strict=False):
        copy = tree.root / folder / f"{speaker}_nohash_9.wav"  # a train speaker: the copy is a train clip
        shutil.copyfile(tree.root / word / f"{speaker}_nohash_0.wav", copy)
        planted.append(str(copy))
    return tree.root, planted


def test_evaluate_mark_exclude_finetune_evaluate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    kws = partial(run_cli, monkeypatch)  # in-process, so the sound card and the keyboard can be stand-ins
    source, planted = build_tree_with_wrong_labels(tmp_path / "sc")
    train_manifest, test_manifest = source / "train_manifest.json", source / "test_manifest.json"
    prepare = ["prepare", "--source", str(source), "--data-root", str(tmp_path / "data"), "--workers", "1"]
    assert kws(*prepare) == 0
    train_before = {e.audio_filepath for e in read_manifest(train_manifest)}
    assert set(planted) <= train_before

    # 1. A base model, briefly (2 epochs of 7 steps), on the data as it came.
    base = tmp_path / "runs" / "base"
    val_manifest = source / "validation_manifest.json"
    data = ["--train-manifest", str(train_manifest), "--val-manifest", str(val_manifest)]
    cpu = ["--batch-size", "16", "--device", "cpu"]
    base_args = ["--config", str(SMOKE), *data, "--run-dir", str(base), "--epochs", "2", *cpu]
    assert kws("train", *base_args) == 0

    # 2. Evaluated on its training manifest, where a label the model contradicts is a confident error.
    assert kws("evaluate", str(base / "best.pt"), str(train_manifest), "--device", "cpu") == 0
    eval_dir = base / "eval" / "train_manifest"
    errors = json.loads((eval_dir / "report.json").read_text())["misclassified"]
    confident_first = sorted(errors, key=lambda m: -m["confidence"])  # the order of --sort -confidence
    assert {m["audio_filepath"] for m in confident_first[: len(planted)]} == set(planted)

    # 3. Listen, confident errors first: mark each planted clip as it plays, then quit.
    recorder = Recorder()
    monkeypatch.setattr(listen, "SoundDeviceOutput", lambda: recorder)
    monkeypatch.setattr(listen, "terminal_keys", lambda: scripted(["m"] * len(planted) + ["q"]))
    capsys.readouterr()
    assert kws("listen-errors", str(eval_dir), "--play", "--sort", "-confidence") == 0
    out = capsys.readouterr().out
    suspects = eval_dir / listen.SUSPECT_FILE
    assert f"heard {len(planted)} clips; marked {len(planted)} as mislabeled" in out
    assert f"--exclude {suspects}" in out and len(recorder.played) == len(planted)
    assert sorted(suspects.read_text().splitlines()) == sorted(planted)

    # 4. The dataset again, without them.
    assert kws(*prepare, "--exclude", str(suspects)) == 0
    assert f"Excluded {len(planted)} clips listed in {suspects}." in capsys.readouterr().out
    assert {e.audio_filepath for e in read_manifest(train_manifest)} == train_before - set(planted)
    for split in ("validation", "test"):
        assert not {e.audio_filepath for e in read_manifest(source / f"{split}_manifest.json")} & set(planted)

    # 5. Fine-tune from the base model on the cleaned manifests (one epoch), and evaluate the new model.
    tuned = tmp_path / "runs" / "curated"
    init_args = ["--config", str(CONFIGS / "finetune.yaml"), "--init", str(base / "best.pt")]
    assert kws("train", *init_args, *data, "--run-dir", str(tuned), "--max-steps", "6", *cpu) == 0
    init = load_checkpoint(tuned / "best.pt")["init"]
    assert init["checkpoint"] == str((base / "best.pt").resolve())
    assert init["labels_kept"] == sorted(SOUNDS) and init["labels_new"] == []
    assert kws("evaluate", str(tuned / "best.pt"), str(test_manifest), "--device", "cpu") == 0
    final = json.loads((tuned / "eval" / "test_manifest" / "report.json").read_text())
    assert final["num_samples"] == len(read_manifest(test_manifest))
    assert final["accuracy"] >= 0.75  # 4 tones far apart: fine-tuning kept what the base model learned
