"""`kws prepare --dataset tts`: keywords spoken by synthetic speakers, in Speech Commands layout. The
speakers are espeak-ng's, or with `--engines` taken in turn by espeak-ng, flite, Festival and Piper voices
(kws.prepare.tts.engines).

DATA_ROOT/NAME/ gets `<word>/<speakerid>_nohash_<k>.wav` (16 kHz mono int16, exactly 1.0 s),
`_background_noise_/` (numpy noises, kws.prepare.tts.noise), `validation_list.txt` and `testing_list.txt`
(each speaker in one split, by the Speech Commands hash rule), then the manifests of
`kws.prepare.splits.build_manifests`. With `--classes sub` the speakers also say non-keywords into ordinary
word folders and `phrases/` (kws.prepare.tts.unknown_words), from which the manifests draw `unknown`, and
`silence` is cut from the noises, as for Speech Commands. `--streams N` also writes long recordings with their
keyword events (kws.prepare.tts.streams).

A word's folder (and class label) is the word with spaces turned into `_` and apostrophes dropped
(kws.prepare.tts.keywords). Clip k of speaker s of a word depends only on (seed, word, s, k)
and the engines' versions, so runs are byte-identical whatever the worker count, and a larger --speakers or
--clips-per-speaker only adds files. `.kws_tts.json` records what was synthesized (keywords and unknown
words), so a re-run skips the clips already on disk and removes those no longer asked for (the unknown
words' clips too, when `--classes all` follows `sub`); a run that was killed or stopped (Ctrl-C,
SIGTERM) is completed by the next one, and its workers never outlive it (kws.prepare.pool). A keyword whose
speech cannot fit one second is refused before anything is synthesized (`check_fits`).
"""

from __future__ import annotations

import errno
import json
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from kws.audio import CLIP_S, CLIP_SAMPLES, NOISE_DIR, SAMPLE_RATE, float_to_int16, write_wav
from kws.errors import DataError, KWSError
from kws.files import write_json_atomic
from kws.interrupt import sigterm_as_interrupt
from kws.prepare.pool import exit_if_orphaned, process_pool
from kws.prepare.splits import ManifestOptions, PrepareResult, build_manifests, check_options
from kws.prepare.tts.clip import cut_clip, speech_to_clip
from kws.prepare.tts.engines import (
    EngineSpec,
    EngineVoice,
    describe,
    draw_speakers,
    engine_versions,
    hurried,
    say,
    vary,
)
from kws.prepare.tts.keywords import WORD_RE, check_words, word_folder
from kws.prepare.tts.keywords import parse_words as parse_words  # bench/ imports it from here
from kws.prepare.tts.noise import NOISE_KINDS, NOISE_SAMPLES, make_noise, write_background_noises
from kws.prepare.tts.speakers import assign_splits, write_speakers_json, write_split_lists
from kws.prepare.tts.streams import STREAM_MINUTES, StreamPlan, check_stream_options, write_streams
from kws.prepare.tts.styles import RATE_PCT, STYLE_STYLE, Style, draw_style, spoken
from kws.prepare.tts.unknown_words import (
    PHRASE_FOLDER,
    UNKNOWN_FILE,
    choose_unknown_words,
    n_unknown_clips,
    write_unknown_json,
)
from kws.prepare.tts.voices import (
    ESPEAK,
    MAX_RATE_WPM,
    WORD_GAP,
    Draw,
    Speaker,
    Voice,
    espeak_version,
)

STAMP = ".kws_tts.json"
STAMP_FORMAT = 2  # bump when a change to the synthesis alters the audio, so old clips are redone (2: margins)
CLIP_RE = re.compile(r"[0-9a-f]{8}_nohash_\d+\.wav|\..*\.tmp-\d+")  # files this module writes in word folders

# Synthesis (trimming, fitting and placing the speech: kws.prepare.tts.clip)
TASK_CHUNK = 16  # clips per worker task: amortizes the inter-process round trip
MAX_SPEED_UP = 1.25  # beyond this, re-synthesize at a faster espeak-ng rate instead of resampling harder
# Before synthesis, each keyword is spoken once as slowly as a clip can make it at MAX_RATE_WPM: the widest
# word gap and, in the rich style, the slowest <prosody rate>. Accents and variants change the length at one
# rate by a few percent, hence the margin.
LONGEST_VOICE = Voice("en-us", "m1", MAX_RATE_WPM, 50, 100, WORD_GAP[1], 100)
FIT_MARGIN = 1.05
NOISE_CHANCE = 0.5
SNR_DB = (5.0, 30.0)


# ---------------------------------------------------------------- one clip


@dataclass(frozen=True)
class ClipTask:
    word: str
    speaker: Speaker
    k: int
    seed: int
    path: Path
    style: str = "plain"  # the --style: "plain" or "rich" (kws.prepare.tts.styles draws the clip's own style)
    phrase: bool = False  # `word` is an unknown phrase: the clip is a second cut from it (unknown_words)

    def draw(self) -> Draw:
        return Draw(f"kws-tts/{self.seed}/clip/{self.word}/{self.speaker.id}/{self.k}")


def check_fits(words: list[str], style: str, workers: int = 1, option: str = "--words") -> None:
    """Refuse keywords whose speech does not fit one clip even at espeak-ng's fastest rate and the largest
    speed-up allowed (MAX_SPEED_UP), naming them all: their clips would be squeezed past recognition."""
    slowest = Style(rate_pct=RATE_PCT[0]) if style == "rich" else Style()
    limit_s = MAX_SPEED_UP * CLIP_S / FIT_MARGIN
    with ThreadPoolExecutor(max(1, workers)) as pool:  # espeak-ng runs as a subprocess: threads suffice
        speeches = list(pool.map(lambda word: spoken(LONGEST_VOICE, word, slowest), words))
    seconds = [len(speech) / rate for speech, rate in speeches]
    too_long = [f"{w!r} ({s:.2f} s)" for w, s in zip(words, seconds, strict=True) if s > limit_s]
    if too_long:
        raise KWSError(
            f"{option} {', '.join(too_long)}: too long for a {CLIP_S:g} s clip even spoken at espeak-ng's "
            f"fastest rate (at most {limit_s:.2f} s of speech fits); use a shorter phrase"
        )


def render_clip(task: ClipTask) -> np.ndarray:
    """The clip's int16 samples `(CLIP_SAMPLES,)`: speech at a random offset and gain, maybe with noise."""
    return float_to_int16(_add_noise(*clean_clip(task), task.draw()))


def clean_clip(task: ClipTask) -> tuple[np.ndarray, np.ndarray]:
    """(the 16 kHz speech as placed, the float clip `(CLIP_SAMPLES,)`) before any noise is added."""
    draw = task.draw()
    voice = vary(task.speaker.voice, draw)
    style = draw_style(draw, task.style)
    speech, rate = _said(voice, task.word, style)
    if task.phrase:
        return cut_clip(speech, rate, draw)
    if len(speech) * SAMPLE_RATE > MAX_SPEED_UP * CLIP_SAMPLES * rate:  # far too long: the engine hurries
        voice = hurried(voice, len(speech) * SAMPLE_RATE / (CLIP_SAMPLES * rate) * 1.05)
        speech, rate = _said(voice, task.word, style)
    return speech_to_clip(speech, rate, draw)


def _said(voice: Voice | EngineVoice, word: str, style: Style) -> tuple[np.ndarray, int]:
    speech, rate = say(voice, word, style)
    if len(speech) == 0:
        raise KWSError(f"{describe(voice)} produced silence for {word!r}")
    return speech, rate


def _add_noise(speech: np.ndarray, clip: np.ndarray, draw: Draw) -> np.ndarray:
    """The clip, on NOISE_CHANCE of them with a synthetic noise at a random SNR below the speech."""
    if draw.chance("noise", NOISE_CHANCE):
        kind = draw.choice("noise_kind", sorted(NOISE_KINDS))
        speech_rms = float(np.sqrt(np.mean(speech**2)))
        noise = make_noise(kind, CLIP_SAMPLES, draw.rng("noise_samples"))
        clip += noise * speech_rms * 10 ** (-draw.uniform("snr_db", *SNR_DB) / 20)
    return clip


def _write_clip(task: ClipTask) -> None:
    clip = render_clip(task)
    try:
        write_wav(task.path, clip)
    except (OSError, sf.LibsndfileError) as exc:  # raised in a worker: a DataError pickles, these may not
        raise _write_error(exc, task.path) from None


def _write_error(exc: OSError | sf.LibsndfileError, path: Path) -> DataError:
    """One line for a failed write; soundfile reports a full disk as a LibsndfileError, not an OSError."""
    fix = "check --data-root: it must be a folder you can write to"
    if not isinstance(exc, OSError):  # libsndfile does not say why: a full disk is the likely cause
        return DataError(f"cannot write {path}: {exc}; free some space or {fix}, then run again")
    if exc.errno == errno.ENOSPC:
        fix = "free some space"
    return DataError(f"cannot write {exc.filename or path}: {exc.strerror or exc}; {fix}, then run again")


# ---------------------------------------------------------------- the whole dataset


# SIGTERM stops like Ctrl-C: the pool's workers are stopped, the clips written so far are kept (a re-run
# completes the dataset, byte-identical to an uninterrupted run) and the CLI exits 143.
@sigterm_as_interrupt()
def prepare_tts(
    data_root: Path,
    name: str,
    words: list[str],
    *,
    n_speakers: int,
    clips_per_speaker: int,
    opts: ManifestOptions,
    style: str = "rich",
    unknown_words: Sequence[str] = (),
    n_streams: int = 0,
    stream_minutes: float = STREAM_MINUTES,
    free_minutes: float | None = None,
    engines: Sequence[EngineSpec] = (),
) -> PrepareResult:
    """Synthesize DATA_ROOT/NAME/ (skipping clips already there), write the split lists and noises, then the
    manifests. Notes in the result say how many clips were synthesized and how fast. `style` "plain" says
    each keyword alone in the speaker's voice; "rich" varies prosody, carrier phrases and intonation per clip
    (kws.prepare.tts.styles). With `opts.classes` "sub" the speakers also say non-keywords for `unknown`
    (`unknown_words` added to the built-in ones: kws.prepare.tts.unknown_words). `n_streams` > 0 also writes
    long recordings (kws.prepare.tts.streams); `free_minutes` overrides their keyword-free total. `engines`
    (default espeak-ng alone) take the speakers in turn (kws.prepare.tts.engines)."""
    check_options(opts)
    words = check_words(list(words))
    if style not in STYLE_STYLE:
        raise KWSError(f"--style {style!r} is not one of {', '.join(STYLE_STYLE)}")
    if n_speakers < 1 or clips_per_speaker < 1:
        raise KWSError(
            f"--speakers and --clips-per-speaker must be at least 1, got {n_speakers} and {clips_per_speaker}"
        )
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise KWSError(f"--name {name!r} must be a plain folder name (no path separators)")
    if unknown_words and opts.classes != "sub":
        raise KWSError("--unknown-words needs --classes sub (the class they are spoken for); add it")
    unknown_words = check_words(list(unknown_words), "--unknown-words") if unknown_words else []
    check_stream_options(n_streams, stream_minutes, free_minutes)
    opts = replace(opts, keywords=tuple(word_folder(w) for w in words))
    version = espeak_version()  # espeak-ng also phonemizes the unknown words and sizes every keyword
    others = engine_versions(engines)  # before any work: a missing engine names its install command
    dataset_dir = Path(data_root).resolve() / name
    content: dict[str, Any] = {
        "format": STAMP_FORMAT,
        "espeak_ng": version,
        "seed": opts.seed,
        "style": style,
    }
    if not _espeak_alone(engines):  # espeak-ng alone keeps the stamp of earlier runs
        content["engines"] = {s.label: others.get(s.label, version) for s in engines}
    old = _read_stamp(dataset_dir)
    if old is not None and "style" not in old:  # written before --style existed: plain
        old = {**old, "style": "plain"}
    reuse = old is not None and all(old.get(k) == v for k, v in content.items())

    speakers = draw_speakers(opts.seed, n_speakers, engines)
    split = assign_splits([s.id for s in speakers])  # before synthesis: too few speakers is an error
    streams = StreamPlan.build(
        n_streams, stream_minutes, free_minutes, words, speakers, split, seed=opts.seed, style=style
    )
    tasks = [
        ClipTask(w, s, k, opts.seed, dataset_dir / word_folder(w) / f"{s.id}_nohash_{k}.wav", style)
        for w in words
        for s in speakers
        for k in range(clips_per_speaker)
    ]
    unknown = choose_unknown_words(words, unknown_words) if opts.classes == "sub" else None
    unknown_tasks: list[ClipTask] = []
    if unknown is not None:
        n_unknown = n_unknown_clips(len(words), clips_per_speaker)
        picks = [(unknown.pick(opts.seed, s.id, m), s, m) for s in speakers for m in range(n_unknown)]
        unknown_tasks = [
            ClipTask(c.text, s, m, opts.seed, folder / f"{s.id}_nohash_{m}.wav", style, c.phrase)
            for c, s, m in picks
            for folder in [dataset_dir / c.folder]
        ]
    tasks += unknown_tasks
    # Only well-formed words from the old stamp: a hand-edited stamp must not point deletions elsewhere.
    old_words = [
        w
        for key in ("words", "unknown_words")
        for w in (old or {}).get(key, [])
        if isinstance(w, str) and WORD_RE.fullmatch(w)
    ]
    # Before anything is written: a word too long for a clip is refused, not squeezed (only the words with
    # clips to make, so a re-run that has nothing to do speaks nothing; the built-in unknown words are short).
    # espeak-ng's length stands for every engine's: the others are hurried or sped up to fit, never refused.
    to_make = {t.word for t in tasks if not (reuse and t.path.is_file())}
    workers = opts.workers or os.cpu_count() or 1
    check_fits([w for w in words if w in to_make], style, workers)
    check_fits([w for w in unknown_words if w in to_make], style, workers, "--unknown-words")
    try:
        stamp: dict[str, Any] = {**content, "words": words}
        if unknown is not None:
            stamp["unknown_words"] = unknown.words
        stamp.update(n_speakers=n_speakers, clips_per_speaker=clips_per_speaker)
        _remove_stale(
            dataset_dir,
            [*old_words, *words, *stamp.get("unknown_words", []), PHRASE_FOLDER],
            {t.path for t in tasks} if reuse else set(),
        )
        if old != {**stamp, "complete": True}:  # left untouched when nothing changes: a re-run writes nothing
            write_json_atomic(dataset_dir / STAMP, {**stamp, "complete": False})

        missing = [t for t in tasks if not t.path.is_file()]
        notes = []
        if missing:
            seconds = _run(missing, workers)
            notes.append(
                f"synthesized {len(missing):,} clips with {_engine_names(engines, version)} in "
                f"{seconds:.1f} s ({len(missing) / seconds:,.1f} clips/s)"
            )
        else:
            notes.append(f"all {len(tasks):,} synthesized clips are already in {dataset_dir}")
        noise_dir = dataset_dir / NOISE_DIR
        if not reuse or any(not (noise_dir / f"{kind}.wav").is_file() for kind in NOISE_KINDS):
            write_background_noises(noise_dir, opts.seed, NOISE_SAMPLES)
        clips = [(t.path, t.speaker.id) for t in tasks]
        write_split_lists(dataset_dir, clips, split)
        header: dict[str, Any] = {"seed": opts.seed, "style": style, "espeak_ng": version}
        if "engines" in content:
            header["engines"] = content["engines"]
        write_speakers_json(dataset_dir, speakers, split, clips, **header)
        if unknown is not None:
            clip_words = [PHRASE_FOLDER if t.phrase else t.word for t in unknown_tasks]
            write_unknown_json(dataset_dir, words, unknown, clip_words, opts.seed)
        else:
            (dataset_dir / UNKNOWN_FILE).unlink(missing_ok=True)
        if old != {**stamp, "complete": True}:
            write_json_atomic(dataset_dir / STAMP, {**stamp, "complete": True})
    except (OSError, sf.LibsndfileError) as exc:  # unwritable --data-root, disk full
        raise _write_error(exc, dataset_dir) from None

    result = build_manifests(dataset_dir, opts)
    result.notes[:0] = notes
    try:
        synth = version if "engines" not in content else json.dumps(content["engines"], sort_keys=True)
        result.notes.extend(write_streams(dataset_dir, streams, synth, workers))
    except (OSError, sf.LibsndfileError) as exc:
        raise _write_error(exc, dataset_dir) from None
    return result


def _espeak_alone(engines: Sequence[EngineSpec]) -> bool:
    return [s.engine for s in engines] in ([], [ESPEAK])


def _engine_names(engines: Sequence[EngineSpec], espeak_ng: str) -> str:
    return f"espeak-ng {espeak_ng}" if _espeak_alone(engines) else ", ".join(s.label for s in engines)


def _read_stamp(dataset_dir: Path) -> dict[str, Any] | None:
    """The previous run's stamp; None for a new folder; DataError for a folder kws did not make."""
    try:
        return dict(json.loads((dataset_dir / STAMP).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        if dataset_dir.is_dir() and any(dataset_dir.iterdir()):
            raise DataError(
                f"{dataset_dir} exists and was not made by `kws prepare --dataset tts`; "
                "pick another --name or --data-root, or remove the folder"
            ) from None
        return None


def _remove_stale(dataset_dir: Path, words: list[str], keep: set[Path]) -> None:
    """Delete the clips this module wrote that are not in `keep` (and leftovers of killed runs)."""
    for folder in {dataset_dir / word_folder(w) for w in words}:
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if CLIP_RE.fullmatch(path.name) and path not in keep:
                path.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()


def _write_clips(tasks: list[ClipTask]) -> int:
    exit_if_orphaned()  # where PR_SET_PDEATHSIG is missing: no clips written for a parent that is gone
    for task in tasks:
        _write_clip(task)
    return len(tasks)


def _run(tasks: list[ClipTask], workers: int) -> float:
    """Render and write `tasks` over `workers` processes with a progress bar; returns the seconds taken."""
    from kws.console import item_progress

    start = time.perf_counter()
    with item_progress("clips") as bar:
        task_id = bar.add_task("synthesizing", total=len(tasks))
        if workers == 1 or len(tasks) < 2:
            for task in tasks:
                _write_clip(task)
                bar.advance(task_id)
            return max(time.perf_counter() - start, 1e-9)
        # An executor, not multiprocessing.Pool: when a worker dies (out of memory), Pool waits forever for
        # its tasks, while the executor fails at once with BrokenProcessPool. The workers die with this
        # process (kws.prepare.pool), so a killed run leaves none behind writing files.
        chunks = [tasks[i : i + TASK_CHUNK] for i in range(0, len(tasks), TASK_CHUNK)]
        with process_pool(min(workers, len(chunks))) as pool:
            futures = [pool.submit(_write_clips, chunk) for chunk in chunks]
            try:
                for future in as_completed(futures):
                    bar.advance(task_id, future.result())
            except BrokenProcessPool:
                raise KWSError(
                    "a synthesis worker process died (out of memory?); re-run the same command to resume, "
                    "with fewer --workers if it happens again"
                ) from None
            finally:  # on Ctrl-C or SIGTERM too: the pool then waits only for the chunks already started
                for future in futures:
                    future.cancel()
    return max(time.perf_counter() - start, 1e-9)
