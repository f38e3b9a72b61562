"""kws against NVIDIA NeMo 3.0.0 itself on CPU: MatchboxNet-3x1x64 training and inference, side by side.

Each side runs in its own interpreter (bench/vs_nemo_worker.py, a persistent subprocess), and the rounds
alternate (kws, NeMo, kws, NeMo, ...) so that load from other processes hits both alike; medians reported.
- Training, float32, batch 128, on the same generated data (1 s 16 kHz wavs, tones and chirps in noise, 30
  labels, one JSON-lines manifest both read): kws = `kws.train.loop.train` (what `kws train` runs) on
  configs/matchboxnet_3x1x64_v1.yaml with --precision 32 --device cpu; NeMo = its own
  `EncDecClassificationModel` (matchboxnet_3x1x64_v1.yaml: shift +/-5 ms, white noise -90..-46 dB, spec
  augment, Novograd + PolynomialHoldDecayAnnealing) fitted by a plain `lightning.pytorch.Trainer`, its data
  layer with num_workers 0 (the YAML sets none; NeMo's default) unless --nemo-workers.
- Inference at batch 1 (median ms per call), 32 and 128 (clips/s): `kws.checkpoint.load_for_inference`, then
  features + model, against NeMo's `model.forward(input_signal, input_signal_length)`; eval mode,
  torch.inference_mode, random weights on both sides.
kws pads the features to the recipe's 128 frames; NeMo 3.0.0 builds its crop/pad module but never applies
it, so its encoder sees 101 frames (21% less work per clip).

NeMo is never a kws dependency. Make a separate environment beside the same torch:

    python3 -m venv /tmp/nemo-venv
    /tmp/nemo-venv/bin/pip install torch==2.11.0 torchaudio==2.11.0 "nemo-toolkit[asr]==3.0.0"
    .venv/bin/python bench/vs_nemo.py --nemo-python /tmp/nemo-venv/bin/python

NeMo's example configs are not in the wheel: the NeMo side uses the values bench/nemo_reference.py carries,
or NeMo's own YAML given with --nemo-config examples/asr/conf/matchboxnet/matchboxnet_3x1x64_v1.yaml.
Without --nemo-python, or when it cannot import NeMo, the bench prints this and exits 0 ("skipped").

Targets (issue 16, item 2): training >= 3x NeMo, inference >= 3x NeMo at batch 32 and 128, kws batch-1
latency <= 0.5 ms. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import wave
from pathlib import Path
from typing import IO, Any

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORKER = BENCH / "vs_nemo_worker.py"
SAMPLE_RATE = 16_000  # Hz
CLIP_SAMPLES = SAMPLE_RATE  # 1 s clips
N_LABELS = 30
BATCH = 128
INFER_BATCHES = (1, 32, 128)
SIDES = ("kws", "NeMo")
FLAG_PREFIXES = ("avx2", "avx512", "amx", "avx_vnni", "fma")


def make_data(folder: Path, n_clips: int, seed: int) -> Path:
    """`n_clips` 1 s wavs (label k: a chirp from 150 + 80k Hz up an octave, random onset, length and level,
    in white noise) and their manifest; reused when already written with the same count and seed."""
    manifest = folder / f"train_manifest_{n_clips}_seed{seed}.json"
    if manifest.is_file():
        return manifest
    rng = np.random.default_rng(seed)
    t = np.arange(CLIP_SAMPLES) / SAMPLE_RATE  # s
    lines = []
    for i in range(n_clips):
        k = i % N_LABELS
        f0_hz = 150 + 80 * k
        onset_s, length_s = rng.uniform(0.0, 0.3), rng.uniform(0.4, 0.7)
        tau = t - onset_s
        chirp = np.sin(2 * np.pi * f0_hz * (tau + tau**2 / (2 * length_s)))  # f0 -> 2 f0 over length_s
        envelope = (tau >= 0) & (tau < length_s)
        audio = rng.uniform(0.1, 0.5) * chirp * envelope + rng.uniform(0.005, 0.05) * rng.standard_normal(
            t.size
        )
        path = folder / f"w{k:02d}" / f"{i:05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(path), "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(SAMPLE_RATE)
            f.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
        lines.append(json.dumps({"audio_filepath": str(path), "duration": 1.0, "label": f"w{k:02d}"}))
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


class Worker:
    """One side's persistent worker process: `ask(cmd)` sends a JSON command and returns its answer."""

    def __init__(
        self, name: str, python: str, extra: list[str], args: argparse.Namespace, manifest: Path
    ) -> None:
        self.name, self.python = name, python
        self.log_path = args.work / f"worker_{name}.log"
        self.log: IO[str] = open(self.log_path, "w")  # noqa: SIM115 (closed in close())
        command = [python, str(WORKER), "--side", name.lower(), "--work", str(args.work)]
        command += ["--manifest", str(manifest), "--threads", str(args.threads), *extra]
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=REPO
        )

    def ask(self, cmd: str, **fields: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith("@@ "):
                answer: dict[str, Any] = json.loads(line[3:])
                return answer
            self.log.write(line)  # the libraries' own stdout: kept in the log, out of the table
        self.log.flush()
        tail = "".join(self.log_path.read_text().splitlines(keepends=True)[-25:])
        raise RuntimeError(f"the {self.name} worker stopped on {cmd!r}; end of {self.log_path}:\n{tail}")

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        self.log.close()


def nemo_missing(python: str | None) -> str | None:
    """Why NeMo cannot be used from `python`, or None when it can."""
    if python is None:
        return "no --nemo-python given"
    try:
        probe = subprocess.run(
            [python, "-c", "import nemo.collections.asr, lightning.pytorch"], capture_output=True, text=True
        )
    except OSError as exc:
        return f"{python} cannot be run: {exc}"
    if probe.returncode != 0:
        return f"{python} cannot import NeMo: {(probe.stderr.strip().splitlines() or ['?'])[-1]}"
    return None


def machine() -> str:
    cpu, flags = "unknown CPU", list[str]()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and cpu == "unknown CPU":
                    cpu = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = [x for x in value.split() if x.startswith(FLAG_PREFIXES)]
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    absent = [f"no {p}*" for p in FLAG_PREFIXES if not any(x.startswith(p) for x in flags)]
    return f"{cpu}, {cores} cores, flags: {' '.join(flags + absent)}; load average {load}"


def median_row(label: str, values: dict[str, list[float]], fmt: str, higher_is_better: bool) -> list[str]:
    med = {s: statistics.median(values[s]) for s in SIDES}
    ratio = med["kws"] / med["NeMo"] if higher_is_better else med["NeMo"] / med["kws"]
    cells = [f"{med[s]:{fmt}} ({', '.join(f'{x:{fmt}}' for x in values[s])})" for s in SIDES]
    return [label, *cells, f"{ratio:.2f}x"]


def table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def n_calls(batch1_calls: int, batch: int) -> int:
    """Calls per measurement: `batch1_calls` at batch 1; larger batches get 8x as many clips in all."""
    return batch1_calls if batch == 1 else max(5, 8 * batch1_calls // batch)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def run(args: argparse.Namespace, workers: dict[str, Worker]) -> None:
    for name, w in workers.items():
        info = w.ask("info")
        extra = f", NeMo {info['nemo']}, Lightning {info['lightning']}" if "nemo" in info else ""
        print(f"{name} side: {w.python}: Python {info['python']}, torch {info['torch']}{extra}")

    train: dict[str, list[float]] = {s: [] for s in SIDES}
    used: set[int] = set()
    for r in range(args.rounds):
        for s in SIDES:  # alternating rounds: kws, NeMo, kws, NeMo, ...
            answer = workers[s].ask("train", warmup=args.warmup, steps=args.steps, batch=BATCH)
            train[s].append(answer["clips_per_s"])
            used.add(answer["threads"])
            print(f"  train round {r + 1} {s}: {answer['clips_per_s']:.1f} clips/s", flush=True)

    infer: dict[int, dict[str, list[float]]] = {b: {s: [] for s in SIDES} for b in INFER_BATCHES}
    for r in range(args.rounds):
        for b in INFER_BATCHES:
            calls = n_calls(args.calls, b)
            for s in SIDES:
                answer = workers[s].ask("infer", batch=b, calls=calls, warmup=max(3, calls // 10))
                infer[b][s].append(answer["ms"] if b == 1 else answer["clips_per_s"])
                used.add(answer["threads"])
        print(f"  inference round {r + 1} done", flush=True)

    print(f"\ntorch threads used by both sides: {sorted(used)}; load after: {os.getloadavg()[0]:.2f}")
    header = ["median (rounds)", "kws", "NeMo 3.0.0", "kws vs NeMo"]
    rows = [median_row(f"training, batch {BATCH}, clips/s", train, ".0f", True)]
    rows.append(median_row("inference, batch 1, ms/call", infer[1], ".3f", False))
    rows += [median_row(f"inference, batch {b}, clips/s", infer[b], ",.0f", True) for b in INFER_BATCHES[1:]]
    table(header, rows)
    print("(kws: 128 frames, the recipe's crop/pad; NeMo 3.0.0: 101 frames, its crop/pad is never applied)")

    med = {name: {s: statistics.median(v[s]) for s in SIDES} for name, v in [("train", train)]}
    med.update({str(b): {s: statistics.median(infer[b][s]) for s in SIDES} for b in INFER_BATCHES})
    train_x = med["train"]["kws"] / med["train"]["NeMo"]
    print("\ntargets (issue 16, item 2):")
    print(f"  training >= 3x NeMo: {train_x:.2f}x, {verdict(train_x >= 3)}")
    for b in INFER_BATCHES[1:]:
        x = med[str(b)]["kws"] / med[str(b)]["NeMo"]
        print(f"  inference at batch {b} >= 3x NeMo: {x:.2f}x, {verdict(x >= 3)}")
    kws_ms = med["1"]["kws"]
    print(f"  kws batch-1 latency <= 0.5 ms: {kws_ms:.3f} ms, {verdict(kws_ms <= 0.5)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nemo-python", help="the interpreter of a venv with nemo-toolkit[asr] (see above)")
    parser.add_argument(
        "--nemo-config", type=Path, help="NeMo's matchboxnet_3x1x64_v1.yaml (default: built in)"
    )
    parser.add_argument(
        "--nemo-workers", type=int, default=0, help="NeMo's DataLoader workers (its default: 0)"
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/vs_nemo"), help="data, caches, worker logs")
    parser.add_argument("--clips", type=int, default=5120, help="generated 1 s wavs (30 labels)")
    parser.add_argument("--seed", type=int, default=0, help="of the generated data")
    parser.add_argument(
        "--threads", type=int, default=len(os.sched_getaffinity(0)), help="default: all cores"
    )
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed training steps per round")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per round")
    parser.add_argument("--calls", type=int, default=400, help="batch-1 calls per side and round")
    args = parser.parse_args()

    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"machine: {machine()}")
    missing = nemo_missing(args.nemo_python)
    if missing:
        print(f"skipped: {missing}. NeMo is not a kws dependency; to compare, make its own environment:")
        print("    python3 -m venv /tmp/nemo-venv")
        print(
            '    /tmp/nemo-venv/bin/pip install torch==2.11.0 torchaudio==2.11.0 "nemo-toolkit[asr]==3.0.0"'
        )
        print("    .venv/bin/python bench/vs_nemo.py --nemo-python /tmp/nemo-venv/bin/python")
        return
    if args.warmup < 1 or args.steps < 1 or args.warmup + args.steps > args.clips // BATCH:
        # Inside one epoch: an epoch's end adds kws's checkpoint to the timed steps and not NeMo's.
        parser.error(f"need 1 <= --warmup, 1 <= --steps, warmup + steps <= clips // {BATCH} (one epoch)")
    args.work.mkdir(parents=True, exist_ok=True)
    manifest = make_data(args.work / "data", args.clips, args.seed)
    print(
        f"MatchboxNet-3x1x64, CPU, float32, batch {BATCH}, {args.threads} torch threads on each side; "
        f"{args.clips} clips, data seed {args.seed}, model seed 0 ({manifest}); "
        f"{args.rounds} alternating rounds of: training {args.warmup} "
        f"warm-up + {args.steps} timed steps; inference {args.calls} batch-1 calls, "
        f"{n_calls(args.calls, 32)} of batch 32, {n_calls(args.calls, 128)} of batch 128; NeMo config: "
        f"{args.nemo_config or 'bench/nemo_reference.py + the YAML augmentor'}, "
        f"DataLoader workers {args.nemo_workers}"
    )
    nemo_extra = ["--nemo-workers", str(args.nemo_workers)]
    nemo_extra += ["--nemo-config", str(args.nemo_config.resolve())] if args.nemo_config else []
    workers = {
        "kws": Worker("kws", sys.executable, [], args, manifest),
        "NeMo": Worker("NeMo", args.nemo_python, nemo_extra, args, manifest),
    }
    try:
        run(args, workers)
    finally:
        for w in workers.values():
            w.close()


if __name__ == "__main__":
    main()
