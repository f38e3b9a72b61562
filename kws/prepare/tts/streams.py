"""Long recordings with ground truth: `kws prepare --dataset tts --streams N [--stream-minutes M]`.

Beside the clips, DATA_ROOT/NAME/ gets N keyword streams of M minutes (`_streams_/stream_000.wav`, ...),
keyword-free recordings of M minutes that total at least max(N * M, 60) minutes (`_streams_/free_000.wav`,
...), all 16 kHz mono int16, and `streams_manifest.json` (kws.stream_manifest): one line per recording with
the keywords said in it, their times rounded outwards to the millisecond. A keyword stream holds the test
speakers' keywords (speakers of the test split: never heard in training) among sentences that all speakers
say; both kinds have pauses and noise (kws.prepare.tts.stream_chunk). The folder's name starts with `_`, so
kws.prepare.splits never takes it for a class.

The audio depends only on the seed, the speakers, the keywords, --style and the espeak-ng version, not on
the worker count. `_streams_/.kws_streams.json` records the options and the files written: a re-run with the
same options and files does nothing; other options rewrite the recordings (removing those no longer asked
for), and `--streams 0` removes them all.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kws.audio import SAMPLE_RATE, float_to_int16, write_wav
from kws.errors import KWSError
from kws.files import file_sha256, write_json_atomic
from kws.prepare.pool import exit_if_orphaned, process_pool
from kws.prepare.tts.keywords import word_folder
from kws.prepare.tts.sentences import keyword_free
from kws.prepare.tts.stream_chunk import (
    OVERLAP_SAMPLES,
    ChunkEvent,
    ChunkTask,
    Voices,
    chunk_lengths,
    render_chunk,
)
from kws.prepare.tts.voices import Speaker
from kws.stream_manifest import Event, Stream, write_stream_manifest

STREAM_MINUTES = 10.0  # --stream-minutes
MIN_FREE_MINUTES = 60.0  # keyword-free audio, at least: false accepts per hour need an hour
MIN_STREAM_S = 15.0
MAX_STREAM_MINUTES = 24 * 60.0
STREAM_DIR = "_streams_"
MANIFEST = "streams_manifest.json"
STAMP = ".kws_streams.json"
STAMP_FORMAT = 3  # bump when a change alters the audio (2: no keyword near a chunk's edges; 3: margins)
FILE_RE = re.compile(r"(stream|free)_\d+\.wav|\..*\.tmp-\d+")  # what this module writes in STREAM_DIR


def check_stream_options(n_streams: int, minutes: float, free_minutes: float | None = None) -> None:
    """Refuse bad `--streams` / `--stream-minutes` before any work."""
    if n_streams < 0:
        raise KWSError(f"--streams must be 0 (no recordings) or more, got {n_streams}")
    if not (math.isfinite(minutes) and MIN_STREAM_S / 60 <= minutes <= MAX_STREAM_MINUTES):
        raise KWSError(
            f"--stream-minutes must be between {MIN_STREAM_S / 60:g} and {MAX_STREAM_MINUTES:g}, "
            f"got {minutes}"
        )
    if free_minutes is not None and not (math.isfinite(free_minutes) and free_minutes > 0):
        raise KWSError(f"the keyword-free total must be a positive number of minutes, got {free_minutes}")


@dataclass(frozen=True)
class Recording:
    name: str  # file stem: "stream_000", "free_000"
    n_samples: int
    with_keywords: bool


@dataclass(frozen=True)
class StreamPlan:
    """The recordings to write and who speaks in them."""

    recordings: tuple[Recording, ...]
    voices: Voices

    @classmethod
    def build(
        cls,
        n_streams: int,
        minutes: float,
        free_minutes: float | None,
        keywords: Sequence[str],
        speakers: Sequence[Speaker],
        split: dict[str, str],
        *,
        seed: int,
        style: str,
    ) -> StreamPlan | None:
        """The plan of `n_streams` keyword streams of `minutes` and keyword-free ones totalling
        `free_minutes` (default max(N * M, MIN_FREE_MINUTES)); None for no streams. KWSError when no speaker
        is in the test split."""
        check_stream_options(n_streams, minutes, free_minutes)
        if n_streams == 0:
            return None
        test = tuple(s for s in speakers if split[s.id] == "testing")
        if not test:
            raise KWSError(
                f"--streams speaks the test speakers' keywords, but none of the {len(speakers)} speakers is "
                "in the test split; pass more --speakers (e.g. --speakers 12)"
            )
        sentences = keyword_free(keywords)
        if not sentences:
            raise KWSError(
                "every built-in sentence says one of the --words, so no stream can be made; drop --streams"
            )
        if free_minutes is None:
            free_minutes = max(n_streams * minutes, MIN_FREE_MINUTES)
        n = round(minutes * 60 * SAMPLE_RATE)
        recordings = [Recording(f"stream_{i:03d}", n, True) for i in range(n_streams)]
        n_free = math.ceil(free_minutes / minutes - 1e-9)  # 60 / 0.3 is 200.00000000000003 in floats
        recordings += [Recording(f"free_{i:03d}", n, False) for i in range(n_free)]
        voices = Voices(
            seed,
            style,
            tuple(sentences),
            tuple(speakers),
            tuple(keywords),
            tuple(word_folder(k) for k in keywords),
            test,
        )
        return cls(tuple(recordings), voices)

    def key(self, espeak_ng: str, dataset_dir: Path) -> dict[str, Any]:
        """What the audio depends on (and the folder: the manifest holds absolute paths)."""
        v = self.voices
        return {
            "format": STAMP_FORMAT,
            "espeak_ng": espeak_ng,
            "seed": v.seed,
            "style": v.style,
            "keywords": list(v.keywords),
            "speakers": [s.id for s in v.speakers],
            "test_speakers": [s.id for s in v.test_speakers],
            "sentences": hashlib.sha256("\n".join(v.sentences).encode()).hexdigest(),
            "recordings": [asdict(r) for r in self.recordings],
            "dataset_dir": str(dataset_dir),
        }


def write_streams(dataset_dir: Path, plan: StreamPlan | None, espeak_ng: str, workers: int) -> list[str]:
    """Write (or keep, or with no plan remove) the recordings and their manifest; returns notes."""
    folder, manifest = dataset_dir / STREAM_DIR, dataset_dir / MANIFEST
    old = _read_stamp(folder)
    if plan is None:
        if folder.is_dir() or manifest.is_file():
            _remove(folder, keep=set())
            manifest.unlink(missing_ok=True)
        return []
    key = plan.key(espeak_ng, dataset_dir)
    if old is not None and _up_to_date(old, key, folder, manifest):
        return [f"the {len(plan.recordings)} recordings in {folder} are up to date"]
    (folder / STAMP).unlink(missing_ok=True)
    _remove(folder, keep={f"{r.name}.wav" for r in plan.recordings})

    start = time.perf_counter()
    streams = synthesize(folder, plan, workers)
    seconds = max(time.perf_counter() - start, 1e-9)
    write_stream_manifest(manifest, streams)
    files = {f"{r.name}.wav": (folder / f"{r.name}.wav").stat().st_size for r in plan.recordings}
    write_json_atomic(folder / STAMP, {**key, "files": files, "manifest_sha256": file_sha256(manifest)})
    audio_s = sum(s.duration for s in streams)
    n_events = sum(len(s.events) for s in streams)
    return [
        f"wrote {len(streams)} recordings ({audio_s / 60:,.1f} min, {n_events} keywords) in {seconds:.1f} s "
        f"({audio_s / seconds:,.0f} s of audio per second); their manifest is {manifest}"
    ]


def _read_stamp(folder: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((folder / STAMP).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def _up_to_date(old: dict[str, Any], key: dict[str, Any], folder: Path, manifest: Path) -> bool:
    try:
        if any(old.get(k) != v for k, v in key.items()):
            return False
        if any((folder / name).stat().st_size != size for name, size in old["files"].items()):
            return False
        return bool(file_sha256(manifest) == old["manifest_sha256"])
    except (OSError, KeyError, AttributeError):
        return False


def _remove(folder: Path, keep: set[str]) -> None:
    """Delete the files this module wrote in `folder` (not in `keep`), and the folder once empty."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if (FILE_RE.fullmatch(path.name) and path.name not in keep) or path.name == STAMP:
            path.unlink()
    if not any(folder.iterdir()):
        folder.rmdir()


def _render(task: ChunkTask) -> tuple[np.ndarray, list[ChunkEvent]]:
    exit_if_orphaned()  # where PR_SET_PDEATHSIG is missing: no work for a parent that is gone
    return render_chunk(task)


def synthesize(folder: Path, plan: StreamPlan, workers: int) -> list[Stream]:
    """Render every chunk over `workers` processes, assemble and write each recording; its manifest lines."""
    from kws.console import item_progress

    tasks = [
        [
            ChunkTask(plan.voices, r.name, i, n, r.with_keywords)
            for i, n in enumerate(chunk_lengths(r.n_samples))
        ]
        for r in plan.recordings
    ]
    flat = [t for chunks in tasks for t in chunks]
    pool = process_pool(min(workers, len(flat))) if workers > 1 and len(flat) > 1 else None
    # Consumed in order, and dropped once consumed: about one recording's chunks are held at a time.
    pending: deque[Future[tuple[np.ndarray, list[ChunkEvent]]]] = deque()
    try:
        if pool is not None:
            pending.extend(pool.submit(_render, t) for t in flat)
        streams = []
        with item_progress("audio s") as bar:
            total_s = sum(r.n_samples for r in plan.recordings) / SAMPLE_RATE
            bar_task = bar.add_task("synthesizing streams", total=total_s)
            for recording, chunks in zip(plan.recordings, tasks, strict=True):
                audio = np.zeros(recording.n_samples + OVERLAP_SAMPLES, dtype=np.float32)
                events: list[Event] = []
                offset = 0
                for task in chunks:
                    chunk, chunk_events = (
                        pending.popleft().result() if pool is not None else render_chunk(task)
                    )
                    audio[offset : offset + len(chunk)] += chunk
                    events += [_event(e, offset) for e in chunk_events]
                    offset += task.n_samples
                    bar.advance(bar_task, task.n_samples / SAMPLE_RATE)
                path = folder / f"{recording.name}.wav"
                write_wav(path, float_to_int16(audio[: recording.n_samples]))
                streams.append(Stream(str(path), recording.n_samples / SAMPLE_RATE, tuple(events)))
        return streams
    except BrokenProcessPool:
        raise KWSError(
            "a stream synthesis worker died (out of memory?); re-run the same command, with fewer --workers "
            "if it happens again"
        ) from None
    finally:  # on Ctrl-C or SIGTERM too: the pool then waits only for the chunks already started
        for future in pending:
            future.cancel()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _event(e: ChunkEvent, offset: int) -> Event:
    """A chunk's event in the recording's seconds, rounded outwards to the millisecond."""
    start_ms = math.floor((offset + e.start) * 1000 / SAMPLE_RATE)
    end_ms = math.ceil((offset + e.end) * 1000 / SAMPLE_RATE)
    return Event(e.label, start_ms / 1000, end_ms / 1000)
