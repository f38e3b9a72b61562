"""`kws prepare --dataset tts`: keywords spoken by synthetic espeak-ng speakers, in Speech Commands layout.

DATA_ROOT/NAME/ gets `<word>/<speakerid>_nohash_<k>.wav` (16 kHz mono int16, exactly 1.0 s),
`_background_noise_/` (numpy noises, kws.prepare.tts.noise), `validation_list.txt` and `testing_list.txt`
(each speaker in one split, by the Speech Commands hash rule), then the manifests of
`kws.prepare.splits.build_manifests`.

A keyword's folder (and class label) is the word with spaces turned into `_` and apostrophes dropped:
`hey kws` -> `hey_kws`, `don't` -> `dont`. Clip k of speaker s of a word depends only on (seed, word, s, k)
and the espeak-ng version, so runs are byte-identical whatever the worker count, and a larger --speakers or
--clips-per-speaker only adds files. `.kws_tts.json` records what was synthesized, so a re-run skips the
clips already on disk and removes those no longer asked for.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import multiprocessing
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from numpy.lib.stride_tricks import sliding_window_view

from kws.audio import CLIP_SAMPLES, SAMPLE_RATE, float_to_int16, write_wav
from kws.errors import DataError, KWSError
from kws.files import write_json_atomic
from kws.prepare.splits import NOISE_DIR, ManifestOptions, PrepareResult, build_manifests, check_options
from kws.prepare.tts.noise import NOISE_KINDS, NOISE_SAMPLES, make_noise, write_background_noises
from kws.prepare.tts.speakers import assign_splits, write_speakers_json, write_split_lists
from kws.prepare.tts.styles import STYLE_STYLE, Style, draw_style, speak
from kws.prepare.tts.voices import Draw, Speaker, Voice, draw_speakers, espeak_version, jitter

V1_WORDS = (
    "bed bird cat dog down eight five four go happy house left marvin nine no off on one right seven sheila "
    "six stop three tree two up wow yes zero"
).split()
WORD_RE = re.compile(r"[a-z0-9]+(?:['\- ][a-z0-9]+)*")  # letters/digits, single inner space, ' or -
MAX_WORD_CHARS = 40
RESERVED_LABELS = ("unknown", "silence")  # classes that `--classes sub` adds itself
STAMP = ".kws_tts.json"
STAMP_FORMAT = 1  # bump when a change to the synthesis alters the audio, so old clips are redone
CLIP_RE = re.compile(r"[0-9a-f]{8}_nohash_\d+\.wav|\..*\.tmp-\d+")  # files this module writes in word folders

# Post-processing
TRIM_DB = -50.0  # frames this far below the loudest 10 ms frame are silence (espeak-ng's pauses are ~zero)
TRIM_MARGIN_S = 0.02  # kept on each side of the speech, so soft onsets and releases survive
FADE_S = 0.005
TASK_CHUNK = 16  # clips per worker task: amortizes the inter-process round trip
MAX_SPEED_UP = 1.25  # beyond this, re-synthesize at a faster espeak-ng rate instead of resampling harder
MAX_RATE_WPM = 450  # espeak-ng's fastest rate
PEAK_DBFS = (-20.0, -1.0)  # random gain: the clip's peak level
NOISE_CHANCE = 0.5
SNR_DB = (5.0, 30.0)
# Resampling: a windowed-sinc polyphase filter, the same design as torchaudio.functional.resample (hann
# window, 6 zero crossings), written in numpy so that worker processes start without importing torch.
LOWPASS_ZEROS = 6
ROLLOFF = 0.99
MAX_FILTER_BANK = 1 << 20  # phases x input step of the reduced rate ratio; 22050 -> 16000 is 320 x 441


def word_folder(word: str) -> str:
    return word.replace(" ", "_").replace("'", "")


def parse_words(text: str | None) -> list[str]:
    """`--words`: comma-separated keywords, lower-cased, inner spaces collapsed; None -> the 30 v1 words."""
    if text is None:
        return list(V1_WORDS)
    if not text.strip():
        raise KWSError("--words is empty; pass comma-separated keywords, e.g. --words yes,no,'hey kws'")
    return check_words([" ".join(item.lower().split()) for item in text.split(",")])


def check_words(words: list[str]) -> list[str]:
    """Refuse empty, unspeakable, reserved or duplicate keywords with a message naming them."""
    if not words:
        raise KWSError("no keywords given; pass comma-separated keywords, e.g. --words yes,no,up")
    seen: dict[str, str] = {}
    for i, word in enumerate(words, 1):
        if not word:
            raise KWSError(f"--words item {i} is empty (two commas in a row, or a trailing comma?)")
        if len(word) > MAX_WORD_CHARS or not WORD_RE.fullmatch(word):
            raise KWSError(
                f"--words item {i} {word!r} is not a keyword kws can synthesize: use at most "
                f"{MAX_WORD_CHARS} characters of a-z, 0-9, single spaces, ' and - (no other punctuation)"
            )
        folder = word_folder(word)
        if folder in RESERVED_LABELS:
            raise KWSError(f"--words item {i} {word!r} is reserved: `--classes sub` adds that class itself")
        if folder in seen and seen[folder] == word:
            raise KWSError(f"--words lists {word!r} twice (words are compared in lower case)")
        if folder in seen:
            raise KWSError(
                f"--words {seen[folder]!r} and {word!r} would share the folder {folder!r}; keep one"
            )
        seen[folder] = word
    return words


# ---------------------------------------------------------------- one clip


@dataclass(frozen=True)
class ClipTask:
    word: str
    speaker: Speaker
    k: int
    seed: int
    path: Path
    style: str = "plain"  # the --style: "plain" or "rich" (kws.prepare.tts.styles draws the clip's own style)

    def draw(self) -> Draw:
        return Draw(f"kws-tts/{self.seed}/clip/{self.word}/{self.speaker.id}/{self.k}")


@functools.lru_cache(maxsize=32)
def _sinc_kernel(orig: int, new: int) -> tuple[np.ndarray, int]:
    """(new, 2*width + orig) filter bank: row i makes output phase i from a window of the input."""
    base = min(orig, new) * ROLLOFF
    width = math.ceil(LOWPASS_ZEROS * orig / base)
    taps = np.arange(-width, width + orig) / orig
    t = np.clip((taps[None, :] - np.arange(new)[:, None] / new) * base, -LOWPASS_ZEROS, LOWPASS_ZEROS)
    window = np.cos(t * np.pi / LOWPASS_ZEROS / 2) ** 2
    return np.sinc(t) * window * (base / orig), width


def resample(audio: np.ndarray, orig_hz: int, new_hz: int) -> np.ndarray:
    """Band-limited resampling of float audio `(samples,)`; output length ceil(samples * new / orig)."""
    g = math.gcd(orig_hz, new_hz)
    orig, new = orig_hz // g, new_hz // g
    if orig * new > MAX_FILTER_BANK:  # the bank is (new, ~orig) floats: refuse rather than exhaust memory
        raise ValueError(
            f"resample {orig_hz} Hz -> {new_hz} Hz needs a {new}x{orig} filter bank; round the rates"
        )
    kernel, width = _sinc_kernel(orig, new)
    padded = np.pad(audio.astype(np.float64), (width, width + orig))
    frames = sliding_window_view(padded, kernel.shape[1])[::orig]  # (blocks, taps): one per `orig` inputs
    # einsum, not matmul: small enough that BLAS threads only add overhead (and contention with the workers).
    out = np.einsum("bt,nt->bn", frames, kernel).reshape(-1)
    return out[: math.ceil(len(audio) * new / orig)]


def trim_silence(audio: np.ndarray, rate: int) -> np.ndarray:
    """Cut leading and trailing frames more than TRIM_DB below the loudest frame, keeping a margin."""
    frame = rate // 100
    n = len(audio) // frame
    if n == 0:
        return audio[:0]
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1))
    if rms.max() < 1e-4:
        return audio[:0]
    active = np.flatnonzero(rms >= rms.max() * 10 ** (TRIM_DB / 20))
    margin = round(TRIM_MARGIN_S * rate)
    return audio[max(0, active[0] * frame - margin) : min(len(audio), (active[-1] + 1) * frame + margin)]


def fit_to_clip(speech: np.ndarray, rate: int) -> np.ndarray:
    """Resample speech at `rate` to 16 kHz. Longer than 1 s, it is played slightly faster: resampled to a
    lower rate (a multiple of 50 Hz, which keeps the filter bank small) and taken as 16 kHz."""
    target_hz = SAMPLE_RATE
    if len(speech) * SAMPLE_RATE > CLIP_SAMPLES * rate:
        target_hz = CLIP_SAMPLES * rate // len(speech) // 50 * 50
    return resample(speech, rate, target_hz)[:CLIP_SAMPLES]


def fade(audio: np.ndarray) -> np.ndarray:
    """Raised-cosine fade-in and fade-out of FADE_S, so the cut edges of trimmed speech do not click."""
    n = min(round(FADE_S * SAMPLE_RATE), len(audio) // 2)
    ramp = np.sin(np.linspace(0.0, np.pi / 2, n + 2)[1:-1]) ** 2
    out = audio.copy()
    out[:n] *= ramp
    out[len(out) - n :] *= ramp[::-1]
    return out


def place_in_clip(speech: np.ndarray, draw: Draw) -> tuple[np.ndarray, np.ndarray]:
    """Scale 16 kHz `speech` to a random peak level and put it at a random offset in one second of silence;
    returns the scaled speech and the float clip `(CLIP_SAMPLES,)`."""
    peak = max(float(np.max(np.abs(speech))), 1e-9)
    speech = speech * (10 ** (draw.uniform("peak_dbfs", *PEAK_DBFS) / 20) / peak)
    clip = np.zeros(CLIP_SAMPLES)
    offset = draw.integer("offset", 0, CLIP_SAMPLES - len(speech))
    clip[offset : offset + len(speech)] = speech
    return speech, clip


def _speech(voice: Voice, word: str, style: Style) -> tuple[np.ndarray, int]:
    audio, rate = speak(voice, word, style)
    return trim_silence(audio, rate), rate


def render_clip(task: ClipTask) -> np.ndarray:
    """The clip's int16 samples `(CLIP_SAMPLES,)`: speech at a random offset and gain, maybe with noise."""
    draw = task.draw()
    voice = jitter(task.speaker.voice, draw)
    style = draw_style(draw, task.style)
    speech, rate = _speech(voice, task.word, style)
    if len(speech) * SAMPLE_RATE > MAX_SPEED_UP * CLIP_SAMPLES * rate:  # far too long: ask espeak-ng to hurry
        factor = len(speech) * SAMPLE_RATE / (CLIP_SAMPLES * rate) * 1.05
        voice = replace(voice, rate_wpm=min(MAX_RATE_WPM, math.ceil(voice.rate_wpm * factor)))
        speech, rate = _speech(voice, task.word, style)
    if len(speech) == 0:
        raise KWSError(f"espeak-ng produced silence for {task.word!r} with voice {voice.key()}")
    speech, clip = place_in_clip(fade(fit_to_clip(speech, rate)), draw)
    if draw.chance("noise", NOISE_CHANCE):
        kind = draw.choice("noise_kind", sorted(NOISE_KINDS))
        speech_rms = float(np.sqrt(np.mean(speech**2)))
        noise = make_noise(kind, CLIP_SAMPLES, draw.rng("noise_samples"))
        clip += noise * speech_rms * 10 ** (-draw.uniform("snr_db", *SNR_DB) / 20)
    return float_to_int16(clip)


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


def prepare_tts(
    data_root: Path,
    name: str,
    words: list[str],
    *,
    n_speakers: int,
    clips_per_speaker: int,
    opts: ManifestOptions,
    style: str = "rich",
) -> PrepareResult:
    """Synthesize DATA_ROOT/NAME/ (skipping clips already there), write the split lists and noises, then the
    manifests. Notes in the result say how many clips were synthesized and how fast. `style` "plain" says
    each keyword alone in the speaker's voice; "rich" varies prosody, carrier phrases and intonation per clip
    (kws.prepare.tts.styles)."""
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
    version = espeak_version()
    dataset_dir = Path(data_root).resolve() / name
    content = {"format": STAMP_FORMAT, "espeak_ng": version, "seed": opts.seed, "style": style}
    old = _read_stamp(dataset_dir)
    if old is not None and "style" not in old:  # written before --style existed: plain
        old = {**old, "style": "plain"}
    reuse = old is not None and all(old.get(k) == v for k, v in content.items())

    speakers = draw_speakers(opts.seed, n_speakers)
    split = assign_splits([s.id for s in speakers])  # before synthesis: too few speakers is an error
    tasks = [
        ClipTask(w, s, k, opts.seed, dataset_dir / word_folder(w) / f"{s.id}_nohash_{k}.wav", style)
        for w in words
        for s in speakers
        for k in range(clips_per_speaker)
    ]
    # Only well-formed words from the old stamp: a hand-edited stamp must not point deletions elsewhere.
    old_words = [w for w in (old or {}).get("words", []) if isinstance(w, str) and WORD_RE.fullmatch(w)]
    try:
        _remove_stale(dataset_dir, [*old_words, *words], {t.path for t in tasks} if reuse else set())
        stamp = {**content, "words": words, "n_speakers": n_speakers, "clips_per_speaker": clips_per_speaker}
        if old != {**stamp, "complete": True}:  # left untouched when nothing changes: a re-run writes nothing
            write_json_atomic(dataset_dir / STAMP, {**stamp, "complete": False})

        missing = [t for t in tasks if not t.path.is_file()]
        notes = []
        if missing:
            seconds = _run(missing, opts.workers or os.cpu_count() or 1)
            notes.append(
                f"synthesized {len(missing):,} clips with espeak-ng {version} in {seconds:.1f} s "
                f"({len(missing) / seconds:,.1f} clips/s)"
            )
        else:
            notes.append(f"all {len(tasks):,} synthesized clips are already in {dataset_dir}")
        noise_dir = dataset_dir / NOISE_DIR
        if not reuse or any(not (noise_dir / f"{kind}.wav").is_file() for kind in NOISE_KINDS):
            write_background_noises(noise_dir, opts.seed, NOISE_SAMPLES)
        clips = [(t.path, t.speaker.id) for t in tasks]
        write_split_lists(dataset_dir, clips, split)
        write_speakers_json(
            dataset_dir, speakers, split, clips, seed=opts.seed, style=style, espeak_ng=version
        )
        if old != {**stamp, "complete": True}:
            write_json_atomic(dataset_dir / STAMP, {**stamp, "complete": True})
    except (OSError, sf.LibsndfileError) as exc:  # unwritable --data-root, disk full
        raise _write_error(exc, dataset_dir) from None

    result = build_manifests(dataset_dir, opts)
    result.notes[:0] = notes
    return result


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
        # spawn, not fork: the progress bar's refresh thread is running, and fork copies locks it may hold.
        # An executor, not multiprocessing.Pool: when a worker dies (out of memory), Pool waits forever for
        # its tasks, while the executor fails at once with BrokenProcessPool.
        chunks = [tasks[i : i + TASK_CHUNK] for i in range(0, len(tasks), TASK_CHUNK)]
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=context) as pool:
            futures = [pool.submit(_write_clips, chunk) for chunk in chunks]
            try:
                for future in as_completed(futures):
                    bar.advance(task_id, future.result())
            except BrokenProcessPool:
                raise KWSError(
                    "a synthesis worker process died (out of memory?); re-run the same command to resume, "
                    "with fewer --workers if it happens again"
                ) from None
            finally:
                for future in futures:
                    future.cancel()
    return max(time.perf_counter() - start, 1e-9)
