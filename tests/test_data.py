"""kws.data: the packed cache (ragged, decoded once, memory-mapped), the batches formed from it, the epoch
order and its short last batch, and the data that cannot be trained on."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from kws.audio import SAMPLE_RATE, read_wav, write_wav
from kws.config import load_config
from kws.data import ClipSet, StepGenerator, derive_seed, epoch_order, load_packed, steps_per_epoch
from kws.errors import DataError
from kws.manifest import Entry, check_labels, read_manifest, write_manifest
from tests.helpers import REPO, SMOKE
from tests.helpers.tiny_dataset import CLASSES, make_tiny_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"), n_train=4, n_val=1)


def with_clips(data: dict[str, Path], folder: Path, clips: dict[str, np.ndarray]) -> Path:
    """The tiny train manifest plus one line (label `up`) per extra clip, written under `folder`."""
    extra = []
    for name, samples in clips.items():
        write_wav(folder / name, samples)
        extra.append(Entry(str(folder / name), len(samples) / SAMPLE_RATE, "up"))
    manifest = folder / "train_manifest.json"
    write_manifest(manifest, [*read_manifest(data["train"]), *extra])
    return manifest


# ------------------------------------------------------------------ steps per epoch and the short last batch
def test_steps_per_epoch_keeps_the_last_short_batch() -> None:
    assert steps_per_epoch(399 * 128 + 50, 128, 1) == 400  # NeMo's count; dropping the remainder gave 399
    assert steps_per_epoch(96, 16, 1) == 6 and steps_per_epoch(97, 16, 1) == 7
    assert steps_per_epoch(5, 8, 2) == 1


def test_ddp_ranks_split_the_short_last_batch_of_the_single_process() -> None:
    single = epoch_order(100, 24, 1, seed=0, epoch=1)
    three = epoch_order(100, 8, 3, seed=0, epoch=1)
    assert len(single) == len(three) == 5
    shares = [three[4, r].tolist() for r in range(3)]
    assert [len(s) for s in shares] == [2, 1, 1], "4 left over: as even as possible, no rank empty"
    assert sorted(sum(shares, [])) == sorted(single[4, 0].tolist())
    every = torch.cat([torch.cat(three[:, r]) for r in range(3)])
    assert sorted(every.tolist()) == list(range(100)), "each clip once an epoch"


def test_fewer_clips_left_than_ranks_are_topped_up_from_the_epoch_start() -> None:
    order = epoch_order(97, 8, 4, seed=2, epoch=0)  # 3 full global batches of 32, then 1 clip for 4 ranks
    assert len(order) == 4 and [len(order[3, r]) for r in range(4)] == [1, 1, 1, 1]
    last = [int(order[3, r]) for r in range(4)]
    first_clips = torch.cat([order[0, r] for r in range(4)]).tolist()
    assert last[1:] == first_clips[:3], "padded like DistributedSampler: from the permutation's start"
    assert set(torch.cat([torch.cat(order[:, r]) for r in range(4)]).tolist()) == set(range(97))
    assert [len(b) for b in order[:, 0].to(torch.device("cpu"))] == [8, 8, 8, 1]


def test_training_takes_the_last_short_batch(tmp_path: Path) -> None:
    from kws.train.loop import train

    small = make_tiny_dataset(tmp_path / "data", n_train=5, n_val=2)  # 20 clips: 16 + 4 at batch 16
    cfg = load_config(SMOKE, [f"data.cache_dir={tmp_path / 'cache'}", "trainer.log_every_n_steps=1"])
    data = dataclasses.replace(
        cfg.data, train_manifest=str(small["train"]), val_manifests=(str(small["validation"]),)
    )
    cfg = dataclasses.replace(cfg, data=data, trainer=dataclasses.replace(cfg.trainer, epochs=2))
    result = train(cfg, tmp_path / "run")
    assert result.steps == 4 and result.epochs_done == 2
    steps = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if r["kind"] == "epoch"] == [2, 4]


# ------------------------------------------------------------------ ragged storage and long clips
def test_a_long_clip_costs_its_own_size_and_is_reported(data: dict[str, Path], tmp_path: Path) -> None:
    long_clip = (np.sin(np.arange(10 * SAMPLE_RATE) / 7) * 8000).astype(np.int16)  # 10 s
    packed = load_packed(with_clips(data, tmp_path, {"long.wav": long_clip}), tmp_path / "cache")
    assert packed.audio.nbytes == 2 * int(packed.lengths.sum()) < 2 * 3 * 10 * SAMPLE_RATE
    assert packed.n_long == 1
    assert "; 1 clip is longer than 1 s (the longest 10.0 s)" in packed.summary()
    clips = ClipSet(packed, torch.device("cpu"))
    audio, lengths, _ = clips.batch(torch.tensor([0, 1]))
    assert audio.shape == (2, int(lengths.max())) and audio.shape[1] <= SAMPLE_RATE
    audio, lengths, _ = clips.batch(torch.tensor([0, len(packed) - 1]))
    assert audio.shape == (2, 10 * SAMPLE_RATE) and lengths.tolist()[1] == 10 * SAMPLE_RATE
    np.testing.assert_array_equal((audio[1] * 32768).to(torch.int16).numpy(), long_clip)
    assert not audio[0, int(lengths[0]) :].any()
    short = load_packed(data["train"], tmp_path / "cache")
    assert short.n_long == 0 and "longer than" not in short.summary()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
@pytest.mark.parametrize("on_device", [True, False])
def test_cuda_batches_match_the_cpu_however_the_device_is_named(
    data: dict[str, Path], tmp_path: Path, name: str, on_device: bool
) -> None:
    # Seen on an H200: torch.device("cuda") is not the cuda:0 a tensor reports, and a set already on the
    # device was pinned again (RuntimeError: cannot pin 'torch.cuda.ShortTensor').
    packed = load_packed(data["train"], tmp_path / "cache")
    ids = torch.tensor([2, 0, len(packed) - 1])
    expected = ClipSet(packed, torch.device("cpu")).batch(ids)
    clips = ClipSet(packed, torch.device(name), on_device=on_device)
    assert clips.on_device is on_device
    for host_ids in (ids, ids.cuda()):
        got = clips.batch(host_ids)
        assert all(t.is_cuda for t in got)
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g.cpu(), e, rtol=0, atol=0)


# ------------------------------------------------------------------ data that cannot be trained on
def test_clips_without_samples_are_refused_before_decoding(data: dict[str, Path], tmp_path: Path) -> None:
    empty = np.zeros(0, np.int16)
    manifest = with_clips(data, tmp_path, {"a.wav": empty, "b.wav": empty})
    with pytest.raises(
        DataError,
        match=r"^2 clips in .*train_manifest.json have no samples, e.g. .*a.wav; remove them from the "
        r"manifest \(or re-run `kws prepare`\)$",
    ):
        load_packed(manifest, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == [], "nothing decoded, nothing left behind"


def test_a_training_manifest_with_one_class_is_refused(data: dict[str, Path], tmp_path: Path) -> None:
    one = tmp_path / "one_class.json"
    write_manifest(one, [e for e in read_manifest(data["train"]) if e.label == "up"])
    proc = subprocess.run(
        [sys.executable, "-m", "kws", "train", "--config", SMOKE, "--train-manifest", one, "--run-dir", "r"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert (
        f"error: the training manifest {one} has 1 class (up); a classifier needs at least 2" in proc.stderr
    )
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------ leftovers of killed builds
def test_unfinished_cache_folders_of_dead_processes_are_removed(
    data: dict[str, Path], tmp_path: Path
) -> None:
    cache, host = tmp_path / "cache", socket.gethostname()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a finished process: its pid is free
    folders = {
        "dead": cache / f".train_manifest-0123456789abcdef.tmp-{host}-{gone.pid}",
        "old_format": cache / f".train_manifest-fedcba9876543210.tmp-{gone.pid}",
        "live": cache / f".train_manifest-0011223344556677.tmp-{host}-{os.getpid()}",
        "other_host": cache / f".train_manifest-0123456789abcdef.tmp-elsewhere-{gone.pid}",
        "other_host_old": cache / f".train_manifest-7766554433221100.tmp-elsewhere-{gone.pid}",
    }
    for folder in folders.values():
        folder.mkdir(parents=True)
        (folder / "audio.npy").write_bytes(b"\0" * 64)
    week_ago = time.time() - 7 * 24 * 3600
    for path in (folders["other_host_old"] / "audio.npy", folders["other_host_old"]):
        os.utime(path, (week_ago, week_ago))
    packed = load_packed(data["train"], cache)
    assert packed.stale_removed == 3
    assert {name for name, f in folders.items() if f.exists()} == {"live", "other_host"}
    assert "removed 3 unfinished cache folders left by interrupted runs" in packed.summary()


# ------------------------------------------------------------------ manifest lines and labels
@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"audio_filepath": "a.wav", "duration": 1.0}', 'has no "command" (or "label") key'),
        ('{"duration": 1.0, "command": "up"}', 'has no "audio_filepath" key'),
        ('{"audio_filepath": "a.wav", "duration": "long", "command": "up"}', 'has a "duration" of "long"'),
        ('{"audio_filepath": "a.wav", "duration": -1, "command": "up"}', 'has a "duration" of -1'),
        ('{"audio_filepath": "a.wav", "command": "up"', "is not valid JSON (Expecting ',' delimiter"),
        ('["a.wav", 1.0, "up"]', "is not a JSON object"),
    ],
)
def test_a_malformed_manifest_line_is_named_with_its_number(tmp_path: Path, line: str, message: str) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text('{"audio_filepath": "b.wav", "duration": 1.0, "label": "up"}\n\n' + line + "\n")
    with pytest.raises(DataError) as info:
        read_manifest(manifest)
    text = str(info.value)
    assert text.startswith(f"line 3 of {manifest} {message}"), text
    assert "\n" not in text and "KeyError" not in text


def test_label_synonym_and_optional_duration_still_read(tmp_path: Path) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text('{"audio_filepath": "b.wav", "label": "up"}\n')
    assert read_manifest(manifest) == [Entry("b.wav", 0.0, "up")]


def test_unknown_labels_are_counted_named_and_exemplified(tmp_path: Path) -> None:
    entries = [Entry("a.wav", 1.0, "yes"), Entry("b.wav", 1.0, "cat"), Entry("c.wav", 1.0, "bed")]
    with pytest.raises(DataError) as info:
        check_labels(entries, ["no", "yes"], tmp_path / "m.json", "Do this.")
    assert str(info.value) == (
        f"{tmp_path / 'm.json'} has 2 labels the model does not know: bed, cat (e.g. b.wav); "
        "the model's labels are no, yes. Do this."
    )
    check_labels(entries[:1], ["no", "yes"], tmp_path / "m.json", "unused")  # all known: no error


# Run by torchrun: trains 2 epochs of 13 clips at batch 3 on 2 ranks (global 6: 2 full steps, then 1 clip
# left for 2 ranks), recording the clip ids each rank gathered at each step.
DDP_RECORDER = """
import dataclasses, json, os, sys
from pathlib import Path
from kws import data
from kws.config import load_config
from kws.train.loop import train

smoke, train_manifest, run_dir = sys.argv[1:4]
seen = []
original = data.ClipSet.batch
def recording(self, ids):
    if self.n_clips == 13:
        seen.append(ids.tolist())
    return original(self, ids)
data.ClipSet.batch = recording
cfg = load_config(Path(smoke), [])
cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train_manifest=train_manifest),
                          trainer=dataclasses.replace(cfg.trainer, batch_size=3, epochs=2))
result = train(cfg, Path(run_dir))
out = Path(run_dir).parent / f"ids_rank{os.environ['RANK']}.json"
out.write_text(json.dumps([result.steps, seen]))
"""


@pytest.mark.slow
def test_ddp_trains_through_a_last_batch_smaller_than_the_world(
    data: dict[str, Path], tmp_path: Path
) -> None:
    manifest = tmp_path / "odd.json"
    write_manifest(manifest, read_manifest(data["train"])[:13])
    script = tmp_path / "recorder.py"
    script.write_text(DDP_RECORDER)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script]
        + [str(SMOKE), str(manifest), str(tmp_path / "run")],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (steps0, r0), (steps1, r1) = (json.loads((tmp_path / f"ids_rank{r}.json").read_text()) for r in (0, 1))
    assert steps0 == steps1 == 6, "ceil(13 / 6) = 3 steps an epoch, on both ranks"
    assert [len(ids) for ids in r0] == [len(ids) for ids in r1] == [3, 3, 1] * 2
    for start in (0, 3):  # each epoch: every clip, one of them twice (the top-up)
        clips = sum(r0[start : start + 3], []) + sum(r1[start : start + 3], [])
        assert sorted(set(clips)) == list(range(13)) and len(clips) == 14


@pytest.fixture(scope="module")
def packed_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"), n_train=6, n_val=2)


def test_decodes_once_then_memory_maps(packed_data: dict[str, Path], tmp_path: Path) -> None:
    first = load_packed(packed_data["train"], tmp_path)
    assert first.built and first.labels == sorted(CLASSES)
    audio_file = first.cache / "audio.npy"
    mtime = audio_file.stat().st_mtime_ns
    second = load_packed(packed_data["train"], tmp_path)
    assert not second.built and second.cache == first.cache
    assert audio_file.stat().st_mtime_ns == mtime
    assert isinstance(second.audio, np.memmap)
    assert [p.name for p in tmp_path.iterdir()] == [first.cache.name], "no temporary folders left"


def test_clips_are_stored_ragged_end_to_end(packed_data: dict[str, Path], tmp_path: Path) -> None:
    packed = load_packed(packed_data["train"], tmp_path)
    entries = read_manifest(packed_data["train"])
    clips = [read_wav(Path(e.audio_filepath)) for e in entries]
    assert packed.audio.dtype == np.int16
    assert packed.audio.shape == (sum(len(c) for c in clips),), "no padding: the audio's own size"
    for i, (entry, clip) in enumerate(zip(entries, clips, strict=True)):
        row = packed.index[i]
        assert packed.lengths[row] == len(clip)
        np.testing.assert_array_equal(packed.clip(i), clip)
        assert packed.labels[packed.label_ids[i]] == entry.label
        assert packed.paths[i] == entry.audio_filepath


def test_duplicated_lines_are_stored_once(packed_data: dict[str, Path], tmp_path: Path) -> None:
    entries = read_manifest(packed_data["train"])
    rebalanced = tmp_path / "rebalanced.json"
    write_manifest(rebalanced, entries + entries[:5] + entries[:2])
    packed = load_packed(rebalanced, tmp_path / "cache")
    assert len(packed) == len(entries) + 7 and packed.n_unique == len(entries)
    np.testing.assert_array_equal(packed.index[len(entries) :], [0, 1, 2, 3, 4, 0, 1])


def test_a_changed_manifest_or_label_list_gets_a_new_cache(
    packed_data: dict[str, Path], tmp_path: Path
) -> None:
    manifest = tmp_path / "m.json"
    entries = read_manifest(packed_data["train"])
    write_manifest(manifest, entries)
    first = load_packed(manifest, tmp_path / "cache")
    write_manifest(manifest, entries[:-1])
    changed = load_packed(manifest, tmp_path / "cache")
    assert changed.built and changed.cache != first.cache and len(changed) == len(entries) - 1
    relabelled = load_packed(manifest, tmp_path / "cache", labels=[*sorted(CLASSES), "extra"])
    assert relabelled.built and relabelled.labels[-1] == "extra"


def test_unknown_label_is_named(packed_data: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(
        DataError,
        match=r"validation_manifest.json has labels the model does not know: up \(e.g. .*up/validation_0.wav",
    ):
        load_packed(packed_data["validation"], tmp_path, labels=["down", "high", "low"])


def test_missing_clip_is_named(packed_data: dict[str, Path], tmp_path: Path) -> None:
    entries = read_manifest(packed_data["train"])
    manifest = tmp_path / "m.json"
    write_manifest(manifest, [*entries, Entry(str(tmp_path / "lost.wav"), 1.0, "up")])
    with pytest.raises(DataError, match=r"lost.wav listed in .*m.json does not exist"):
        load_packed(manifest, tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_damaged_cache_is_a_clear_error(packed_data: dict[str, Path], tmp_path: Path) -> None:
    packed = load_packed(packed_data["train"], tmp_path)
    (packed.cache / "meta.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="damaged.*delete the folder"):
        load_packed(packed_data["train"], tmp_path)


def test_clip_set_batches_gather_the_right_clips(packed_data: dict[str, Path], tmp_path: Path) -> None:
    packed = load_packed(packed_data["train"], tmp_path)
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
