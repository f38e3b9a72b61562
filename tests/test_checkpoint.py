"""Checkpoints: atomic, self-describing, loadable for inference, clear errors on bad files."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from kws import __version__
from kws.checkpoint import load_checkpoint, load_for_inference, rng_state, save_checkpoint, set_rng_state
from kws.config import Config, config_to_dict
from kws.errors import CheckpointError
from kws.features import FeatureExtractor
from kws.model import build_model

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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_rng_state_round_trips_the_training_gpu() -> None:
    device = torch.device("cuda", 0)
    state = rng_state(device)
    expected = torch.rand(3, device=device)
    set_rng_state(state, device)
    assert torch.equal(torch.rand(3, device=device), expected)
