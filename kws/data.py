"""The training data: packed datasets and batches drawn from them without per-clip Python work.

Packed datasets: a manifest decoded once into one int16 array, cached on disk and memory-mapped later.
Re-decoding every wav file every epoch is what bounds the reference recipe on a GPU. Here each manifest is
decoded once into `audio.npy`: the unique clips end to end, ragged (`(n_samples,)`, no padding, so one 10 s
clip costs its own 10 s and not 10x the set), plus each clip's offset and length, a per-line index into the
unique clips (rebalanced manifests repeat lines) and the label ids. The cache folder is keyed by the
manifest's content hash and the label list, so an edited manifest or another label order gets a fresh
cache, and an unchanged one is never decoded again.

The order of an epoch is a permutation drawn from a generator seeded by (seed, epoch), cut into global
batches of `batch_size * world` clips; rank r takes columns r*batch_size..(r+1)*batch_size of each, so ranks
see disjoint clips and one process with the global batch sees exactly the same clips. As in NeMo (and
PyTorch's default drop_last=False) the remainder is not dropped: the last step of an epoch is a short global
batch, split between the ranks as evenly as possible. Random augmentation draws come from a generator seeded
by (seed, step, rank). Both depend only on integers a checkpoint stores, so a resumed run draws exactly what
a straight run draws.
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
from typing import overload

import numpy as np
import torch
from torch import Tensor

from kws.audio import CLIP_S, CLIP_SAMPLES, INT16_SCALE, SAMPLE_RATE, read_wav, wav_frames
from kws.console import item_progress
from kws.errors import DataError
from kws.files import remove_stale_folders, temp_folder
from kws.manifest import Entry, check_labels, labels_of, read_manifest
from kws.masks import valid_mask

_ORDER_STREAM = 1  # separate streams of randomness derived from one seed
_AUGMENT_STREAM = 2
DEVICE_HEADROOM_BYTES = 4 << 30  # leave this much GPU memory for the model, activations and the allocator


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (SeedSequence hashing: nearby inputs give unrelated seeds)."""
    state = np.random.SeedSequence([p & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


def steps_per_epoch(n_clips: int, batch_size: int, world: int) -> int:
    """Global batches per epoch, the last one short when `batch_size * world` does not divide `n_clips`."""
    return max(1, math.ceil(n_clips / (batch_size * world)))


def clips_in_step(n_clips: int, batch_size: int, world: int, batch_index: int) -> int:
    """Clips of global batch `batch_index` of an epoch over all ranks: a full batch, or the short last one
    (topped up to one clip a rank, see `epoch_order`)."""
    global_batch = batch_size * world
    return min(global_batch, max(n_clips - batch_index * global_batch, world))


class Batches(list[Tensor]):
    """One rank's batches of clip ids for an epoch in step order, `(batch,)` each; the last may be shorter."""

    def to(self, device: torch.device) -> Batches:
        """The same batches on `device`, moved in one copy (views of one tensor)."""
        if not self:
            return Batches()
        moved = torch.cat(list(self)).to(device)
        return Batches(moved.split([len(b) for b in self]))


class EpochOrder:
    """Clip ids of one epoch: `order[s, r]` is rank r's batch `(batch,)` at step s and `order[:, r]` all of
    rank r's batches (`Batches`). Every step holds `batch_size` clips per rank, except the last of an epoch
    whose global batch is the remainder: rank r gets its share, the shares differing by at most one clip."""

    def __init__(self, steps: list[tuple[Tensor, ...]]) -> None:
        self.steps = steps  # one batch of clip ids per rank, for each step

    def __len__(self) -> int:
        return len(self.steps)

    @overload
    def __getitem__(self, key: tuple[int, int]) -> Tensor: ...
    @overload
    def __getitem__(self, key: tuple[slice, int]) -> Batches: ...
    def __getitem__(self, key: tuple[int | slice, int]) -> Tensor | Batches:
        step, rank = key
        if isinstance(step, slice):
            return Batches(shares[rank] for shares in self.steps[step])
        return self.steps[step][rank]


def epoch_order(n_clips: int, batch_size: int, world: int, seed: int, epoch: int) -> EpochOrder:
    """The order of clips `0..n_clips-1` in epoch `epoch`, cut into `steps_per_epoch` global batches.

    The last global batch holds the `n_clips % (batch_size * world)` remaining clips, split evenly (sizes
    differing by one). DDP needs every rank to take a step, so when fewer clips remain than there are ranks,
    the short batch is topped up to one clip a rank with clips from the start of the permutation (as
    torch's DistributedSampler pads): those few clips are seen twice in that epoch."""
    generator = torch.Generator().manual_seed(derive_seed(seed, _ORDER_STREAM, epoch))
    perm = torch.randperm(n_clips, generator=generator)
    global_batch = batch_size * world
    n_full = n_clips // global_batch
    full = perm[: n_full * global_batch].view(n_full, world, batch_size)
    rest = perm[n_full * global_batch :]
    steps = [tuple(shares.unbind(0)) for shares in full]
    if 0 < len(rest) < world:
        rest = torch.cat([rest, perm.repeat(math.ceil(world / n_clips))[: world - len(rest)]])
    if len(rest):
        steps.append(tuple(rest.tensor_split(world)))
    return EpochOrder(steps)


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
        store = device if (on_device or device.type == "cpu") else torch.device("cpu")
        # A flag, not a comparison of devices later: torch.device("cuda") != the cuda:0 a tensor reports.
        self.on_device = store is device
        self.audio = torch.from_numpy(packed.audio).to(store)  # (n_samples,) int16, the clips end to end
        self.offsets = torch.from_numpy(packed.offsets).to(store)
        self.lengths = torch.from_numpy(packed.lengths).to(store)
        self.index = torch.from_numpy(packed.index).to(store)
        self.label_ids = torch.from_numpy(packed.label_ids).to(store)
        # Each line's length on the host: the width of a batch of host ids is known without a device sync.
        self.line_lengths = torch.from_numpy(packed.lengths[packed.index])
        self.labels = packed.labels
        self.n_clips = len(packed)

    def batch(self, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Clips `ids` (batch,) -> audio `(batch, widest clip of the batch)` float32 in [-1, 1), zero-padded,
        lengths `(batch,)` in samples, label ids `(batch,)`, all on the training device.

        Ids on the host cost no device sync; ids on the device cost one (the batch width is a host number)."""
        store = self.audio.device
        if ids.device.type != "cpu" and store.type == "cpu":
            ids = ids.cpu()  # device ids, host store: the gathers happen on the host
        if ids.device.type == "cpu":
            width = int(self.line_lengths[ids].max())
        else:
            width = int(self.lengths[self.index[ids]].max())
        if ids.device != store:
            pinned = store.type == "cuda" and ids.device.type == "cpu"  # pinned: an asynchronous copy
            ids = ids.pin_memory().to(store, non_blocking=True) if pinned else ids.to(store)
        rows = self.index[ids]
        starts, lengths, labels = self.offsets[rows], self.lengths[rows], self.label_ids[ids]
        # One gather: sample t of clip k is audio[starts[k] + t]; positions past a clip's end become zeros.
        position = torch.arange(width, device=store)
        gather = (starts[:, None] + position).clamp_(max=self.audio.numel() - 1)
        audio = self.audio[gather].masked_fill_(~valid_mask(lengths, width), 0)
        if not self.on_device:  # host store, CUDA training: one pinned copy per tensor
            audio, lengths, labels = (
                t.pin_memory().to(self.device, non_blocking=True) for t in (audio, lengths, labels)
            )
        return audio.float().mul_(1.0 / INT16_SCALE), lengths, labels

    def eval_batches(self, batch_size: int, rank: int, world: int) -> list[Tensor]:
        """Consecutive batches of clip ids covering the set once, dealt round-robin to the ranks."""
        chunks = torch.arange(self.n_clips).split(batch_size)
        return list(chunks[rank::world])


FORMAT_VERSION = 2  # bump when the cache layout changes, so old caches are rebuilt (2: ragged audio)
AUDIO_FILE = "audio.npy"
META_FILE = "meta.npz"
INFO_FILE = "info.json"  # written last: its presence marks a complete cache


@dataclass
class PackedSet:
    """One manifest, decoded. `audio[offsets[u] : offsets[u] + lengths[u]]` with `u = index[i]` is the clip
    of manifest line `i`."""

    audio: np.ndarray  # (n_samples,) int16, the unique clips end to end, memory-mapped copy-on-write
    offsets: np.ndarray  # (n_unique,) int64 first sample of each unique clip in `audio`
    lengths: np.ndarray  # (n_unique,) int64 samples
    index: np.ndarray  # (n_lines,) int64 unique clip of each manifest line
    label_ids: np.ndarray  # (n_lines,) int64 position in `labels`
    labels: list[str]
    paths: list[str]  # (n_lines,) audio_filepath of each manifest line
    manifest: Path
    cache: Path  # the folder holding the arrays
    built: bool  # True when this call decoded the audio, False when it reused the cache
    stale_removed: int = 0  # unfinished cache folders of killed builds removed by this call

    def __len__(self) -> int:
        return len(self.index)

    @property
    def n_unique(self) -> int:
        return len(self.offsets)

    @property
    def n_long(self) -> int:
        """Unique clips longer than a Speech Commands clip (CLIP_S)."""
        return int((self.lengths > CLIP_SAMPLES).sum())

    def clip(self, line: int) -> np.ndarray:
        """The samples `(length,)` int16 of manifest line `line`."""
        u = self.index[line]
        return self.audio[self.offsets[u] : self.offsets[u] + self.lengths[u]]

    def summary(self) -> str:
        """One line for the user: what was loaded, from where, and anything unusual about it."""
        verb, prep = ("decoded", "into") if self.built else ("memory-mapped", "from")
        line = f"{verb} {self.manifest.name}: {len(self)} clips ({self.n_unique} unique) {prep} the packed "
        line += f"cache {self.cache}"
        if self.n_long:
            longest = float(self.lengths.max()) / SAMPLE_RATE
            clips = "1 clip is" if self.n_long == 1 else f"{self.n_long} clips are"
            line += f"; {clips} longer than {CLIP_S:g} s (the longest {longest:.1f} s): training crops them"
            line += " to features.n_frames"
        if self.stale_removed:
            folders = "folder" if self.stale_removed == 1 else "folders"
            line += f"; removed {self.stale_removed} unfinished cache {folders} left by interrupted runs"
        return line


def load_packed(
    manifest: Path, cache_dir: Path, labels: list[str] | None = None, workers: int | None = None
) -> PackedSet:
    """Decode `manifest` into a cache under `cache_dir` (once) and memory-map it.

    `labels=None` uses the sorted labels of the manifest; otherwise a clip whose label is not in `labels` is
    a DataError naming it. A clip path that does not exist, or a clip with no samples, is a DataError naming
    it and the manifest. Unfinished cache folders of killed builds are removed first."""
    manifest = Path(manifest)
    entries = read_manifest(manifest)
    if labels is None:
        labels = labels_of(entries)
    else:
        check_labels(entries, labels, manifest, "Fix the manifest or list every label in data.labels")
    key = _cache_key(manifest, labels)
    folder = Path(cache_dir) / f"{manifest.stem}-{key[:16]}"
    stale = len(remove_stale_folders(Path(cache_dir)))
    built = False
    if not (folder / INFO_FILE).is_file():
        _build(entries, labels, manifest, folder, workers)
        built = True
    packed = _open(folder, manifest, built)
    packed.stale_removed = stale
    return packed


def _cache_key(manifest: Path, labels: list[str]) -> str:
    h = hashlib.sha256()
    h.update(f"kws-packed-v{FORMAT_VERSION}\n".encode())
    h.update(json.dumps(labels).encode())
    h.update(manifest.read_bytes())
    return h.hexdigest()


def _refuse_empty(paths: list[str], lengths: np.ndarray, manifest: Path) -> None:
    empty = np.flatnonzero(lengths == 0)
    if len(empty):
        n = len(empty)
        raise DataError(
            f"{n} clip{'s' if n > 1 else ''} in {manifest} {'have' if n > 1 else 'has'} no samples, e.g. "
            f"{paths[empty[0]]}; remove them from the manifest (or re-run `kws prepare`)"
        )


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
    tmp = temp_folder(folder)  # renamed to `folder` when complete: a killed build leaves only this
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        # libsndfile releases the GIL: threads decode in parallel, with no arrays pickled between processes.
        with ThreadPoolExecutor(n_workers) as pool:
            # The headers give every clip's slot in the flat array, and show empty clips before decoding.
            slots = np.fromiter(pool.map(wav_frames, paths, chunksize=64), dtype=np.int64, count=len(paths))
            _refuse_empty(paths, slots, manifest)
            offsets = np.concatenate([[0], np.cumsum(slots)[:-1]]).astype(np.int64)
            audio = np.lib.format.open_memmap(
                tmp / AUDIO_FILE, mode="w+", dtype=np.int16, shape=(int(slots.sum()),)
            )
            lengths = slots.copy()

            def decode(u: int) -> None:
                # The header can overstate a truncated file: trust the samples (the slot keeps a gap).
                clip = read_wav(Path(paths[u]))[: slots[u]]
                audio[offsets[u] : offsets[u] + len(clip)] = clip
                lengths[u] = len(clip)

            with item_progress("clips", transient=True) as progress:
                task = progress.add_task(f"decoding {manifest.name}", total=len(paths))
                for _ in pool.map(decode, range(len(paths))):
                    progress.advance(task)
            audio.flush()
        _refuse_empty(paths, lengths, manifest)
        label_of = {name: i for i, name in enumerate(labels)}
        index = np.array([unique[e.audio_filepath] for e in entries], dtype=np.int64)
        label_ids = np.array([label_of[e.label] for e in entries], dtype=np.int64)
        np.savez(tmp / META_FILE, offsets=offsets, lengths=lengths, index=index, label_ids=label_ids)
        info = {
            "format": FORMAT_VERSION,
            "manifest": str(manifest.resolve()),
            "labels": labels,
            "paths": [e.audio_filepath for e in entries],
            "n_unique": len(paths),
            "n_samples": int(slots.sum()),
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
        offsets, lengths, index, label_ids = (
            meta["offsets"],
            meta["lengths"],
            meta["index"],
            meta["label_ids"],
        )
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(
            f"the packed cache {folder} is damaged ({exc}); delete the folder and run again"
        ) from None
    return PackedSet(
        audio=audio,
        offsets=offsets,
        lengths=lengths,
        index=index,
        label_ids=label_ids,
        labels=list(info["labels"]),
        paths=list(info["paths"]),
        manifest=manifest,
        cache=folder,
        built=built,
    )
