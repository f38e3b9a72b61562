"""kws evaluate on a checkpoint trained with configs/smoke.yaml on a tiny synthetic Speech-Commands tree."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from kws import __version__, cli
from kws.errors import CheckpointError, DataError, KWSError
from kws.evaluate.scoring import evaluate, out_dirs
from kws.files import file_sha256
from kws.manifest import Entry, read_manifest, write_manifest
from kws.train.device import pick_device
from tests.helpers import REPO
from tests.helpers.report_checks import assert_consistent_report, assert_png, read_predictions
from tests.helpers.speech_commands import build_speech_commands_tree


@dataclass
class TrainedRun:
    root: Path
    checkpoint: Path
    manifests: dict[str, Path]
    best_val_accuracy: float


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """Prepare (class set `sub`: 5 words + unknown + silence) and train the smoke model for 2 epochs."""
    from kws.config import apply_options, load_config
    from kws.prepare.splits import ManifestOptions, build_manifests
    from kws.train.loop import train

    root = tmp_path_factory.mktemp("evaluate")
    tree = build_speech_commands_tree(root / "sc", clip_s=(0.6, 1.0))
    prepared = build_manifests(tree.root, ManifestOptions(classes="sub", workers=1))
    cfg = load_config(REPO / "configs" / "smoke.yaml", ["trainer.epochs=2", "trainer.device=cpu"])
    cfg = apply_options(
        cfg, train_manifest=prepared.manifests["train"], val_manifests=[prepared.manifests["validation"]]
    )
    result = train(cfg, root / "run")
    assert result.best_val_accuracy is not None
    return TrainedRun(root, result.checkpoints["best"], prepared.manifests, result.best_val_accuracy)


def test_cli_evaluates_two_manifests(run: TrainedRun) -> None:
    val, test = run.manifests["validation"], run.manifests["test"]
    proc = subprocess.run(
        [sys.executable, "-m", "kws", "evaluate", str(run.checkpoint), str(val), str(test), "--top-k", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "95% CI" in out and "most frequent confusions" in out and "worst 5 classes" in out
    assert "low-confidence errors" in out
    summary = out[out.index("all manifests") :]
    assert "validation_manifest" in summary and "test_manifest" in summary  # one row each

    for manifest in (val, test):
        out_dir = run.checkpoint.parent / "eval" / manifest.stem
        d = json.loads((out_dir / "report.json").read_text())
        assert_consistent_report(d)
        assert d["num_samples"] == len(read_manifest(manifest))
        assert d["top_k"] == 3
        assert d["manifest"] == str(manifest.resolve()) and d["manifest_sha256"] == file_sha256(manifest)
        assert d["checkpoint"] == str(run.checkpoint.resolve()) and d["kws_version"] == __version__
        rows = read_predictions(out_dir / "predictions.csv")
        assert len(rows) == d["num_samples"]
        assert [r["audio_filepath"] for r in rows] == [e.audio_filepath for e in read_manifest(manifest)]
        assert_png(out_dir / "confusion.png")
        assert_png(out_dir / "per_class.png")
        assert f"{100 * d['accuracy']:.2f}%" in out
    # Evaluation rebuilds exactly the model the trainer validated: same accuracy on the same manifest.
    d = json.loads((run.checkpoint.parent / "eval" / val.stem / "report.json").read_text())
    assert d["accuracy"] == pytest.approx(run.best_val_accuracy, abs=1e-9)


def test_report_feeds_listen_errors(run: TrainedRun, tmp_path: Path) -> None:
    from kws.evaluate.listen import listen_errors

    [outcome] = evaluate(run.checkpoint, [run.manifests["test"]], out=tmp_path / "ev", batch_size=5)
    assert outcome.out_dir == tmp_path / "ev" and (tmp_path / "ev" / "report.json").is_file()
    result = listen_errors(tmp_path / "ev", top=0)
    assert result.page is not None and result.page.n_cards == len(outcome.report.misclassified)
    assert not result.page.missing


def test_batch_size_does_not_change_predictions(run: TrainedRun, tmp_path: Path) -> None:
    manifest = run.manifests["validation"]
    [a] = evaluate(run.checkpoint, [manifest], out=tmp_path / "a", batch_size=1)
    [b] = evaluate(run.checkpoint, [manifest], out=tmp_path / "b", batch_size=64)
    assert [p.predicted for p in a.report.predictions] == [p.predicted for p in b.report.predictions]
    for p, q in zip(a.report.predictions, b.report.predictions, strict=True):
        assert p.confidence == pytest.approx(q.confidence, abs=1e-5)


def raw_word_manifest(run: TrainedRun, path: Path) -> list[Entry]:
    """Test clips under their own word labels: `bed` and `cat` are not classes of the `sub` model."""
    test_dir = run.manifests["test"].parent
    entries = [
        Entry(str(p), 0.8, p.parent.name)
        for word in ("yes", "bed", "cat")
        for p in sorted((test_dir / word).glob("*.wav"))[:3]
    ]
    write_manifest(path, entries)
    return entries


def test_unknown_labels_are_listed(run: TrainedRun, tmp_path: Path) -> None:
    manifest = tmp_path / "words.json"
    raw_word_manifest(run, manifest)
    with pytest.raises(DataError, match=r"2 labels the model does not know: bed, cat.*--classes-map unknown"):
        evaluate(run.checkpoint, [manifest], out=tmp_path / "ev")
    with pytest.raises(KWSError, match="names no class"):
        evaluate(run.checkpoint, [manifest], out=tmp_path / "ev", classes_map="zebra")


def test_classes_map_scores_them_as_unknown(run: TrainedRun, tmp_path: Path) -> None:
    manifest = tmp_path / "words.json"
    entries = raw_word_manifest(run, manifest)
    [outcome] = evaluate(run.checkpoint, [manifest], out=tmp_path / "ev", classes_map="unknown")
    r = outcome.report
    assert r.per_class["unknown"].support == sum(e.label in ("bed", "cat") for e in entries) == 6
    assert r.per_class["yes"].support == 3
    for m in r.misclassified:
        assert (m.manifest_label is not None) == (m.label == "unknown")
        assert m.manifest_label in (None, "bed", "cat")
    assert_consistent_report(json.loads((tmp_path / "ev" / "report.json").read_text()))


def test_out_dirs() -> None:
    ckpt = Path("runs/x/best.pt")
    a, b = Path("data/v1/test_manifest.json"), Path("data/v2/test_manifest.json")
    assert out_dirs(ckpt, [a], None) == [Path("runs/x/eval/test_manifest")]
    assert out_dirs(ckpt, [a], Path("o")) == [Path("o")]
    assert out_dirs(ckpt, [a, Path("data/v1/validation_manifest.json")], Path("o")) == [
        Path("o/test_manifest"),
        Path("o/validation_manifest"),
    ]
    assert out_dirs(ckpt, [a, b], None) == [
        Path("runs/x/eval/v1_test_manifest"),
        Path("runs/x/eval/v2_test_manifest"),
    ]
    with pytest.raises(KWSError, match="listed twice"):
        out_dirs(ckpt, [a, a], None)


def test_bad_inputs_are_one_line_errors(
    run: TrainedRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        evaluate(garbage, [run.manifests["test"]])
    missing = tmp_path / "missing.json"
    monkeypatch.setattr(sys, "argv", ["kws", "evaluate", str(run.checkpoint), str(missing)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("error: manifest") and "does not exist" in err and len(err.strip().splitlines()) == 1
    )
    if not torch.cuda.is_available():
        with pytest.raises(KWSError, match="no CUDA GPU"):
            pick_device("cuda")
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_matches_cpu(run: TrainedRun, tmp_path: Path) -> None:
    manifest = run.manifests["validation"]
    [cpu] = evaluate(run.checkpoint, [manifest], out=tmp_path / "cpu", device="cpu")
    [gpu] = evaluate(run.checkpoint, [manifest], out=tmp_path / "gpu", device="cuda")
    assert [p.predicted for p in cpu.report.predictions] == [p.predicted for p in gpu.report.predictions]
    assert cpu.report.accuracy == gpu.report.accuracy
