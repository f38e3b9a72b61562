"""`kws train --init`: a new run from a checkpoint's weights (shared classifier rows kept, new ones fresh),
`--freeze encoder`, what the run records, and the errors when --init and --resume are mixed up."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from kws.checkpoint import load_checkpoint
from kws.model import build_model
from kws.train.loop import train
from kws.train.warm_start import load_init_weights, read_init
from tests.helpers import REPO, kws
from tests.helpers.tiny_dataset import CLASSES, make_tiny_dataset
from tests.train.test_loop import smoke_config, train_args

FINETUNE = REPO / "configs" / "finetune.yaml"
NEW_CLASSES = {"high": CLASSES["high"], "low": CLASSES["low"], "buzz": (1200.0, 1800.0)}


@pytest.fixture(scope="module")
def base(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained briefly on the tiny dataset (labels down, high, low, up)."""
    run_dir = tmp_path_factory.mktemp("base") / "run"
    train(smoke_config(data, f"data.cache_dir={run_dir.parent / 'cache'}", max_steps=6), run_dir)
    return run_dir / "last.pt"


@pytest.fixture(scope="module")
def new_words(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A dataset sharing two labels with the base model and adding one (buzz)."""
    return make_tiny_dataset(tmp_path_factory.mktemp("new"), n_train=12, n_val=4, seed=1, classes=NEW_CLASSES)


def encoder_of(state: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state["model"].items() if k.startswith("encoder.")}


def test_same_labels_load_every_weight(base: Path) -> None:
    source = read_init(base)
    model = build_model(source.config.model, source.config.features.n_mfcc, len(source.labels))
    record = load_init_weights(model, source, source.labels, None)
    for key, value in model.state_dict().items():
        assert torch.equal(value, source.weights[key]), key
    assert record["labels_kept"] == source.labels and record["labels_new"] == []


def test_different_labels_keep_shared_rows_and_start_new_ones_fresh(base: Path) -> None:
    source = read_init(base)
    labels = sorted(NEW_CLASSES)  # buzz, high, low
    torch.manual_seed(0)
    fresh = build_model(source.config.model, source.config.features.n_mfcc, len(labels))
    torch.manual_seed(0)
    model = build_model(source.config.model, source.config.features.n_mfcc, len(labels))
    record = load_init_weights(model, source, labels, None)

    old_w, old_b = source.weights["head.weight"], source.weights["head.bias"]
    for i, label in enumerate(labels):
        if label in source.labels:
            j = source.labels.index(label)
            assert torch.equal(model.head.weight[i], old_w[j]) and torch.equal(model.head.bias[i], old_b[j])
        else:  # the new label's row is exactly what a fresh model of this seed has
            assert torch.equal(model.head.weight[i], fresh.head.weight[i])
            assert torch.equal(model.head.bias[i], fresh.head.bias[i])
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, source.weights[f"encoder.{key}"]), key
    assert record["labels_kept"] == ["high", "low"] and record["labels_new"] == ["buzz"]


def test_frozen_encoder_is_unchanged_after_training_and_the_run_records_its_origin(
    base: Path, new_words: dict[str, Path], tmp_path: Path
) -> None:
    proc = kws(
        "train", "--config", FINETUNE, "--init", base, "--freeze", "encoder", "--train-manifest",
        new_words["train"], "--val-manifest", new_words["validation"], "--run-dir", tmp_path / "ft",
        "--max-steps", "4", "--epochs", "4", "--batch-size", "8", "--device", "cpu",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "encoder and 2 of 3 classifier rows (new: buzz); encoder frozen" in proc.stderr  # the log
    assert "initialised from" in proc.stdout and "2 of 3 labels kept, encoder frozen" in proc.stdout
    # finetune.yaml has no model section (the recipe's MatchboxNet by default); the base is the smoke model
    assert "the model settings come from --init last.pt, not the config" in proc.stderr

    before, after = load_checkpoint(base), load_checkpoint(tmp_path / "ft" / "last.pt")
    assert after["step"] == 4
    enc_before, enc_after = encoder_of(before), encoder_of(after)
    assert enc_before.keys() == enc_after.keys()
    # weights and BatchNorm statistics alike: the frozen encoder ran in eval mode
    assert all(torch.equal(enc_before[k], enc_after[k]) for k in enc_before)
    assert not torch.equal(
        after["model"]["head.weight"][1], before["model"]["head.weight"][1]
    )  # high trained

    init = after["init"]
    assert init["checkpoint"] == str(base.resolve()) and init["freeze"] == "encoder"
    assert len(init["sha256"]) == 64 and init["labels_new"] == ["buzz"]
    assert after["config"]["model"] == before["config"]["model"]
    config = (tmp_path / "ft" / "config.yaml").read_text()
    assert f"checkpoint: {base.resolve()}" in config and "freeze: encoder" in config


@pytest.mark.parametrize(
    ("more", "message"),
    [
        (
            ["--init", "BASE", "--resume"],
            "--init starts a new run from a checkpoint's weights and --resume continues the run in --run-dir "
            "from its last.pt; pass only one of them",
        ),
        (["--freeze", "encoder"], "must be null unless init.checkpoint is set (--init)"),
        (["--init", "missing.pt"], "missing.pt does not exist"),
        (["--init", "BASE", "--freeze", "head"], "`init.freeze` must be one of"),
    ],
)
def test_mixed_up_options_are_one_line_errors(
    base: Path,
    new_words: dict[str, Path],
    tmp_path: Path,
    more: list[str],
    message: str,
    run_kws,  # noqa: ANN001
) -> None:
    more = [str(base) if m == "BASE" else m for m in more]
    proc = run_kws(*train_args(new_words["train"], tmp_path / "run", *more), cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and message in proc.stderr
    assert proc.stderr.startswith("error: --init (init.checkpoint): " if "missing" in message else "error: ")
    assert not (tmp_path / "run").exists()


def test_init_into_a_run_dir_holding_a_run_points_to_resume(
    base: Path,
    new_words: dict[str, Path],
    run_kws,  # noqa: ANN001
) -> None:
    run_dir = base.parent  # holds the base run
    proc = run_kws(*train_args(new_words["train"], run_dir, "--init", base))
    assert proc.returncode == 1
    assert "already holds a run, and --init starts a new one" in proc.stderr
    assert "use --resume without --init" in proc.stderr


def test_a_fine_tune_resumes_with_its_own_model_even_when_the_init_file_is_gone(
    base: Path, new_words: dict[str, Path], tmp_path: Path
) -> None:
    start = Path(shutil.copy(base, tmp_path / "start.pt"))
    common = ["--train-manifest", new_words["train"], "--run-dir", tmp_path / "ft", "--batch-size", "8"]
    common += ["--device", "cpu", "--epochs", "4"]
    first = kws(
        "train", "--config", FINETUNE, "--init", start, "--freeze", "encoder", "--max-steps", "2", *common
    )
    assert first.returncode == 0, first.stderr
    start.unlink()  # the weights now live in the run's own last.pt
    # the natural command: the first with --resume for --init (finetune.yaml's model is not the run's)
    again = kws("train", "--config", FINETUNE, "--resume", "--max-steps", "4", *common)
    assert again.returncode == 0, again.stderr
    assert (
        "was started with --init start.pt: resuming with its model, features and init settings"
        in again.stderr
    )

    after = load_checkpoint(tmp_path / "ft" / "last.pt")
    assert after["step"] == 4 and after["init"]["checkpoint"] == str(start.resolve())
    assert after["init"]["freeze"] == "encoder"
    enc_before, enc_after = encoder_of(load_checkpoint(base)), encoder_of(after)
    assert all(torch.equal(enc_before[k], enc_after[k]) for k in enc_before)  # still frozen after resuming


def test_overwrite_never_deletes_the_checkpoint_init_starts_from(
    base: Path, new_words: dict[str, Path]
) -> None:
    proc = kws(*train_args(new_words["train"], base.parent, "--init", base, "--overwrite"))
    assert proc.returncode == 1
    assert f"--overwrite would delete {base}, the checkpoint --init starts from" in proc.stderr
    assert base.is_file()


def test_init_with_an_exported_model_says_what_to_pass(
    new_words: dict[str, Path],
    tmp_path: Path,
    run_kws,  # noqa: ANN001
) -> None:
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07")
    proc = run_kws(*train_args(new_words["train"], tmp_path / "run", "--init", tmp_path / "model.onnx"))
    assert proc.returncode == 1
    assert (
        "is an exported model, which holds no trainable weights; pass the checkpoint it was exported"
        in proc.stderr
    )
