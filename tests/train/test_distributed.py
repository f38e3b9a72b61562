"""Distributed helpers (no-ops in one process) and DDP training under torchrun on CPU with gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from kws.data import epoch_order
from kws.train import distributed
from tests.helpers import REPO, SMOKE
from tests.helpers.tiny_dataset import make_tiny_dataset


def test_helpers_are_no_ops_in_one_process() -> None:
    distributed.init("cpu")  # no WORLD_SIZE in the environment: nothing to join
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    t = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_sum(t) is t and t.tolist() == [1.0, 2.0]
    assert distributed.all_reduce_max(t) is t
    distributed.barrier()
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    model = nn.Linear(2, 2)
    assert distributed.wrap_model(model, torch.device("cpu")) is model
    calls = []
    assert distributed.in_turn(lambda: calls.append(1) or 7) == 7 and calls == [1]
    distributed.destroy()


def test_ranks_take_disjoint_shares_of_the_single_process_global_batch() -> None:
    single = epoch_order(100, 16, 1, seed=0, epoch=2)  # (steps, 1, 16)
    two = epoch_order(100, 8, 2, seed=0, epoch=2)  # (steps, 2, 8)
    assert len(single) == len(two) == 7  # ceil(100 / 16): the last global batch holds the 4 left over
    for step in range(7):
        r0, r1 = set(two[step, 0].tolist()), set(two[step, 1].tolist())
        assert not r0 & r1
        assert r0 | r1 == set(single[step, 0].tolist())


# Run by torchrun: trains through kws.train.loop.train, recording which clips each rank gathered at each step.
RECORDER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import torch
    from kws import data
    from kws.train import distributed
    from kws.config import apply_options, load_config
    from kws.train.loop import train

    smoke, train_manifest, val_manifest, run_dir, out = sys.argv[1:6]
    seen = []
    original = data.ClipSet.batch
    def recording(self, ids):
        if self.n_clips > 40:  # the train set (the validation set is smaller)
            seen.append(ids.tolist())
        return original(self, ids)
    data.ClipSet.batch = recording
    # No augmentation: per-rank draws would differ from the single process's; what remains is BatchNorm.
    no_augment = ["augment.time_shift_ms=0", "augment.white_noise_db=none", "augment.cutout_rects=0",
                  "augment.freq_masks=0", "augment.time_masks=0"]
    cfg = load_config(Path(smoke), ["trainer.log_every_n_steps=1", *no_augment])
    cfg = apply_options(cfg, train_manifest=Path(train_manifest), val_manifests=[Path(val_manifest)],
                        batch_size=int(sys.argv[6]), epochs=2)
    rank = int(__import__("os").environ.get("RANK", "0"))
    train(cfg, Path(run_dir))
    Path(out, f"ids_rank{rank}.json").write_text(json.dumps(seen))
    """
)


def torchrun(*args: str | Path, nproc: int, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        *map(str, args),
    ]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def kws_train(data: dict[str, Path]) -> list[str | Path]:
    """`-m kws train` on the smoke config and the tiny dataset, into `run`."""
    command: list[str | Path] = ["-m", "kws", "train", "--config", SMOKE, "--run-dir", "run"]
    return [*command, "--train-manifest", data["train"], "--val-manifest", data["validation"]]


@pytest.mark.slow
def test_ddp_on_cpu_matches_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data")
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER)
    common = [SMOKE, data["train"], data["validation"]]
    (tmp_path / "ddp").mkdir()
    (tmp_path / "one").mkdir()
    ddp = torchrun(script, *common, tmp_path / "ddp" / "run", tmp_path / "ddp", 8, nproc=2, cwd=tmp_path)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, script, *map(str, common), tmp_path / "one" / "run", tmp_path / "one", "16"],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]

    # The two ranks gathered disjoint clips, which together are the single process's global batches.
    r0, r1 = (json.loads((tmp_path / "ddp" / f"ids_rank{r}.json").read_text()) for r in (0, 1))
    single = json.loads((tmp_path / "one" / "ids_rank0.json").read_text())
    assert len(r0) == len(r1) == len(single) == 12
    for a, b, s in zip(r0, r1, single, strict=True):
        assert not set(a) & set(b) and sorted(a + b) == sorted(s)

    # Only rank 0 wrote the run dir: one log line per step, one set of checkpoints.
    ddp_steps = [json.loads(x) for x in (tmp_path / "ddp" / "run" / "metrics.jsonl").read_text().splitlines()]
    one_steps = [json.loads(x) for x in (tmp_path / "one" / "run" / "metrics.jsonl").read_text().splitlines()]
    ddp_losses = [r["loss"] for r in ddp_steps if r["kind"] == "step"]
    one_losses = [r["loss"] for r in one_steps if r["kind"] == "step"]
    assert len(ddp_losses) == len(one_losses) == 12
    assert ddp.stderr.count("epoch 2/2  train loss") == 1, "one epoch line: only rank 0 prints"
    assert "Grad strides do not match" not in ddp.stderr, "DDP's meaningless stride warning is silenced"
    # Same init and same clips: the first loss agrees closely; afterwards per-rank BatchNorm statistics (over
    # 8 clips, not 16) make training follow a similar, not identical, path.
    assert ddp_losses[0] == pytest.approx(one_losses[0], rel=0.01)
    assert sum(ddp_losses[-6:]) / 6 == pytest.approx(sum(one_losses[-6:]) / 6, rel=0.3)
    ckpt = torch.load(tmp_path / "ddp" / "run" / "last.pt", weights_only=True)
    assert ckpt["data_position"]["world_size"] == 2 and ckpt["step"] == 12


@pytest.mark.slow
def test_torchrun_dash_m_kws_train_prints_and_writes_once(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data", n_train=12, n_val=4)
    proc = torchrun(*kws_train(data), "--epochs", "1", nproc=2, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("best validation accuracy") == 1
    assert "(2 processes)" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "best.pt",
        "cache",
        "config.yaml",
        "curves.png",
        "last.pt",
        "metrics.jsonl",
    ]

    # The same command again is refused on every process, with one error line, before any data is read.
    last = (tmp_path / "run" / "last.pt").read_bytes()
    again = torchrun(*kws_train(data), "--epochs", "1", nproc=2, cwd=tmp_path)
    assert again.returncode != 0
    errors = [line for line in again.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "already holds a run" in errors[0] and "--resume" in errors[0], again.stderr
    assert (tmp_path / "run" / "last.pt").read_bytes() == last
    # --resume with one more epoch: every process reads last.pt and continues from its step.
    steps = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"]
    resumed = torchrun(*kws_train(data), "--epochs", "2", "--resume", nproc=2, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stderr.count(f"at step {steps} (epoch 2, batch 0)") == 1, "resumed, said once"
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 2 * steps


# Run by torchrun: an error on one process must reach every process instead of leaving the others waiting.
SHARER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from kws.train import distributed
    from kws.errors import DataError

    distributed.init("cpu")
    rank, out = distributed.rank(), Path(sys.argv[1])

    def build():
        if rank == 0:
            raise DataError("clip a.wav is not 16 kHz; re-encode it")
        return "built"

    def write_on_1():
        if rank == 1:
            raise DataError("disk full writing b.pt; free some space")
        return rank

    lines = []
    for name, call in (("in_turn", lambda: distributed.in_turn(build)),
                       ("run_where", lambda: distributed.run_where(True, write_on_1))):
        try:
            lines.append(f"{name}: returned {call()!r}")
        except DataError as exc:
            lines.append(f"{name}: DataError from_rank={exc.from_rank}: {exc}")
    (out / f"rank{rank}.txt").write_text("\\n".join(lines))
    distributed.destroy()
    """
)


@pytest.mark.slow
def test_an_error_on_one_process_stops_every_process(tmp_path: Path) -> None:
    script = tmp_path / "sharer.py"
    script.write_text(SHARER)
    proc = torchrun(script, tmp_path, nproc=2, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0 = (tmp_path / "rank0.txt").read_text().splitlines()
    rank1 = (tmp_path / "rank1.txt").read_text().splitlines()
    # The process that failed raises its own error; the other raises it too, marked with where it came from.
    assert rank0[0] == "in_turn: DataError from_rank=None: clip a.wav is not 16 kHz; re-encode it"
    assert rank1[0] == "in_turn: DataError from_rank=0: clip a.wav is not 16 kHz; re-encode it"
    assert rank0[1] == "run_where: DataError from_rank=1: disk full writing b.pt; free some space"
    assert rank1[1] == "run_where: DataError from_rank=None: disk full writing b.pt; free some space"


@pytest.mark.slow
def test_torchrun_into_a_run_dir_of_another_run_is_one_error_line(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data", n_train=12, n_val=4)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("trainer: {epochs: 7}\n")  # another run's config
    proc = torchrun(*kws_train(data), nproc=2, cwd=tmp_path)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "holds a run with another config" in errors[0], proc.stderr[-3000:]
