"""Checkpoints: atomic, self-describing, loadable for inference, clear errors on bad files."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kws import __version__
from kws.checkpoint import load_checkpoint, load_for_inference, rng_state, save_checkpoint, set_rng_state
from kws.config import Config, config_to_dict
from kws.errors import CheckpointError
from kws.features import FeatureExtractor
from kws.model import build_model
from kws.optim import build_optimizer, build_scheduler, lr_at
from kws.train.resume import LoopState, checkpoint_state, read_last, restore

LABELS = ["down", "go", "up"]


def write_model_checkpoint(path: Path, cfg: Config) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.features.n_mfcc, len(LABELS))
    with torch.no_grad():  # non-default statistics, to see that they travel too
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_()
    save_checkpoint(
        path,
        {
            "config": config_to_dict(cfg),
            "labels": LABELS,
            "model": model.state_dict(),
            "step": 12,
            "epoch": 3,
            "rng": rng_state(),
        },
    )
    return model


def test_load_for_inference_rebuilds_model_and_features(tmp_path: Path) -> None:
    cfg = Config()
    model = write_model_checkpoint(tmp_path / "m.pt", cfg).eval()
    loaded = load_for_inference(tmp_path / "m.pt", torch.device("cpu"))
    assert loaded.labels == LABELS and loaded.step == 12 and loaded.epoch == 3 and loaded.config == cfg
    assert not loaded.model.training and not loaded.features.training
    audio, lengths = torch.randn(2, 16000) * 0.1, torch.tensor([16000, 12000])
    feats, feat_lengths = loaded.features(audio, lengths)
    ref_feats, ref_lengths = FeatureExtractor(cfg.features).eval()(audio, lengths)
    torch.testing.assert_close(feats, ref_feats)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(feats, feat_lengths), model(ref_feats, ref_lengths))
    raw = load_checkpoint(tmp_path / "m.pt")
    assert raw["kws_version"] == __version__
    assert raw["git_commit"] is None or len(raw["git_commit"]) == 40


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    write_model_checkpoint(tmp_path / "a.pt", Config())
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "damaged or not a kws checkpoint"),
        (b"garbage" * 100, "damaged or not a kws checkpoint"),
    ],
)
def test_damaged_file_is_a_checkpoint_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_for_inference(path, torch.device("cpu"))


def test_truncated_checkpoint_is_a_checkpoint_error(tmp_path: Path) -> None:
    write_model_checkpoint(tmp_path / "m.pt", Config())
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "m.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="m.pt: it is damaged"):
        load_checkpoint(tmp_path / "m.pt")


def test_foreign_file_and_missing_file(tmp_path: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt is not a kws checkpoint"):
        load_for_inference(tmp_path / "other.pt", torch.device("cpu"))
    with pytest.raises(CheckpointError, match="nope.pt does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_weights_that_do_not_fit_the_config_are_named(tmp_path: Path) -> None:
    write_model_checkpoint(tmp_path / "m.pt", Config())
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    state["labels"] = LABELS + ["extra"]  # head size no longer matches
    torch.save(state, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="do not fit its model config"):
        load_for_inference(tmp_path / "m.pt", torch.device("cpu"))


def test_rng_state_round_trips_every_generator(tmp_path: Path) -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    save_checkpoint(
        tmp_path / "r.pt",
        {"config": {}, "labels": [], "model": {}, "step": 0, "epoch": 0, "rng": rng_state()},
    )
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0])
    np.testing.assert_array_equal(expected[1], again[1])
    assert expected[2] == again[2]


def test_rng_state_leaves_cuda_alone_off_cuda_and_loads_old_checkpoints() -> None:
    state = rng_state(torch.device("cpu"))
    assert state["cuda"] is None  # no CUDA context for a CPU run, even on a GPU machine
    expected = torch.rand(3)
    del state["cuda"]  # a checkpoint without the key
    set_rng_state(state, torch.device("cpu"))
    assert torch.equal(torch.rand(3), expected)
    set_rng_state({**state, "cuda": []}, torch.device("cpu"))  # the older per-GPU list
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_rng_state_round_trips_the_training_gpu() -> None:
    device = torch.device("cuda", 0)
    state = rng_state(device)
    expected = torch.rand(3, device=device)
    set_rng_state(state, device)
    assert torch.equal(torch.rand(3, device=device), expected)


def test_damaged_checkpoint_is_one_clean_line_that_names_the_good_ones(tmp_path: Path) -> None:
    write_model_checkpoint(tmp_path / "best.pt", Config())
    (tmp_path / "last.pt").write_bytes((tmp_path / "best.pt").read_bytes()[:1000])  # as by a full disk
    (tmp_path / "foreign.pt").write_bytes(b"garbage" * 100)
    best, last = tmp_path / "best.pt", tmp_path / "last.pt"
    for name, what, others in [
        ("last.pt", "cut short", f"{best}"),  # never itself
        ("foreign.pt", "not a file written by torch.save", f"{best} or {last}"),
    ]:
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(tmp_path / name)
        message = str(info.value)
        assert "\n" not in message and "weights_only" not in message and what in message, message
        assert message.endswith(f"use another checkpoint, e.g. {others}"), message


def test_a_directory_given_as_checkpoint_names_the_files_inside(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    with pytest.raises(CheckpointError, match=r"x is a directory with no \.pt file in it; pass a checkpoint"):
        load_checkpoint(run)
    write_model_checkpoint(run / "best.pt", Config())
    write_model_checkpoint(run / "last.pt", Config())
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(run)
    assert (
        str(info.value)
        == f"checkpoint {run} is a directory; pass a checkpoint in it: {run / 'best.pt'}, {run / 'last.pt'}"
    )


# Resuming: `read_last` checks a last.pt against the run before any data is decoded; `restore` loads it.


def training_objects(cfg: Config, n_labels: int = len(LABELS)) -> tuple[Any, ...]:
    model = build_model(cfg.model, cfg.features.n_mfcc, n_labels)
    optimizer = build_optimizer(model.parameters(), cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.schedule, total_steps=100)
    return model, optimizer, scheduler, torch.amp.GradScaler("cpu", enabled=False)


def write_last(path: Path, cfg: Config, step: int = 7) -> torch.nn.Module:
    """A last.pt as `kws train` writes it, `step` steps into a run of one process."""
    torch.manual_seed(0)
    model, optimizer, scheduler, scaler = training_objects(cfg)
    model(torch.randn(2, cfg.features.n_mfcc, 50), torch.tensor([50, 40])).sum().backward()
    optimizer.step()  # optimizer state to carry
    st = LoopState(step=step, epoch=1, batch=2, best_val_accuracy=0.5, best_step=6)
    save_checkpoint(path, checkpoint_state(cfg, LABELS, model, optimizer, scheduler, scaler, st, world=1))
    return model


def test_restore_continues_from_what_read_last_checked(tmp_path: Path) -> None:
    cfg = Config()
    saved = write_last(tmp_path / "last.pt", cfg)
    state = read_last(tmp_path / "last.pt", cfg, LABELS, world=1)
    model, optimizer, scheduler, scaler = training_objects(cfg)
    st = restore(state, tmp_path / "last.pt", model, optimizer, scheduler, scaler, torch.device("cpu"))
    assert (st.step, st.epoch, st.batch, st.best_val_accuracy, st.best_step) == (7, 1, 2, 0.5, 6)
    expected, got = saved.state_dict(), model.state_dict()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert optimizer.state_dict()["state"], "the optimizer state travels"
    assert scheduler.get_last_lr()[0] == pytest.approx(lr_at(7, 100, cfg.schedule, cfg.optim.lr))


def test_read_last_refuses_a_checkpoint_this_run_cannot_continue(tmp_path: Path) -> None:
    cfg = Config()
    last = tmp_path / "last.pt"
    with pytest.raises(CheckpointError, match="nothing to resume: .*last.pt does not exist; drop --resume"):
        read_last(last, cfg, LABELS)
    write_last(last, cfg)
    with pytest.raises(CheckpointError, match=r"trained on the labels \['down', 'go', 'up'\], not"):
        read_last(last, cfg, [*LABELS, "yes"])
    with pytest.raises(CheckpointError, match="written by 1 processes with batch 128, not 2 with batch 128"):
        read_last(last, cfg, LABELS, world=2)
    narrow = (dataclasses.replace(cfg.model.blocks[0], filters=8), *cfg.model.blocks[1:])
    other = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, blocks=narrow))
    with pytest.raises(CheckpointError, match="does not fit this config") as info:
        read_last(last, other, LABELS)
    assert "\n" not in str(info.value), "one line, not torch's list of every mismatched tensor"
