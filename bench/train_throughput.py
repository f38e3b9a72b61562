"""Training throughput of kws against a loop that works like the reference, side by side in one run.

Full training steps (augmentation + features + forward + backward + Novograd) of MatchboxNet-3x1x64 at batch
128, in clips per second:
- kws: the packed, memory-mapped dataset, batches gathered without per-clip Python, augmentation, MFCC,
  crop/pad and SpecAugment batched on the device, kws's model: exactly `kws.train.loop.train_step`.
- baseline, as the reference (NeMo 1.x) does it: a DataLoader with 2 workers that reads every wav with
  soundfile each epoch and applies shift + white noise per clip, padding in collate; torchaudio MFCC and
  crop/pad on the batch; SpecAugment with a Python loop over clips; a plain model of nn.Conv1d layers in the
  same layout (masking the input of every convolution, as NeMo's MaskedConv1d does); the same Novograd.

    python bench/train_throughput.py                          # CPU, kws vs baseline
    python bench/train_throughput.py --device cuda --precision bf16
    python bench/train_throughput.py --device cuda --precision bf16 --epoch-clips 51088   # one v1-sized epoch
    python bench/train_throughput.py --skip-baseline --profile 5     # where a kws step spends its time

Synthetic 1 s clips (tones in noise, 30 labels) are written to a temporary folder. Not a test.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from kws.audio import SAMPLE_RATE, float_to_int16, write_wav
from kws.config import Config, load_config
from kws.data import ClipSet, StepGenerator, epoch_order, load_packed
from kws.manifest import Entry, read_manifest, write_manifest
from kws.model import build_model
from kws.optim import build_optimizer, build_scheduler
from kws.train.device import set_cpu_threads
from kws.train.loop import TrainInputs, train_step

REPO = Path(__file__).resolve().parents[1]
N_LABELS = 30


def make_dataset(folder: Path, n_unique: int, n_lines: int) -> Path:
    """`n_unique` wav files of 1 s; a manifest of `n_lines` lines over them (repeated when larger)."""
    rng = np.random.default_rng(0)
    entries = []
    for i in range(n_unique):
        label = f"w{i % N_LABELS:02d}"
        t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
        audio = 0.3 * np.sin(2 * np.pi * (200 + 60 * (i % N_LABELS)) * t) + rng.normal(0, 0.02, SAMPLE_RATE)
        path = folder / label / f"{i}.wav"
        write_wav(path, float_to_int16(audio))
        entries.append(Entry(str(path), 1.0, label))
    manifest = folder / "train_manifest.json"
    write_manifest(manifest, [entries[i % n_unique] for i in range(n_lines)])
    return manifest


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- kws
class KwsLoop:
    """kws's training step, fed by the packed dataset; `run(n)` times n steps."""

    def __init__(self, cfg: Config, manifest: Path, cache: Path, device: torch.device) -> None:
        packed = load_packed(manifest, cache)
        self.clips = ClipSet(packed, device, on_device=device.type == "cuda")
        torch.manual_seed(0)
        self.model = build_model(cfg.model, cfg.features.n_mfcc, len(packed.labels)).to(device)
        self.inputs = TrainInputs(cfg).to(device)
        self.optimizer = build_optimizer(self.model.parameters(), cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, 10_000)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.trainer.precision == "16")
        self.generator = StepGenerator(0, 0, device)
        self.cfg, self.device, self.step = cfg, device, 0
        self.batch = cfg.trainer.batch_size
        self.loss = torch.zeros((), device=device)

    def run(self, n: int) -> float:
        sync(self.device)
        start = time.perf_counter()
        for _ in range(n):
            epoch, k = divmod(self.step, self.clips.n_clips // self.batch)
            ids = epoch_order(self.clips.n_clips, self.batch, 1, 0, epoch)[k, 0]
            batch = self.clips.batch(ids)
            self.loss += train_step(
                self.model,
                self.inputs,
                self.optimizer,
                self.scheduler,
                self.scaler,
                batch,
                self.generator.at(self.step),
                self.cfg.trainer.precision,
            )
            self.step += 1
        assert math.isfinite(float(self.loss))  # kws syncs only at log lines; here once a round
        return time.perf_counter() - start


# ---------------------------------------------------------------- baseline, the reference's way
class WavDataset(torch.utils.data.Dataset):
    """Reads and perturbs one clip per item, in the DataLoader workers (NeMo's AudioToSpeechLabelDataset)."""

    def __init__(self, entries: list[tuple[str, int]]) -> None:
        self.entries = entries

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        path, label = self.entries[i]
        audio, _ = sf.read(path, dtype="float32")
        shift = int(np.random.uniform(-5, 5) * SAMPLE_RATE / 1000)  # ShiftPerturbation
        audio = np.roll(audio, -shift)
        if shift > 0:
            audio[-shift:] = 0
        elif shift < 0:
            audio[:-shift] = 0
        level = np.random.randint(-90, -46)  # WhiteNoisePerturbation
        audio = audio + np.random.randn(len(audio)).astype(np.float32) * 10.0 ** (level / 20)
        return torch.from_numpy(audio), label


def collate(batch: list[tuple[Tensor, int]]) -> tuple[Tensor, Tensor, Tensor]:
    lengths = torch.tensor([len(a) for a, _ in batch])
    audio = torch.zeros(len(batch), int(lengths.max()))
    for i, (a, _) in enumerate(batch):
        audio[i, : len(a)] = a
    return audio, lengths, torch.tensor([label for _, label in batch])


def spec_augment_loop(x: Tensor) -> Tensor:
    """SpecCutout + SpecAugment with a Python loop over clips, as NeMo 1.x's modules."""
    x = x.clone()
    b, n_feat, n_time = x.shape
    for i in range(b):
        for _ in range(5):
            f0, t0 = int(np.random.randint(0, n_feat - 15)), int(np.random.randint(0, n_time - 25))
            x[i, f0 : f0 + int(np.random.randint(0, 16)), t0 : t0 + int(np.random.randint(0, 26))] = 0
        for _ in range(2):
            f0 = int(np.random.randint(0, n_feat - 15))
            x[i, f0 : f0 + int(np.random.randint(0, 16)), :] = 0
            t0 = int(np.random.randint(0, n_time - 25))
            x[i, :, t0 : t0 + int(np.random.randint(0, 26))] = 0
    return x


class PlainBlock(nn.Module):
    """Separable conv -> BN (+ residual 1x1 conv -> BN) -> ReLU with plain nn.Conv1d, input masked."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, dilation: int, residual: bool, separable: bool
    ) -> None:
        super().__init__()
        pad = dilation * (kernel - 1) // 2
        self.dw = (
            nn.Conv1d(c_in, c_in, kernel, padding=pad, dilation=dilation, groups=c_in, bias=False)
            if separable
            else None
        )
        self.pw = nn.Conv1d(
            c_in, c_out, 1 if separable else kernel, padding=0 if separable else pad, bias=False
        )
        self.bn = nn.BatchNorm1d(c_out, eps=1e-3)
        self.res = (
            nn.Sequential(nn.Conv1d(c_in, c_out, 1, bias=False), nn.BatchNorm1d(c_out, eps=1e-3))
            if residual
            else None
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        y = x * mask
        if self.dw is not None:
            y = self.dw(y) * mask
        y = self.bn(self.pw(y))
        if self.res is not None:
            y = y + self.res(x * mask)
        return F.relu(y)


class PlainModel(nn.Module):
    def __init__(self, n_classes: int) -> None:
        super().__init__()
        layout = [
            (64, 128, 11, 1, False, True),
            (128, 64, 13, 1, True, True),
            (64, 64, 15, 1, True, True),
            (64, 64, 17, 1, True, True),
            (64, 128, 29, 2, False, True),
            (128, 128, 1, 1, False, False),
        ]
        self.blocks = nn.ModuleList(PlainBlock(*b) for b in layout)
        self.head = nn.Linear(128, n_classes)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        mask = (torch.arange(x.shape[-1], device=x.device) < lengths[:, None])[:, None, :].float()
        for block in self.blocks:
            x = block(x, mask)
        return self.head(x.mean(-1))


class BaselineLoop:
    """The reference's way; `run(n)` times n steps. The DataLoader's workers keep decoding in the background
    (also while kws is timed), so each round first drains the batches they prefetched, untimed."""

    def __init__(self, cfg: Config, manifest: Path, device: torch.device) -> None:
        entries = read_manifest(manifest)
        labels = sorted({e.label for e in entries})
        dataset = WavDataset([(e.audio_filepath, labels.index(e.label)) for e in entries])
        self.loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=cfg.trainer.batch_size,
            shuffle=True,
            num_workers=2,
            collate_fn=collate,
            drop_last=True,
            persistent_workers=True,
            prefetch_factor=2,
        )
        self.prefetched = 2 * 2  # prefetch_factor * num_workers
        self.batches = self._forever()
        self.mfcc = torchaudio.transforms.MFCC(
            sample_rate=SAMPLE_RATE,
            n_mfcc=64,
            dct_type=2,
            norm="ortho",
            log_mels=True,
            melkwargs=dict(n_fft=512, win_length=400, hop_length=160, n_mels=64, window_fn=torch.hann_window),
        ).to(device)
        torch.manual_seed(0)
        self.model = PlainModel(len(labels)).to(device)
        self.optimizer = build_optimizer(self.model.parameters(), cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, 10_000)
        self.amp = {"bf16": torch.bfloat16, "16": torch.float16}.get(cfg.trainer.precision)
        self.device = device

    def _forever(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        while True:
            yield from self.loader

    def _step(self) -> None:
        audio, lengths, targets = (t.to(self.device) for t in next(self.batches))
        with torch.no_grad():
            feats = self.mfcc(audio)
            pad = 128 - feats.shape[-1]  # crop/pad the batch to 128 frames
            feats = F.pad(feats, (pad // 2, pad - pad // 2)) if pad > 0 else feats[..., :128]
            feats = spec_augment_loop(feats)
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            logits = self.model(feats, torch.full_like(lengths, 128))
        loss = F.cross_entropy(logits.float(), targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        loss.detach().item()  # the reference logs the loss every step

    def run(self, n: int) -> float:
        for _ in range(self.prefetched):
            self._step()
        sync(self.device)
        start = time.perf_counter()
        for _ in range(n):
            self._step()
        sync(self.device)
        return time.perf_counter() - start


# ---------------------------------------------------------------- one epoch through `kws train`
def time_one_epoch(cfg: Config, manifest: Path, run_dir: Path) -> None:
    import dataclasses

    from kws.train.loop import train

    cfg = dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, train_manifest=str(manifest), val_manifests=())
    )
    cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, epochs=1))
    result = train(cfg, run_dir)
    print(
        f"one epoch of {result.steps * cfg.trainer.batch_size} clips through `kws train`: "
        f"{result.train_s:.2f} s of training steps ({result.clips_per_s:,.0f} clips/s), "
        f"{result.total_s:.2f} s in all (cache, checkpoint, curves)"
    )


def profile_steps(loop: KwsLoop | BaselineLoop, n: int, device: torch.device) -> None:
    """Where a kws training step spends its time: torch.profiler's operator table over `n` steps."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        loop.run(n)
    averages = prof.key_averages()
    if device.type == "cuda":
        print(averages.table(sort_by="self_cuda_time_total", row_limit=20))
        # A small model's GPU step is bound by the host issuing kernels: where the host's time goes
        print(averages.table(sort_by="self_cpu_time_total", row_limit=20))
        syncs = {
            "cudaStreamSynchronize",
            "cudaDeviceSynchronize",
            "cudaEventSynchronize",
            "aten::_local_scalar_dense",
        }
        counts = {e.key: e.count for e in averages if e.key in syncs}
        launches = sum(
            e.count
            for e in averages
            if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC")
        )
        per_step = ", ".join(f"{k} {v / n:g}" for k, v in sorted(counts.items())) or "none"
        print(f"per step: {launches / n:g} kernel launches; host syncs: {per_step}")
    else:
        print(averages.table(sort_by="self_cpu_time_total", row_limit=20))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="32", choices=["32", "bf16", "16"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--clips", type=int, default=1024, help="unique wav files to write")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, alternating kws and baseline")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument(
        "--epoch-clips",
        type=int,
        default=None,
        help="also time one epoch of this many clips through `kws train` (51088 = v1)",
    )
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="also print torch.profiler's table of N kws steps"
    )
    args = parser.parse_args()

    device = torch.device(args.device)
    threads = set_cpu_threads()
    cfg = load_config(
        REPO / "configs" / "matchboxnet_3x1x64_v1.yaml",
        [
            f"trainer.precision={args.precision!r}",
            f"trainer.batch_size={args.batch_size}",
            f"trainer.device={args.device}",
            "trainer.log_every_n_steps=50",
        ],
    )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {threads} threads"
    print(
        f"device: {name}; MatchboxNet-3x1x64, batch {args.batch_size}, precision {args.precision}, "
        f"{args.rounds} rounds of {args.steps} timed steps each, after {args.warmup} warm-up steps"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = make_dataset(folder / "data", args.clips, args.clips)
        loops: dict[str, KwsLoop | BaselineLoop] = {"kws": KwsLoop(cfg, manifest, folder / "cache", device)}
        if not args.skip_baseline:
            loops["baseline"] = BaselineLoop(cfg, manifest, device)
        for loop in loops.values():
            loop.run(args.warmup)
        # Rounds alternate between the two, so that a change in machine load affects both alike.
        rates: dict[str, list[float]] = {name: [] for name in loops}
        for _ in range(args.rounds):
            for name, loop in loops.items():
                rates[name].append(args.steps * args.batch_size / loop.run(args.steps))
        for name, r in rates.items():
            rounds = ", ".join(f"{x:.0f}" for x in r)
            print(f"{name + ':':10s}{statistics.median(r):8.1f} clips/s  (median of rounds: {rounds})")
        if "baseline" in rates:
            ratio = statistics.median(rates["kws"]) / statistics.median(rates["baseline"])
            print(f"ratio:    {ratio:8.2f}x")
        if args.profile:
            profile_steps(loops["kws"], args.profile, device)
        if args.epoch_clips:
            epoch_manifest = make_dataset(
                folder / "epoch", min(args.clips, args.epoch_clips), args.epoch_clips
            )
            time_one_epoch(cfg, epoch_manifest, folder / "run")


if __name__ == "__main__":
    main()
