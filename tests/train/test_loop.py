"""`kws train` end to end on a tiny synthetic dataset: run dir, metrics, checkpoints, resume, faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kws.checkpoint import load_checkpoint, load_for_inference
from kws.config import apply_options, load_config
from kws.errors import CheckpointError, DataError
from kws.manifest import Entry, read_manifest, write_manifest
from kws.train.loop import train
from tests.helpers import REPO, SMOKE, kws
from tests.helpers.tiny_dataset import CLASSES


def train_args(train_manifest: Path, run_dir: str | Path, *more: str | Path) -> list[str | Path]:
    """`kws train` on the smoke config: the arguments after `kws`."""
    return ["train", "--config", SMOKE, "--train-manifest", train_manifest, "--run-dir", run_dir, *more]


def records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


@pytest.fixture(scope="module")
def smoke_run(
    data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    work = tmp_path_factory.mktemp("work")
    run = kws(*train_args(data["train"], "run", "--val-manifest", data["validation"]), cwd=work)
    assert run.returncode == 0, run.stderr
    return work / "run", run


def test_cli_smoke_run_writes_a_complete_run_dir(
    smoke_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    run_dir, proc = smoke_run
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "curves.png"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(run_dir.glob(".*tmp*")), "temporary files left behind"
    epochs = records(run_dir, "epoch")
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
    steps = records(run_dir, "step")
    assert steps and all(s["loss"] > 0 and s["lr"] > 0 and s["clips_per_s"] > 0 for s in steps)
    best = max(e["val"]["validation_manifest"]["accuracy"] for e in epochs)
    assert best > 0.6, f"validation accuracy {best} should be well above chance (0.25)"
    assert "best validation accuracy" in proc.stdout and "clips/s" in proc.stdout


def test_best_checkpoint_rebuilds_the_model(
    smoke_run: tuple[Path, subprocess.CompletedProcess[str]], data: dict[str, Path]
) -> None:
    run_dir, _ = smoke_run
    loaded = load_for_inference(run_dir / "best.pt", torch.device("cpu"))
    assert loaded.labels == sorted(CLASSES)
    assert not loaded.model.training and not loaded.features.training
    ckpt = torch.load(run_dir / "best.pt", weights_only=True)
    for key in (
        "kws_version",
        "git_commit",
        "config",
        "labels",
        "model",
        "optimizer",
        "scheduler",
        "scaler",
        "epoch",
        "step",
        "rng",
        "data_position",
        "best_val_accuracy",
    ):
        assert key in ckpt, key
    assert loaded.step == ckpt["step"]
    # The rebuilt model classifies the validation set as well as training measured it.
    from kws.data import ClipSet, load_packed

    packed = load_packed(data["validation"], run_dir / "cache", loaded.labels)
    audio, lengths, _ = ClipSet(packed, torch.device("cpu")).batch(torch.arange(len(packed)))
    with torch.no_grad():
        feats, feat_lengths = loaded.features(audio, lengths)
        pred = loaded.model(feats, feat_lengths).argmax(-1).numpy()
    accuracy = float((pred == packed.label_ids).mean())
    assert accuracy == pytest.approx(ckpt["best_val_accuracy"], abs=1e-6)


def test_second_run_reuses_the_packed_cache(
    smoke_run: tuple[Path, subprocess.CompletedProcess[str]], data: dict[str, Path]
) -> None:
    run_dir, first = smoke_run
    assert "decoded train_manifest.json" in first.stderr
    audio = next((run_dir / "cache").glob("train_manifest-*/audio.npy"))
    mtime = audio.stat().st_mtime_ns
    cache = f"data.cache_dir={run_dir / 'cache'}"
    again = kws(*train_args(data["train"], "run2", "--max-steps", "2", "--set", cache), cwd=run_dir.parent)
    assert again.returncode == 0, again.stderr
    assert "memory-mapped train_manifest.json" in again.stderr and "decoded" not in again.stderr
    assert audio.stat().st_mtime_ns == mtime


def test_a_run_dir_with_another_config_refuses(
    smoke_run: tuple[Path, subprocess.CompletedProcess[str]], data: dict[str, Path]
) -> None:
    run_dir, _ = smoke_run
    proc = kws(*train_args(data["train"], run_dir, "--epochs", "7"), cwd=run_dir.parent)
    assert proc.returncode == 1
    assert "another config" in proc.stderr and "trainer.epochs" in proc.stderr and "--resume" in proc.stderr


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def test_a_rerun_into_a_finished_run_is_refused_and_changes_nothing(
    smoke_run: tuple[Path, subprocess.CompletedProcess[str]], data: dict[str, Path]
) -> None:
    run_dir, _ = smoke_run
    before = {name: (run_dir / name).read_bytes() for name in ("last.pt", "config.yaml", "metrics.jsonl")}
    proc = kws(*train_args(data["train"], run_dir, "--val-manifest", data["validation"]), cwd=run_dir.parent)
    assert proc.returncode == 1
    assert error_lines(proc.stderr) == [
        f"error: {run_dir} already holds a run (last.pt at step 24); continue it with --resume, or start "
        "over with a new --run-dir or --overwrite"
    ], proc.stderr
    assert "decoded" not in proc.stderr and "memory-mapped" not in proc.stderr, "refused before any data"
    assert {name: (run_dir / name).read_bytes() for name in before} == before


def test_overwrite_starts_over_and_replaces_the_old_run(data: dict[str, Path], tmp_path: Path) -> None:
    train(smoke_config(data, f"data.cache_dir={tmp_path / 'cache'}", max_steps=3), tmp_path / "run")
    assert (tmp_path / "run" / "best.pt").is_file()
    # Another config (no validation set, 2 steps): --overwrite needs no --resume and keeps nothing old.
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    more = ["--max-steps", "2", "--overwrite", "--set", "trainer.log_every_n_steps=1", "--set", cache]
    proc = kws(*train_args(data["train"], "run", *more), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "run"
    assert torch.load(run_dir / "last.pt", weights_only=True)["step"] == 2
    assert not (run_dir / "best.pt").exists(), "the old run's best.pt is gone"
    assert [r["step"] for r in records(run_dir, "step")] == [1, 2]
    assert records(run_dir, "val") == []
    assert load_config(run_dir / "config.yaml").trainer.max_steps == 2


def test_resume_and_overwrite_together_are_refused(data: dict[str, Path], tmp_path: Path) -> None:
    proc = kws(*train_args(data["train"], "run", "--resume", "--overwrite"), cwd=tmp_path)
    assert proc.returncode == 1
    assert error_lines(proc.stderr) == [
        "error: --resume continues the run in run and --overwrite starts it over; pass only one of them"
    ]


def test_resume_without_a_run_fails_before_any_data_is_decoded(data: dict[str, Path], tmp_path: Path) -> None:
    proc = kws(*train_args(data["train"], "fresh", "--resume"), cwd=tmp_path)
    assert proc.returncode == 1
    last = Path("fresh") / "last.pt"
    assert error_lines(proc.stderr) == [
        f"error: nothing to resume: {last} does not exist; drop --resume to start a new run"
    ]
    assert not (tmp_path / "fresh").exists(), "no run dir, no cache folder"
    proc = kws("train", "--run-dir", "fresh", "--resume", cwd=tmp_path)  # no --config: the run's is needed
    assert proc.returncode == 1
    assert error_lines(proc.stderr) == [
        "error: nothing to resume: fresh holds no config.yaml (no run was started there); check --run-dir, "
        "or drop --resume and pass --config to start a new run"
    ]
    assert not (tmp_path / "fresh").exists()


def smoke_config(data: dict[str, Path], *overrides: str, **options: object):  # noqa: ANN201
    cfg = load_config(SMOKE, ["trainer.log_every_n_steps=1", *overrides])
    options = {"train_manifest": data["train"], "val_manifests": [data["validation"]], **options}
    return apply_options(cfg, **options)  # type: ignore[arg-type]


def test_resume_after_interrupt_repeats_a_straight_run_exactly(data: dict[str, Path], tmp_path: Path) -> None:
    # Validation every 4 steps too: mid-epoch validations must not disturb the training stream.
    cfg = smoke_config(data, f"data.cache_dir={tmp_path / 'cache'}", "trainer.val_every_n_steps=4", epochs=2)
    train(cfg, tmp_path / "straight")

    def interrupt_at_step_8(step: int) -> None:  # mid-epoch: 6 steps an epoch
        if step == 8:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, handled at the next step boundary

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed", on_step=interrupt_at_step_8)
    assert torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["step"] == 8
    train(cfg, tmp_path / "resumed", resume=True)

    straight, resumed = records(tmp_path / "straight", "step"), records(tmp_path / "resumed", "step")
    assert [r["step"] for r in resumed] == list(range(1, 13))
    assert [(r["step"], r["loss"], r["lr"]) for r in resumed] == [
        (r["step"], r["loss"], r["lr"]) for r in straight
    ]
    straight_val, resumed_val = records(tmp_path / "straight", "val"), records(tmp_path / "resumed", "val")
    assert [r["step"] for r in resumed_val] == [4, 6, 8, 12]
    assert resumed_val == straight_val
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_weight_average_is_validated_saved_and_resumed_exactly_without_changing_training(
    data: dict[str, Path], tmp_path: Path
) -> None:
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    cfg = smoke_config(data, cache, "trainer.val_every_n_steps=4", "trainer.ema_decay=0.9", epochs=2)
    train(smoke_config(data, cache, "trainer.val_every_n_steps=4", epochs=2), tmp_path / "plain")
    train(cfg, tmp_path / "straight")

    def interrupt_at_step_8(step: int) -> None:
        if step == 8:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed", on_step=interrupt_at_step_8)
    train(cfg, tmp_path / "resumed", resume=True)

    plain, straight, resumed = (
        torch.load(tmp_path / name / "last.pt", weights_only=True)
        for name in ("plain", "straight", "resumed")
    )
    # the weights trained are the plain run's: the average only watches
    assert "train_model" not in plain
    assert all(torch.equal(plain["model"][k], straight["train_model"][k]) for k in plain["model"])
    # what is saved as `model` (and loaded by evaluate, export, fine-tuning) is the average, not them
    weights = [k for k in straight["model"] if straight["model"][k].is_floating_point()]
    assert any(not torch.equal(straight["model"][k], straight["train_model"][k]) for k in weights)
    for key in ("model", "train_model"):  # --resume continues both exactly
        assert all(torch.equal(straight[key][k], resumed[key][k]) for k in straight[key])
    # validation is the average's: other figures than the plain run's, the same after a resume
    assert records(tmp_path / "straight", "val") == records(tmp_path / "resumed", "val")
    assert records(tmp_path / "straight", "val") != records(tmp_path / "plain", "val")
    losses = [
        [(r["step"], r["loss"], r["lr"]) for r in records(tmp_path / n, "step")]
        for n in ("straight", "plain")
    ]
    assert losses[0] == losses[1] and len(losses[0]) == 12


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data: dict[str, Path], tmp_path: Path) -> None:
    cfg = smoke_config(data, "data.cache_dir=" + str(tmp_path / "cache"), max_steps=6)
    train(cfg, tmp_path / "run")
    good = (tmp_path / "run" / "last.pt").read_bytes()
    # A learning rate far too high drives the weights to infinity: the loss becomes NaN within a few steps.
    diverging = smoke_config(
        data, "data.cache_dir=" + str(tmp_path / "cache"), "optim.lr=1.0e+30", max_steps=24
    )
    with pytest.raises(Exception, match=r"NaN or infinite at step \d+") as info:
        train(diverging, tmp_path / "run", resume=True)
    assert type(info.value).__name__ == "TrainingError"
    assert (tmp_path / "run" / "last.pt").read_bytes() == good


def test_corrupt_last_checkpoint_is_a_clear_error(data: dict[str, Path], tmp_path: Path) -> None:
    cfg = smoke_config(data, max_steps=2)
    train(cfg, tmp_path / "run")
    last = tmp_path / "run" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated, as by a full disk
    with pytest.raises(CheckpointError, match="last.pt.*damaged"):
        train(cfg, tmp_path / "run", resume=True)
    proc = kws("train", "--run-dir", tmp_path / "run", "--resume", cwd=tmp_path)
    assert (
        proc.returncode == 1 and "error: cannot read checkpoint" in proc.stderr and "last.pt" in proc.stderr
    )


def test_resume_with_another_batch_size_is_a_clear_error(data: dict[str, Path], tmp_path: Path) -> None:
    cfg = smoke_config(data, f"data.cache_dir={tmp_path / 'cache'}", max_steps=1)
    train(cfg, tmp_path / "run")
    before = {f.name: f.read_bytes() for f in (tmp_path / "run").iterdir() if f.is_file()}
    other = smoke_config(data, f"data.cache_dir={tmp_path / 'cache'}", max_steps=2, batch_size=8)
    with pytest.raises(CheckpointError, match=r"written by 1 processes with batch 16.*same --nproc_per_node"):
        train(other, tmp_path / "run", resume=True)
    # A refused resume changes nothing: config.yaml still holds the run's config (batch 16), byte for byte.
    assert {f.name: f.read_bytes() for f in (tmp_path / "run").iterdir() if f.is_file()} == before


def test_missing_manifest_and_missing_clip_are_named(data: dict[str, Path], tmp_path: Path) -> None:
    proc = kws(
        "train", "--config", SMOKE, "--train-manifest", tmp_path / "nope.json", "--run-dir", "r", cwd=tmp_path
    )
    assert proc.returncode == 1 and "nope.json does not exist" in proc.stderr
    entries = read_manifest(data["train"])
    missing = str(tmp_path / "gone" / "clip.wav")
    broken = tmp_path / "broken.json"
    write_manifest(broken, [*entries, Entry(missing, 1.0, entries[0].label)])
    with pytest.raises(DataError, match=f"{missing} listed in .*broken.json does not exist"):
        train(smoke_config(data, train_manifest=broken), tmp_path / "run")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
def test_cuda_without_a_gpu_is_an_error(data: dict[str, Path], tmp_path: Path) -> None:
    proc = kws(
        "train", "--config", SMOKE, "--train-manifest", data["train"], "--device", "cuda", cwd=tmp_path
    )
    assert proc.returncode == 1 and "CUDA is not available" in proc.stderr


def train_until_signalled(args: list[str | Path], cwd: Path, signum: int) -> tuple[int, str]:
    """Start a real `kws train`, send it `signum` once metrics.jsonl holds 3 records; (exit code, stderr)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kws", *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = cwd / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (metrics.is_file() and metrics.read_text().count("\n") >= 3):
        time.sleep(0.05)
    proc.send_signal(signum)
    _out, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.slow
def test_ctrl_c_writes_last_checkpoint_and_exits_130(data: dict[str, Path], tmp_path: Path) -> None:
    args = train_args(data["train"], "run", "--epochs", "200", "--set", "trainer.log_every_n_steps=1")
    code, err = train_until_signalled(args, tmp_path, signal.SIGINT)
    assert code == 130, err
    assert "interrupted at step" in err
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["step"] >= 3 and state["data_position"]["batch"] == state["step"] % 6


@pytest.mark.slow
def test_sigterm_writes_last_checkpoint_exits_143_and_resumes_exactly(
    data: dict[str, Path], tmp_path: Path
) -> None:
    # What a cluster scheduler does at the end of a job's time: SIGTERM to a real `kws train`.
    args = train_args(data["train"], "run", "--epochs", "6", "--set", "trainer.log_every_n_steps=1")
    code, err = train_until_signalled(args, tmp_path, signal.SIGTERM)
    assert code == 143, err
    step = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"]
    assert 3 <= step < 36, "stopped mid-run"
    note = f"interrupted by SIGTERM at step {step}: wrote {Path('run') / 'last.pt'}; continue with --resume"
    assert note in " ".join(err.split()), err
    assert not error_lines(err)

    resumed = kws("train", "--run-dir", "run", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {Path('run') / 'last.pt'} at step {step}" in resumed.stderr
    cfg = smoke_config(data, f"data.cache_dir={tmp_path / 'cache'}", epochs=6, val_manifests=[])
    train(cfg, tmp_path / "straight")
    straight, after = records(tmp_path / "straight", "step"), records(tmp_path / "run", "step")
    assert [r["step"] for r in after] == list(range(1, 37))
    assert [(r["step"], r["loss"], r["lr"]) for r in after] == [
        (r["step"], r["loss"], r["lr"]) for r in straight
    ]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_bf16_run_keeps_the_train_set_on_the_device(data: dict[str, Path], tmp_path: Path) -> None:
    cfg = smoke_config(data, max_steps=12, device="cuda", precision="bf16")
    result = train(cfg, tmp_path / "run")
    assert result.steps == 12 and result.best_val_accuracy is not None
    loaded = load_for_inference(tmp_path / "run" / "best.pt", torch.device("cuda"))
    assert next(loaded.model.parameters()).is_cuda


def test_epochs_of_one_step_write_last_pt_every_n_steps_and_at_the_end(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fine-tuning on a few clips: an epoch is one step; last.pt and curves.png wait for N steps (50; 3
    here, to keep the test short)."""
    from kws.train import epoch

    monkeypatch.setattr(epoch, "CHECKPOINT_EVERY_STEPS", 3)
    cfg = smoke_config(data, f"data.cache_dir={tmp_path / 'cache'}", epochs=20, max_steps=8, batch_size=128)
    on_disk: dict[int, int] = {}

    def look(step: int) -> None:
        if step in (2, 3, 5):
            on_disk[step] = int(load_checkpoint(tmp_path / "run" / "last.pt")["step"])

    result = train(cfg, tmp_path / "run", on_step=look)
    assert result.steps == 8 and result.epochs_done == 8
    assert on_disk == {2: 1, 3: 1, 5: 4}  # after epochs 1, 4 and 7 only
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 8
    assert (tmp_path / "run" / "curves.png").is_file()
