"""The packed cache (kws.data) and the batches formed from it (kws.data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kws.audio import read_wav
from kws.data import ClipSet, StepGenerator, derive_seed, epoch_order, load_packed, steps_per_epoch
from kws.errors import DataError
from kws.manifest import Entry, read_manifest, write_manifest
from tests.tiny_dataset import CLASSES, make_tiny_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"), n_train=6, n_val=2)


def test_decodes_once_then_memory_maps(data: dict[str, Path], tmp_path: Path) -> None:
    first = load_packed(data["train"], tmp_path)
    assert first.built and first.labels == sorted(CLASSES)
    audio_file = first.cache / "audio.npy"
    mtime = audio_file.stat().st_mtime_ns
    second = load_packed(data["train"], tmp_path)
    assert not second.built and second.cache == first.cache
    assert audio_file.stat().st_mtime_ns == mtime
    assert isinstance(second.audio, np.memmap)
    assert [p.name for p in tmp_path.iterdir()] == [first.cache.name], "no temporary folders left"


def test_clips_are_stored_ragged_end_to_end(data: dict[str, Path], tmp_path: Path) -> None:
    packed = load_packed(data["train"], tmp_path)
    entries = read_manifest(data["train"])
    clips = [read_wav(Path(e.audio_filepath)) for e in entries]
    assert packed.audio.dtype == np.int16
    assert packed.audio.shape == (sum(len(c) for c in clips),), "no padding: the audio's own size"
    for i, (entry, clip) in enumerate(zip(entries, clips, strict=True)):
        row = packed.index[i]
        assert packed.lengths[row] == len(clip)
        np.testing.assert_array_equal(packed.clip(i), clip)
        assert packed.labels[packed.label_ids[i]] == entry.label
        assert packed.paths[i] == entry.audio_filepath


def test_duplicated_lines_are_stored_once(data: dict[str, Path], tmp_path: Path) -> None:
    entries = read_manifest(data["train"])
    rebalanced = tmp_path / "rebalanced.json"
    write_manifest(rebalanced, entries + entries[:5] + entries[:2])
    packed = load_packed(rebalanced, tmp_path / "cache")
    assert len(packed) == len(entries) + 7 and packed.n_unique == len(entries)
    np.testing.assert_array_equal(packed.index[len(entries) :], [0, 1, 2, 3, 4, 0, 1])


def test_a_changed_manifest_or_label_list_gets_a_new_cache(data: dict[str, Path], tmp_path: Path) -> None:
    manifest = tmp_path / "m.json"
    entries = read_manifest(data["train"])
    write_manifest(manifest, entries)
    first = load_packed(manifest, tmp_path / "cache")
    write_manifest(manifest, entries[:-1])
    changed = load_packed(manifest, tmp_path / "cache")
    assert changed.built and changed.cache != first.cache and len(changed) == len(entries) - 1
    relabelled = load_packed(manifest, tmp_path / "cache", labels=[*sorted(CLASSES), "extra"])
    assert relabelled.built and relabelled.labels[-1] == "extra"


def test_unknown_label_is_named(data: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(
        DataError,
        match=r"validation_manifest.json has labels the model does not know: up \(e.g. .*up/validation_0.wav",
    ):
        load_packed(data["validation"], tmp_path, labels=["down", "high", "low"])


def test_missing_clip_is_named(data: dict[str, Path], tmp_path: Path) -> None:
    entries = read_manifest(data["train"])
    manifest = tmp_path / "m.json"
    write_manifest(manifest, [*entries, Entry(str(tmp_path / "lost.wav"), 1.0, "up")])
    with pytest.raises(DataError, match=r"lost.wav listed in .*m.json does not exist"):
        load_packed(manifest, tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_damaged_cache_is_a_clear_error(data: dict[str, Path], tmp_path: Path) -> None:
    packed = load_packed(data["train"], tmp_path)
    (packed.cache / "meta.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="damaged.*delete the folder"):
        load_packed(data["train"], tmp_path)


def test_clip_set_batches_gather_the_right_clips(data: dict[str, Path], tmp_path: Path) -> None:
    packed = load_packed(data["train"], tmp_path)
    clips = ClipSet(packed, torch.device("cpu"))
    ids = torch.tensor([3, 0, 7])
    audio, lengths, labels = clips.batch(ids)
    widest = max(len(packed.clip(i)) for i in ids.tolist())
    assert audio.dtype == torch.float32 and audio.shape == (3, widest), "as wide as its widest clip"
    for k, i in enumerate(ids.tolist()):
        row, clip = packed.index[i], packed.clip(i)
        expected = torch.from_numpy(clip.astype(np.float32) / 32768)
        torch.testing.assert_close(audio[k, : len(clip)], expected, rtol=0, atol=0)
        assert not audio[k, len(clip) :].any(), "zero-padded"
        assert lengths[k] == packed.lengths[row] and labels[k] == packed.label_ids[i]
    on_host = clips.batch(ids)  # ids on the device of the store take the other path: same batch
    for a, b in zip(on_host, clips.batch(ids.to(clips.audio.device)), strict=True):
        assert torch.equal(a, b)
    batches = clips.eval_batches(5, rank=0, world=1)
    assert torch.cat(batches).tolist() == list(range(len(packed)))


def test_epoch_order_is_a_seeded_permutation_with_a_short_last_batch() -> None:
    order = epoch_order(100, 8, 1, seed=3, epoch=0)
    assert len(order) == steps_per_epoch(100, 8, 1) == 13, "ceil(100 / 8): the remainder is kept"
    batches = order[:, 0]
    assert [len(b) for b in batches] == [8] * 12 + [4]
    assert sorted(torch.cat(batches).tolist()) == list(range(100)), "each clip once"
    assert torch.equal(order[12, 0], batches[-1])
    assert torch.equal(torch.cat(batches), torch.cat(epoch_order(100, 8, 1, seed=3, epoch=0)[:, 0]))
    assert not torch.equal(torch.cat(batches), torch.cat(epoch_order(100, 8, 1, seed=3, epoch=1)[:, 0]))
    assert not torch.equal(torch.cat(batches), torch.cat(epoch_order(100, 8, 1, seed=4, epoch=0)[:, 0]))
    tiny = epoch_order(5, 8, 1, seed=0, epoch=0)  # smaller than one batch: one short batch
    assert len(tiny) == 1 and sorted(tiny[0, 0].tolist()) == list(range(5))


def test_step_generator_depends_only_on_seed_step_and_rank() -> None:
    gen = StepGenerator(seed=1, rank=0, device=torch.device("cpu"))
    a = torch.rand(4, generator=gen.at(7))
    torch.rand(100, generator=gen.at(3))
    assert torch.equal(a, torch.rand(4, generator=gen.at(7)))
    assert not torch.equal(a, torch.rand(4, generator=StepGenerator(1, 1, torch.device("cpu")).at(7)))
    assert derive_seed(1, 2, 3) != derive_seed(1, 2, 4) and 0 <= derive_seed(-5, 2) < 2**63
