"""Split a Speech-Commands-shaped tree into train/validation/test manifests (../shared/RECIPE.md).

Layout: `<word>/<speaker>_nohash_<k>.wav`, `_background_noise_/*.wav`, `validation_list.txt`,
`testing_list.txt`. A clip is validation when its speaker (file name before `_nohash_`) appears in
validation_list.txt, else test when its speaker appears in testing_list.txt, else train, so every speaker
lives in exactly one split. Folders whose names start with `_` or `.` are never classes.

Class set `sub` keeps the keywords (Speech Commands: the 10 command words; the TTS source: its --words) and
adds `unknown` (clips drawn at random from the split's other words) and `silence`: 1.0 s windows cut from
the background-noise recordings at a stride of 1000 samples,
scaled by a gain drawn from U(0, 1) and written as wav files under `_silence_/<split>/`. Unlike the
reference, which cuts every split's silence from the whole recordings (so the same noise is heard in train
and test), each recording is divided into disjoint regions: the first 80 % feeds train, the next 10 %
validation and the last 10 % test.

`.kws_manifests.json` records the options, the folder's resolved path and a fingerprint of the tree listing
(paths, sizes, mtimes): a re-run that matches it does no work; other options, or a moved or copied folder,
rewrite the manifests (and `_silence_/`) only.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import wave
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kws.audio import CLIP_SAMPLES, NOISE_DIR, SAMPLE_RATE, read_wav, wav_frames
from kws.console import item_progress
from kws.errors import ConfigError, DataError
from kws.files import file_sha256, read_text, write_json_atomic
from kws.manifest import Entry, write_manifest

SPLITS = ("train", "validation", "test")
LIST_FILES = {"validation": "validation_list.txt", "test": "testing_list.txt"}
SUB_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN, SILENCE = "unknown", "silence"
EXTRA_FRACTION = 0.1  # silence and unknown clips, each, per 10-word clip of the same split (rounded up)
SILENCE_STRIDE = 1000  # samples between the starts of consecutive silence windows
SILENCE_REGIONS = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}  # of each recording
SILENCE_DIR = "_silence_"
STAMP = ".kws_manifests.json"  # options + tree fingerprint of the last successful run
STAMP_FORMAT = 1
HEADER_CHUNK = 256  # wav headers read per worker task


@dataclass(frozen=True)
class ManifestOptions:
    classes: str = "all"  # "all" | "sub"
    rebalance: bool = False
    seed: int = 0
    exclude: Path | None = None  # file listing clip paths (absolute, or relative to the dataset dir) to drop
    workers: int | None = None  # None = os.cpu_count()
    keywords: tuple[str, ...] = SUB_WORDS  # the labels `sub` keeps; the rest of the words become `unknown`


@dataclass(frozen=True)
class SplitStats:
    split: str
    n_clips: int
    n_classes: int
    smallest: tuple[str, int]
    largest: tuple[str, int]
    hours: float


@dataclass
class PrepareResult:
    dataset_dir: Path
    manifests: dict[str, Path]  # "train" | "validation" | "test" -> manifest path
    stats: list[SplitStats]
    up_to_date: bool = False  # True when nothing had to be done
    n_excluded: int = 0
    notes: list[str] = field(default_factory=list)  # lines the CLI prints


def manifest_paths(dataset_dir: Path) -> dict[str, Path]:
    return {split: dataset_dir / f"{split}_manifest.json" for split in SPLITS}


def speaker_of(clip: str) -> str:
    """`right/bb05582b_nohash_3.wav` -> `bb05582b` (the whole stem when there is no `_nohash_`)."""
    name = Path(clip).name
    return name.split("_nohash_")[0] if "_nohash_" in name else Path(name).stem


def build_manifests(dataset_dir: Path, opts: ManifestOptions) -> PrepareResult:
    """dataset_dir holds <word>/<speaker>_nohash_<k>.wav, _background_noise_/, validation_list.txt,
    testing_list.txt. Writes dataset_dir/{train,validation,test}_manifest.json."""
    check_options(opts)
    dataset_dir = Path(dataset_dir).resolve()
    if not dataset_dir.is_dir():
        raise DataError(f"dataset folder {dataset_dir} does not exist; check --data-root or --source")
    list_speakers = {split: _read_list_speakers(dataset_dir, name) for split, name in LIST_FILES.items()}
    clips, noise = _scan(dataset_dir)
    excluded = _read_exclude(opts.exclude, dataset_dir)
    stamp = {
        "format": STAMP_FORMAT,
        "options": _options_key(opts),
        "tree": _fingerprint(dataset_dir, clips, noise),
        "dataset_dir": str(dataset_dir),  # manifests hold absolute paths: a moved tree needs new ones
    }
    manifests = manifest_paths(dataset_dir)
    cached = _up_to_date(dataset_dir, stamp, manifests, opts)
    if cached is not None:
        return cached

    try:
        return _build(dataset_dir, opts, clips, noise, list_speakers, excluded, stamp)
    except OSError as exc:  # disk full, read-only folder, a file that vanished mid-run
        fix = "free some space" if exc.errno == errno.ENOSPC else "check the folder and its permissions"
        raise DataError(
            f"cannot prepare {exc.filename or dataset_dir}: {exc.strerror or exc}; {fix}"
        ) from None


def _build(
    dataset_dir: Path,
    opts: ManifestOptions,
    clips: dict[str, list[Path]],
    noise: list[Path],
    list_speakers: dict[str, set[str]],
    excluded: set[str],
    stamp: dict[str, object],
) -> PrepareResult:
    manifests = manifest_paths(dataset_dir)
    (dataset_dir / STAMP).unlink(missing_ok=True)  # a run interrupted from here on is never "up to date"
    kept = [(label, path) for label in sorted(clips) for path in clips[label] if _key(path) not in excluded]
    n_excluded = sum(len(paths) for paths in clips.values()) - len(kept)
    workers = opts.workers or os.cpu_count() or 1
    durations = _durations([path for _, path in kept], workers)
    by_split: dict[str, list[Entry]] = {split: [] for split in SPLITS}
    for (label, path), duration in zip(kept, durations, strict=True):
        speaker = speaker_of(path.name)
        split = next((s for s in ("validation", "test") if speaker in list_speakers[s]), "train")
        by_split[split].append(Entry(str(path), duration, label))
    if not by_split["train"]:
        raise DataError(
            f"no clip of {dataset_dir} falls into the train split; every speaker is listed in "
            "validation_list.txt or testing_list.txt, so check those lists"
        )

    notes: list[str] = []
    if opts.classes == "sub":
        by_split = _sub_classes(dataset_dir, by_split, noise, opts, notes)
    else:
        shutil.rmtree(dataset_dir / SILENCE_DIR, ignore_errors=True)
    if opts.rebalance:
        by_split["train"] = _rebalance(by_split["train"], np.random.default_rng([opts.seed, 2]))
    for split in ("validation", "test"):
        if not by_split[split]:
            notes.append(f"the {split} split is empty: no clip's speaker is listed in {LIST_FILES[split]}")

    for split in SPLITS:
        write_manifest(manifests[split], by_split[split])
    stats = [_stats(split, by_split[split]) for split in SPLITS]
    stamp["manifests"] = {split: file_sha256(path) for split, path in manifests.items()}
    stamp.update(stats=[asdict(s) for s in stats], n_excluded=n_excluded)
    write_json_atomic(dataset_dir / STAMP, stamp)
    return PrepareResult(dataset_dir, manifests, stats, n_excluded=n_excluded, notes=notes)


def check_options(opts: ManifestOptions) -> None:
    """Refuse bad options before any work (download, synthesis), with a message naming the option."""
    if opts.classes not in ("all", "sub"):
        raise ConfigError(f"unknown class set {opts.classes!r}; use --classes all or --classes sub")
    if opts.workers is not None and opts.workers < 1:
        raise ConfigError(
            f"--workers must be at least 1, got {opts.workers}; pass a positive count, or leave it out "
            "to use every core"
        )


def _read_list_speakers(dataset_dir: Path, name: str) -> set[str]:
    path = dataset_dir / name
    if not path.is_file():
        raise DataError(
            f"{path} is missing; a Speech Commands tree needs validation_list.txt and "
            "testing_list.txt (clip paths, one a line): add them or extract the archive again"
        )
    lines = read_text(path, "split list", DataError, "restore it from the official archive").splitlines()
    return {speaker_of(line.strip()) for line in lines if line.strip()}


def _scan(dataset_dir: Path) -> tuple[dict[str, list[Path]], list[Path]]:
    """Label folders -> their wav files (sorted), and the background-noise recordings."""
    clips: dict[str, list[Path]] = {}
    for entry in sorted(os.scandir(dataset_dir), key=lambda e: e.name):
        if entry.is_dir() and not entry.name.startswith(("_", ".")):
            wavs = sorted(Path(entry.path) / n for n in os.listdir(entry.path) if n.lower().endswith(".wav"))
            if not wavs:
                raise DataError(f"label folder {entry.path} has no wav files; add clips or remove the folder")
            clips[entry.name] = wavs
    if not clips:
        raise DataError(f"{dataset_dir} has no label folders (<word>/*.wav); is it a Speech Commands tree?")
    noise_dir = dataset_dir / NOISE_DIR
    noise = sorted(noise_dir.glob("*.wav")) if noise_dir.is_dir() else []
    return clips, noise


def _fingerprint(dataset_dir: Path, clips: dict[str, list[Path]], noise: list[Path]) -> str:
    """A hash of the tree listing (path, size, mtime) and of both lists: cheap, and changes with the data."""
    h = hashlib.sha256()
    lists = [dataset_dir / name for name in LIST_FILES.values()]
    for path in [*lists, *noise, *(p for paths in clips.values() for p in paths)]:
        st = path.stat()
        h.update(f"{path.relative_to(dataset_dir)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _key(path: Path | str) -> str:
    return os.path.normpath(str(path))


def _read_exclude(exclude: Path | None, dataset_dir: Path) -> set[str]:
    if exclude is None:
        return set()
    if not Path(exclude).is_file():
        raise DataError(f"--exclude file {exclude} does not exist; pass a file listing clips, one a line")
    keys = set()
    fix = "pass a text file listing clips, one a line"
    for line in read_text(Path(exclude), "--exclude file", DataError, fix).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            path = Path(line) if Path(line).is_absolute() else dataset_dir / line
            keys.add(_key(path))
            keys.add(_key(path.parent.resolve() / path.name))  # the same clip through a symlinked data root
    return keys


def _options_key(opts: ManifestOptions) -> dict[str, object]:
    key: dict[str, object] = {"classes": opts.classes, "rebalance": opts.rebalance}
    if opts.classes == "sub" or opts.rebalance:  # the seed only matters when something is drawn at random
        key["seed"] = opts.seed
    if opts.classes == "sub":
        key["keywords"] = list(opts.keywords)
    if opts.exclude is not None:
        key["exclude"] = {"path": str(Path(opts.exclude).resolve()), "sha256": file_sha256(opts.exclude)}
    return key


def _up_to_date(
    dataset_dir: Path, stamp: dict[str, object], manifests: dict[str, Path], opts: ManifestOptions
) -> PrepareResult | None:
    try:
        old = json.loads((dataset_dir / STAMP).read_text(encoding="utf-8"))
        if any(old[k] != v for k, v in stamp.items()):
            return None
        if any(file_sha256(path) != old["manifests"][split] for split, path in manifests.items()):
            return None
        if opts.classes == "sub" and not (dataset_dir / SILENCE_DIR).is_dir():
            return None
        stats = [
            SplitStats(**{**s, "smallest": tuple(s["smallest"]), "largest": tuple(s["largest"])})
            for s in old["stats"]
        ]
        return PrepareResult(dataset_dir, manifests, stats, up_to_date=True, n_excluded=old["n_excluded"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _durations(paths: list[Path], workers: int) -> list[float]:
    """Clip durations in seconds from the wav headers (no decoding), read by `workers` threads."""
    chunks = [paths[i : i + HEADER_CHUNK] for i in range(0, len(paths), HEADER_CHUNK)]
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures: list[Future[list[int]]] = [pool.submit(_frames, chunk) for chunk in chunks]
        out: list[float] = []
        with item_progress("clips") as bar:
            task = bar.add_task("reading wav headers", total=len(paths))
            for future, chunk in zip(futures, chunks, strict=True):
                out.extend(frames / SAMPLE_RATE for frames in future.result())
                bar.advance(task, len(chunk))
        return out
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on an error, skip the headers not read yet


def _frames(paths: list[Path]) -> list[int]:
    return [wav_frames(path) for path in paths]


def _sub_classes(
    dataset_dir: Path,
    by_split: dict[str, list[Entry]],
    noise: list[Path],
    opts: ManifestOptions,
    notes: list[str],
) -> dict[str, list[Entry]]:
    """The keywords + unknown + silence, each extra class ceil(10 %) of the split's keyword clips."""
    keywords, seed = set(opts.keywords), opts.seed
    if not any(e.label in keywords for entries in by_split.values() for e in entries):
        raise DataError(f"{dataset_dir} has none of the words {', '.join(opts.keywords)}; use --classes all")
    if not noise:
        raise DataError(
            f"{dataset_dir / NOISE_DIR} has no wav files; --classes sub cuts its silence clips from "
            "background-noise recordings, so add some (16 kHz mono, 10 s or longer) or use --classes all"
        )
    recordings = [(path.stem, read_wav(path)) for path in noise]
    silence_tmp = dataset_dir / f".{SILENCE_DIR}.tmp-{os.getpid()}"
    shutil.rmtree(silence_tmp, ignore_errors=True)
    out: dict[str, list[Entry]] = {}
    try:
        for i, split in enumerate(SPLITS):
            words = [e for e in by_split[split] if e.label in keywords]
            others = [e for e in by_split[split] if e.label not in keywords]
            n_extra = math.ceil(EXTRA_FRACTION * len(words))
            rng = np.random.default_rng([seed, 1, i])
            picked = sorted(rng.choice(len(others), size=min(n_extra, len(others)), replace=False).tolist())
            if len(picked) < n_extra:
                notes.append(f"{split}: only {len(others)} clips of other words for {n_extra} unknown clips")
            unknown = [Entry(others[j].audio_filepath, others[j].duration, UNKNOWN) for j in picked]
            silence_rng = np.random.default_rng([seed, 3, i])
            silence = _write_silence(dataset_dir, silence_tmp, recordings, split, n_extra, silence_rng, notes)
            out[split] = words + unknown + silence
        shutil.rmtree(dataset_dir / SILENCE_DIR, ignore_errors=True)
        if silence_tmp.exists():
            os.replace(silence_tmp, dataset_dir / SILENCE_DIR)
    finally:
        shutil.rmtree(silence_tmp, ignore_errors=True)
    return out


def _write_silence(
    dataset_dir: Path,
    tmp_dir: Path,
    recordings: list[tuple[str, np.ndarray]],
    split: str,
    n_clips: int,
    rng: np.random.Generator,
    notes: list[str],
) -> list[Entry]:
    """Cut `n_clips` 1.0 s windows from this split's region of each recording, scale each by U(0, 1)."""
    if n_clips == 0:
        return []
    lo, hi = SILENCE_REGIONS[split]
    windows = [
        (r, start)
        for r, (_, audio) in enumerate(recordings)
        for start in range(int(len(audio) * lo), int(len(audio) * hi) - CLIP_SAMPLES + 1, SILENCE_STRIDE)
    ]
    if not windows:
        raise DataError(
            f"{dataset_dir / NOISE_DIR} has no recording long enough for {split} silence clips: that split "
            f"uses {hi - lo:.0%} of each recording and needs 1.0 s of it; add wav files of at least "
            f"{math.ceil(10 * CLIP_SAMPLES / SAMPLE_RATE / (hi - lo)) / 10:g} s or use --classes all"
        )
    replace = n_clips > len(windows)
    if replace:
        notes.append(f"{split}: {n_clips} silence clips cut from only {len(windows)} noise windows (repeats)")
    chosen = rng.choice(len(windows), size=n_clips, replace=replace)
    gains = rng.uniform(0.0, 1.0, size=n_clips)
    entries = []
    with item_progress("clips", transient=True) as bar:
        task = bar.add_task(f"writing {split} silence", total=n_clips)
        for k, (w, gain) in enumerate(zip(chosen.tolist(), gains.tolist(), strict=True)):
            r, start = windows[w]
            stem, audio = recordings[r]
            clip = np.round(audio[start : start + CLIP_SAMPLES].astype(np.float32) * gain).astype(np.int16)
            name = Path(split) / f"{stem}_{start:09d}_{k:05d}.wav"
            (tmp_dir / name).parent.mkdir(parents=True, exist_ok=True)
            with wave.open(str(tmp_dir / name), "wb") as w:  # soundfile would fsync every clip
                w.setparams((1, 2, SAMPLE_RATE, 0, "NONE", "not compressed"))  # mono, 16-bit PCM
                w.writeframes(clip.astype("<i2").tobytes())
            entries.append(Entry(str(dataset_dir / SILENCE_DIR / name), CLIP_SAMPLES / SAMPLE_RATE, SILENCE))
            bar.advance(task)
    return entries


def _rebalance(entries: list[Entry], rng: np.random.Generator) -> list[Entry]:
    """Bring every class up to the largest one with duplicates of its own clips, drawn with replacement."""
    by_label: dict[str, list[Entry]] = {}
    for e in entries:
        by_label.setdefault(e.label, []).append(e)
    target = max(len(group) for group in by_label.values())
    out = list(entries)
    for label in sorted(by_label):
        group = by_label[label]
        out.extend(group[j] for j in rng.integers(0, len(group), size=target - len(group)).tolist())
    return out


def _stats(split: str, entries: list[Entry]) -> SplitStats:
    counts = Counter(e.label for e in entries)
    smallest = min(counts.items(), key=lambda kv: (kv[1], kv[0]), default=("-", 0))
    largest = min(counts.items(), key=lambda kv: (-kv[1], kv[0]), default=("-", 0))
    hours = sum(e.duration for e in entries) / 3600
    return SplitStats(split, len(entries), len(counts), smallest, largest, hours)
