"""Batches from a packed dataset without per-clip Python work.

The order of an epoch is a permutation drawn from a generator seeded by (seed, epoch), cut into global
batches of `batch_size * world` clips; rank r takes columns r*batch_size..(r+1)*batch_size of each, so ranks
see disjoint clips and one process with the global batch sees exactly the same clips. Random augmentation
draws come from a generator seeded by (seed, step, rank). Both depend only on integers a checkpoint stores,
so a resumed run draws exactly what a straight run draws.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from kws.audio import INT16_SCALE
from kws.packed import PackedSet

_ORDER_STREAM = 1  # separate streams of randomness derived from one seed
_AUGMENT_STREAM = 2
DEVICE_HEADROOM_BYTES = 4 << 30  # leave this much GPU memory for the model, activations and the allocator


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (SeedSequence hashing: nearby inputs give unrelated seeds)."""
    state = np.random.SeedSequence([p & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


def steps_per_epoch(n_clips: int, batch_size: int, world: int) -> int:
    """Full global batches per epoch (the remainder is dropped; a set smaller than one batch wraps around)."""
    return max(1, n_clips // (batch_size * world))


def epoch_order(n_clips: int, batch_size: int, world: int, seed: int, epoch: int) -> Tensor:
    """Clip ids `(steps, world, batch_size)` of one epoch; `[s, r]` is rank r's batch at step s."""
    generator = torch.Generator().manual_seed(derive_seed(seed, _ORDER_STREAM, epoch))
    perm = torch.randperm(n_clips, generator=generator)
    steps = steps_per_epoch(n_clips, batch_size, world)
    need = steps * batch_size * world
    if need > n_clips:  # tiny sets: wrap around the permutation
        perm = perm.repeat(math.ceil(need / n_clips))
    return perm[:need].view(steps, world, batch_size)


class StepGenerator:
    """One generator on the training device, re-seeded from (seed, step, rank) before every step."""

    def __init__(self, seed: int, rank: int, device: torch.device) -> None:
        self.seed, self.rank = seed, rank
        self.generator = torch.Generator(device=device)

    def at(self, step: int) -> torch.Generator:
        return self.generator.manual_seed(derive_seed(self.seed, _AUGMENT_STREAM, step, self.rank))


def fits_on_device(n_bytes: int, device: torch.device) -> bool:
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return n_bytes + DEVICE_HEADROOM_BYTES < free


class ClipSet:
    """A packed set as tensors. The audio stays memory-mapped on the host unless `on_device` places it on
    the (CUDA) training device; either way `batch` is a few tensor gathers, with no per-clip Python."""

    def __init__(self, packed: PackedSet, device: torch.device, on_device: bool = False) -> None:
        self.device = device
        audio = torch.from_numpy(packed.audio)  # (n_unique, max_samples) int16
        store = device if (on_device or device.type == "cpu") else torch.device("cpu")
        self.audio = audio.to(store)
        self.lengths = torch.from_numpy(packed.lengths).to(store)
        self.index = torch.from_numpy(packed.index).to(store)
        self.label_ids = torch.from_numpy(packed.label_ids).to(store)
        self.labels = packed.labels
        self.n_clips = len(packed)

    @property
    def on_device(self) -> bool:
        return self.audio.device == self.device

    def batch(self, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Clips `ids` (batch,) -> audio `(batch, max_samples)` float32 in [-1, 1), lengths `(batch,)` in
        samples, label ids `(batch,)`, all on the training device."""
        ids = ids.to(self.audio.device, non_blocking=True)
        rows = self.index[ids]
        audio, lengths, labels = self.audio[rows], self.lengths[rows], self.label_ids[ids]
        if not self.on_device:  # host store, CUDA training: one pinned copy per tensor
            audio, lengths, labels = (
                t.pin_memory().to(self.device, non_blocking=True) for t in (audio, lengths, labels)
            )
        return audio.float().mul_(1.0 / INT16_SCALE), lengths, labels

    def eval_batches(self, batch_size: int, rank: int, world: int) -> list[Tensor]:
        """Consecutive batches of clip ids covering the set once, dealt round-robin to the ranks."""
        chunks = torch.arange(self.n_clips).split(batch_size)
        return list(chunks[rank::world])
