"""One side of bench/vs_nemo.py (kws or NVIDIA NeMo), run in that side's own interpreter.

    <python> bench/vs_nemo_worker.py --side kws|nemo --work DIR --manifest FILE --threads N

Reads one JSON command a line on stdin and answers each with one line `@@ <json>` on stdout (anything else on
stdout is the libraries' own chatter). Both sides run this same timing code, so they are measured alike:

- train: a fresh model trained for `warmup + steps` optimizer steps; a timestamp after every step (kws: the
  `on_step` hook of `kws.train.loop.train`, what `kws train` runs; NeMo: a Lightning callback's
  `on_train_batch_end`, which Lightning calls after the optimizer step). Throughput = steps x batch / (time
  of the last step - time of step `warmup`): the warm-up steps and everything before and after (model
  build, data setup, kws's checkpoint) are left out.
- infer: `model.eval()`, `torch.inference_mode()`, one forward over a (batch, 16000) float32 batch of 1 s
  clips per call, timed call by call.

The NeMo side imports only NeMo, Lightning, torch, numpy and bench/nemo_reference.py (its config of
matchboxnet_3x1x64_v1.yaml); the kws side only kws and torch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SAMPLE_RATE = 16_000  # Hz
CLIP_SAMPLES = SAMPLE_RATE  # 1 s clips
INFER_CLIPS = 128  # the largest inference batch; smaller batches take its first rows
Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (batch, samples), (batch,) -> logits


# ---------------------------------------------------------------- kws
def kws_train(work: Path, manifest: Path, n_steps: int, batch: int) -> list[float]:
    """`kws train` of the recipe config at --precision 32 --device cpu; a timestamp after every step."""
    import dataclasses

    from kws.config import load_config
    from kws.train.loop import train

    overrides = ["trainer.precision='32'", "trainer.device=cpu", f"trainer.max_steps={n_steps}"]
    cfg = load_config(
        REPO / "configs" / "matchboxnet_3x1x64_v1.yaml", [*overrides, f"trainer.batch_size={batch}"]
    )
    # The packed cache is decoded once (first round) and shared by the later rounds, as a rerun would.
    data = dataclasses.replace(
        cfg.data, train_manifest=str(manifest), val_manifests=(), cache_dir=str(work / "kws_cache")
    )
    stamps: list[float] = []
    train(
        dataclasses.replace(cfg, data=data), work / "kws_run", overwrite=True, on_step=lambda _: stamp(stamps)
    )
    return stamps


def kws_forward(work: Path, labels: list[str]) -> Forward:
    """kws's inference path: a checkpoint of the recipe's model (random weights, seed 0) loaded with
    `kws.checkpoint.load_for_inference`, then features + model (as kws.export.parity.reference_probs)."""
    from kws.checkpoint import load_for_inference, rng_state, save_checkpoint
    from kws.config import config_to_dict, load_config
    from kws.model import build_model

    cfg = load_config(REPO / "configs" / "matchboxnet_3x1x64_v1.yaml")
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.features.n_mfcc, len(labels))
    path = work / "kws_random.pt"
    state = {"config": config_to_dict(cfg), "labels": labels, "model": model.state_dict(), "step": 0}
    save_checkpoint(path, {**state, "epoch": 0, "rng": rng_state()})
    loaded = load_for_inference(path, torch.device("cpu"))

    def forward(audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        feats, feat_lengths = loaded.features(audio, lengths)
        return loaded.model(feats, feat_lengths)

    return forward


# ---------------------------------------------------------------- NeMo
def nemo_config(
    labels: list[str], manifest: Path | None, yaml_path: Path | None, workers: int
) -> dict[str, Any]:
    """The `model:` section of matchboxnet_3x1x64_v1.yaml (read from `yaml_path`, else the values
    bench/nemo_reference.py carries, plus the YAML's train augmentor), with our manifest and labels."""
    from omegaconf import OmegaConf

    if yaml_path is not None:
        full = OmegaConf.load(yaml_path)
        full.model.train_ds.manifest_filepath = None  # `???` (mandatory) in the YAML: resolve cannot pass it
        full.model.validation_ds.manifest_filepath = None
        cfg: dict[str, Any] = OmegaConf.to_container(full.model, resolve=True)  # type: ignore[assignment]
    else:
        sys.path.insert(0, str(BENCH))
        from nemo_reference import model_config

        cfg = model_config(labels, repeat=1)
        cfg["train_ds"]["augmentor"] = {
            "shift": {"prob": 1.0, "min_shift_ms": -5.0, "max_shift_ms": 5.0},
            "white_noise": {"prob": 1.0, "min_level": -90, "max_level": -46},
        }
    cfg["labels"] = labels
    for name in ("train_ds", "validation_ds", "test_ds"):
        cfg[name].update(labels=labels, manifest_filepath=None)
        cfg[name].pop("pin_memory", None)  # CPU only: nothing to pin for
    cfg["train_ds"].update(manifest_filepath=str(manifest) if manifest else None, num_workers=workers)
    return cfg


def nemo_train(work: Path, cfg: dict[str, Any], n_steps: int) -> list[float]:
    """NeMo's EncDecClassificationModel trained by a plain Lightning Trainer (CPU, float32, no logger, no
    checkpoints, no validation); a timestamp after every step."""
    import lightning.pytorch as pl
    from nemo.collections.asr.models import EncDecClassificationModel
    from omegaconf import OmegaConf

    stamps: list[float] = []

    class Stamps(pl.Callback):
        def on_train_batch_end(self, *args: Any) -> None:  # after the optimizer step
            stamp(stamps)

    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision="32-true",
        max_steps=n_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        log_every_n_steps=1,  # the YAML's trainer section
        callbacks=[Stamps()],
        default_root_dir=str(work / "nemo_run"),
    )
    torch.manual_seed(0)
    model = EncDecClassificationModel(cfg=OmegaConf.create(cfg), trainer=trainer)
    trainer.fit(model)
    return stamps


def nemo_forward(cfg: dict[str, Any]) -> Forward:
    """NeMo's own `model.forward(input_signal, input_signal_length)`; 3.0.0 skips crop/pad: 101 frames."""
    from nemo.collections.asr.models import EncDecClassificationModel
    from omegaconf import OmegaConf

    torch.manual_seed(0)
    model = EncDecClassificationModel(cfg=OmegaConf.create(cfg)).eval()

    def forward(audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return model.forward(input_signal=audio, input_signal_length=lengths)

    return forward


# ---------------------------------------------------------------- the same clock for both sides
def stamp(stamps: list[float]) -> None:
    stamps.append(time.perf_counter())


def train_rate(stamps: list[float], warmup: int, steps: int, batch: int) -> dict[str, float]:
    if len(stamps) != warmup + steps:
        raise RuntimeError(f"expected {warmup + steps} step timestamps, got {len(stamps)}")
    seconds = stamps[-1] - stamps[warmup - 1]
    return {"clips_per_s": steps * batch / seconds, "seconds": seconds, "threads": torch.get_num_threads()}


def infer_clips(seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """INFER_CLIPS clips of 1 s (tones in noise), the same on both sides: (clips, samples), (clips,)."""
    rng = np.random.default_rng(seed)
    t = np.arange(CLIP_SAMPLES) / SAMPLE_RATE  # s
    f_hz = rng.uniform(150, 3000, size=(INFER_CLIPS, 1))
    audio = 0.3 * np.sin(2 * np.pi * f_hz * t) + 0.02 * rng.standard_normal((INFER_CLIPS, CLIP_SAMPLES))
    return torch.from_numpy(audio.astype(np.float32)), torch.full((INFER_CLIPS,), CLIP_SAMPLES)


def infer_rate(forward: Forward, batch: int, calls: int, warmup: int) -> dict[str, float]:
    """Median milliseconds per call and clips/s over `calls` calls of `batch` clips, after `warmup` calls.
    Batch 1 cycles through the clips, as a stream of windows would."""
    audio, lengths = infer_clips()
    times = []
    with torch.inference_mode():
        for i in range(warmup + calls):
            first = (i * batch) % INFER_CLIPS
            x, n = audio[first : first + batch], lengths[first : first + batch]
            start = time.perf_counter()
            forward(x, n)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return {
        "ms": 1000 * statistics.median(times),
        "clips_per_s": calls * batch / sum(times),
        "threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------- command loop
def versions(side: str) -> dict[str, Any]:
    info: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__}
    info["threads"] = torch.get_num_threads()
    if side == "nemo":
        import lightning
        import nemo

        info.update(nemo=nemo.__version__, lightning=lightning.__version__)
    return info


def serve(args: argparse.Namespace) -> None:
    labels = sorted({json.loads(line)["label"] for line in args.manifest.read_text().splitlines() if line})
    nemo_cfg = (
        nemo_config(labels, args.manifest, args.nemo_config, args.nemo_workers) if args.side == "nemo" else {}
    )
    forward: Forward | None = None
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "info":
            answer = versions(args.side)
        elif cmd["cmd"] == "train":
            n_steps = cmd["warmup"] + cmd["steps"]
            if args.side == "kws":
                stamps = kws_train(args.work, args.manifest, n_steps, cmd["batch"])
            else:
                stamps = nemo_train(args.work, nemo_cfg, n_steps)
            answer = train_rate(stamps, cmd["warmup"], cmd["steps"], cmd["batch"])
        elif cmd["cmd"] == "infer":
            if forward is None:
                forward = kws_forward(args.work, labels) if args.side == "kws" else nemo_forward(nemo_cfg)
            answer = infer_rate(forward, cmd["batch"], cmd["calls"], cmd["warmup"])
        else:
            return
        print("@@ " + json.dumps(answer), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--side", required=True, choices=["kws", "nemo"])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--nemo-config", type=Path, help="NeMo's matchboxnet_3x1x64_v1.yaml")
    parser.add_argument("--nemo-workers", type=int, default=0)
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    if args.threads < len(cores):
        # Fewer threads than cores: pin the process (and its DataLoader workers) to that many cores, which
        # `kws train` (kws.train.device.set_cpu_threads) also reads as its thread count.
        os.sched_setaffinity(0, cores[: args.threads])
    torch.set_num_threads(args.threads)
    if args.side == "kws":
        sys.path.insert(0, str(REPO))
    serve(args)


if __name__ == "__main__":
    main()
