"""The training data: packed datasets and batches drawn from them without per-clip Python work.

Packed datasets: a manifest decoded once into one int16 array, cached on disk and memory-mapped later.
Re-decoding every wav file every epoch is what bounds the reference recipe on a GPU. Here each manifest is
decoded once into `audio.npy` (unique clips padded with zeros to the longest, `(n_unique, max_samples)`),
plus the clip lengths, a per-line index into the unique rows (rebalanced manifests repeat lines) and the
label ids. The cache folder is keyed by the manifest's content hash and the label list, so an edited
manifest or another label order gets a fresh cache, and an unchanged one is never decoded again.

The order of an epoch is a permutation drawn from a generator seeded by (seed, epoch), cut into global
batches of `batch_size * world` clips; rank r takes columns r*batch_size..(r+1)*batch_size of each, so ranks
see disjoint clips and one process with the global batch sees exactly the same clips. Random augmentation
draws come from a generator seeded by (seed, step, rank). Both depend only on integers a checkpoint stores,
so a resumed run draws exactly what a straight run draws.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kws.audio import INT16_SCALE, read_wav, wav_frames
from kws.console import item_progress
from kws.errors import DataError
from kws.manifest import Entry, read_manifest

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


FORMAT_VERSION = 1  # bump when the cache layout changes, so old caches are rebuilt
AUDIO_FILE = "audio.npy"
META_FILE = "meta.npz"
INFO_FILE = "info.json"  # written last: its presence marks a complete cache


@dataclass
class PackedSet:
    """One manifest, decoded. `audio[index[i]][: lengths[index[i]]]` is the clip of manifest line `i`."""

    audio: np.ndarray  # (n_unique, max_samples) int16, memory-mapped copy-on-write
    lengths: np.ndarray  # (n_unique,) int64 samples
    index: np.ndarray  # (n_lines,) int64 row of `audio` for each manifest line
    label_ids: np.ndarray  # (n_lines,) int64 position in `labels`
    labels: list[str]
    paths: list[str]  # (n_lines,) audio_filepath of each manifest line
    manifest: Path
    cache: Path  # the folder holding the arrays
    built: bool  # True when this call decoded the audio, False when it reused the cache

    def __len__(self) -> int:
        return len(self.index)

    @property
    def n_unique(self) -> int:
        return int(self.audio.shape[0])


def load_packed(
    manifest: Path, cache_dir: Path, labels: list[str] | None = None, workers: int | None = None
) -> PackedSet:
    """Decode `manifest` into a cache under `cache_dir` (once) and memory-map it.

    `labels=None` uses the sorted labels of the manifest; otherwise a clip whose label is not in `labels` is
    a DataError naming it. A clip path that does not exist is a DataError naming it and the manifest."""
    manifest = Path(manifest)
    entries = read_manifest(manifest)
    if labels is None:
        labels = sorted({e.label for e in entries})
    else:
        _check_labels(entries, labels, manifest)
    key = _cache_key(manifest, labels)
    folder = Path(cache_dir) / f"{manifest.stem}-{key[:16]}"
    built = False
    if not (folder / INFO_FILE).is_file():
        _build(entries, labels, manifest, folder, workers)
        built = True
    return _open(folder, manifest, built)


def _check_labels(entries: list[Entry], labels: list[str], manifest: Path) -> None:
    known = set(labels)
    unknown = sorted({e.label for e in entries if e.label not in known})
    if unknown:
        first = next(e for e in entries if e.label not in known)
        raise DataError(
            f"{manifest} has labels the model does not know: {', '.join(unknown)} "
            f"(e.g. {first.audio_filepath}); the labels are {', '.join(labels)}. Fix the manifest or list "
            "every label in data.labels"
        )


def _cache_key(manifest: Path, labels: list[str]) -> str:
    h = hashlib.sha256()
    h.update(f"kws-packed-v{FORMAT_VERSION}\n".encode())
    h.update(json.dumps(labels).encode())
    h.update(manifest.read_bytes())
    return h.hexdigest()


def _build(
    entries: list[Entry], labels: list[str], manifest: Path, folder: Path, workers: int | None
) -> None:
    """Decode the unique clips of `entries` in parallel into a temporary folder, then rename it."""
    unique: dict[str, int] = {}
    for e in entries:
        unique.setdefault(e.audio_filepath, len(unique))
    paths = list(unique)
    for p in paths:
        if not os.path.isfile(p):
            raise DataError(
                f"clip {p} listed in {manifest} does not exist; re-run `kws prepare` or fix the manifest"
            )
    n_workers = workers or min(32, (os.cpu_count() or 1) * 2)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        # libsndfile releases the GIL: threads decode in parallel, with no arrays pickled between processes.
        with ThreadPoolExecutor(n_workers) as pool:
            lengths = np.fromiter(pool.map(wav_frames, paths, chunksize=64), dtype=np.int64, count=len(paths))
            max_len = max(int(lengths.max()), 1)
            audio = np.lib.format.open_memmap(
                tmp / AUDIO_FILE, mode="w+", dtype=np.int16, shape=(len(paths), max_len)
            )

            def decode(row: int) -> None:
                clip = read_wav(Path(paths[row]))
                audio[row, : len(clip)] = clip
                lengths[row] = len(clip)  # the header can overstate a truncated file; trust the samples

            with item_progress("clips", transient=True) as progress:
                task = progress.add_task(f"decoding {manifest.name}", total=len(paths))
                for _ in pool.map(decode, range(len(paths))):
                    progress.advance(task)
            audio.flush()
        label_of = {name: i for i, name in enumerate(labels)}
        index = np.array([unique[e.audio_filepath] for e in entries], dtype=np.int64)
        label_ids = np.array([label_of[e.label] for e in entries], dtype=np.int64)
        np.savez(tmp / META_FILE, lengths=lengths, index=index, label_ids=label_ids)
        info = {
            "format": FORMAT_VERSION,
            "manifest": str(manifest.resolve()),
            "labels": labels,
            "paths": [e.audio_filepath for e in entries],
            "n_unique": len(paths),
            "max_samples": max_len,
        }
        (tmp / INFO_FILE).write_text(json.dumps(info), encoding="utf-8")
        if (folder / INFO_FILE).is_file():  # another process finished the same cache meanwhile: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
            return
        shutil.rmtree(folder, ignore_errors=True)  # an incomplete cache from an interrupted build
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _open(folder: Path, manifest: Path, built: bool) -> PackedSet:
    try:
        info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
        meta = np.load(folder / META_FILE)
        # Copy-on-write: torch.from_numpy needs a writable array; pages are still shared and read lazily.
        audio = np.load(folder / AUDIO_FILE, mmap_mode="c")
        lengths, index, label_ids = meta["lengths"], meta["index"], meta["label_ids"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(
            f"the packed cache {folder} is damaged ({exc}); delete the folder and run again"
        ) from None
    return PackedSet(
        audio=audio,
        lengths=lengths,
        index=index,
        label_ids=label_ids,
        labels=list(info["labels"]),
        paths=list(info["paths"]),
        manifest=manifest,
        cache=folder,
        built=built,
    )
