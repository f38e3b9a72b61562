"""listen-errors: read an evaluation's report.json, pick and order its misclassifications, write the
errors page, and optionally play the clips one by one in the terminal.

The terminal session takes its audio output and its keys as arguments (`AudioOutput`, `KeySource`) so
that it runs the same with a sound card and keyboard as with a recorder and scripted keys in tests.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from kws.audio import SAMPLE_RATE, read_wav, sounddevice_module
from kws.errors import DataError, KWSError
from kws.evaluate.page import PageResult, write_errors_page
from kws.evaluate.report import REPORT_FILE, EvalReport, Misclassified, read_report_json
from kws.files import read_text, write_text_atomic

SORTS = ("confidence", "-confidence", "pair")
ERRORS_PAGE = "errors.html"
SUSPECT_FILE = "suspect_labels.txt"
DEFAULT_TOP = 200  # cards on the page: each embeds ~60 kB of audio and picture
KEYS_HELP = "[enter/n] next  [r] replay  [p] previous  [m] mislabeled (and next)  [q] quit"

KeySource = Callable[[], str]  # returns one key: "enter", "n", "r", "p", "m", "q", ...


def sort_errors(errors: Sequence[Misclassified], order: str = "confidence") -> list[Misclassified]:
    """confidence: least confident first (the reference convention); -confidence: most confident first
    (confident errors are often wrong labels); pair: grouped by (true, predicted), most frequent pair
    first, least confident first within a pair."""
    if order == "confidence":
        return sorted(errors, key=lambda m: (m.confidence, m.index))
    if order == "-confidence":
        return sorted(errors, key=lambda m: (-m.confidence, m.index))
    if order == "pair":
        counts = Counter((m.label, m.predicted) for m in errors)
        return sorted(
            errors,
            key=lambda m: (-counts[(m.label, m.predicted)], m.label, m.predicted, m.confidence, m.index),
        )
    raise KWSError(f"unknown sort order {order!r}; use one of {', '.join(SORTS)}")


@dataclass
class ListenResult:
    report: EvalReport
    errors: list[Misclassified]  # the selection, in order
    page: PageResult | None = None


def listen_errors(
    eval_dir: Path, *, top: int | None = DEFAULT_TOP, sort: str = "confidence", html: bool = True
) -> ListenResult:
    """Load EVAL_DIR/report.json, sort and cut its errors (`top` None or 0: all), write errors.html."""
    eval_dir = Path(eval_dir)
    if eval_dir.is_file():  # e.g. runs/x/eval/test/report.json: the folder is what was meant
        raise DataError(
            f"{eval_dir} is a file; pass the folder of the evaluation that holds it instead: "
            f"kws listen-errors {eval_dir.parent}"
        )
    if not eval_dir.is_dir():
        raise DataError(f"evaluation folder {eval_dir} does not exist; run `kws evaluate` first")
    report = read_report_json(eval_dir / REPORT_FILE)
    if top is not None and top < 0:
        raise KWSError(f"--top must be 0 (all) or a positive count, got {top}")
    errors = sort_errors(report.misclassified, sort)
    if top:
        errors = errors[:top]
    page = write_errors_page(eval_dir / ERRORS_PAGE, report, errors, sort=sort) if html else None
    return ListenResult(report, errors, page)


# ---------------------------------------------------------------- suspect labels


def read_suspects(eval_dir: Path) -> list[str]:
    path = Path(eval_dir) / SUSPECT_FILE
    if not path.is_file():
        return []
    text = read_text(path, "the suspects list", DataError, "fix or delete it")
    return [line.strip() for line in text.splitlines() if line.strip()]


def mark_suspect(eval_dir: Path, audio_filepath: str) -> bool:
    """Add a clip to EVAL_DIR/suspect_labels.txt (one path a line); False if it was there already."""
    suspects = read_suspects(eval_dir)
    if audio_filepath in suspects:
        return False
    write_text_atomic(Path(eval_dir) / SUSPECT_FILE, "".join(f"{p}\n" for p in [*suspects, audio_filepath]))
    return True


# ---------------------------------------------------------------- audio and keys


class AudioOutput(Protocol):
    def play(self, samples: np.ndarray, sample_rate: int) -> None:
        """Start playing int16 samples `(samples,)`; returns at once."""

    def stop(self) -> None: ...


class SoundDeviceOutput:
    """The sound card, through the optional `sounddevice` package (`pip install 'kws[audio]'`)."""

    def __init__(self) -> None:
        sounddevice = sounddevice_module("--play", "open errors.html instead")
        try:
            sounddevice.query_devices(kind="output")
        except Exception as exc:  # PortAudioError or ValueError, depending on the host API
            raise KWSError(
                f"no sound output device found ({exc}); --play needs one. "
                "Open errors.html in a browser instead"
            ) from None
        self._sd = sounddevice

    def play(self, samples: np.ndarray, sample_rate: int) -> None:
        self._sd.play(samples, sample_rate)

    def stop(self) -> None:
        self._sd.stop()


def terminal_keys() -> KeySource:
    """Single key presses from a terminal; one line per key when stdin is not a terminal (end of input: q)."""
    stdin = sys.stdin

    def read_line() -> str:
        line = stdin.readline()
        if line == "":
            return "q"
        return line.strip().lower()[:1] or "enter"

    try:
        import termios
        import tty
    except ImportError:  # not a POSIX system: lines it is
        return read_line
    if not stdin.isatty():
        return read_line

    def read_key() -> str:
        fd = stdin.fileno()
        old = termios.tcgetattr(fd)
        try:
            tty.setcbreak(fd)  # keys arrive one by one; Ctrl-C still interrupts
            ch = stdin.read(1)
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, old)
        return "enter" if ch in ("\r", "\n", " ") else ch.lower()

    return read_key


# ---------------------------------------------------------------- the terminal session


@dataclass
class PlaySummary:
    n_heard: int = 0  # distinct clips played
    marked: list[str] = field(default_factory=list)  # newly added to suspect_labels.txt


@dataclass(frozen=True)
class ClipView:
    """What the terminal shows for the clip being played: the error, its place in the list, and notes."""

    err: Misclassified
    position: int  # 1-based
    total: int
    marked: bool  # already in suspect_labels.txt
    note: str = ""  # e.g. why the clip cannot be played


def _silent(item: ClipView | str) -> None:
    pass


def play_session(
    eval_dir: Path,
    errors: Sequence[Misclassified],
    *,
    output: AudioOutput,
    keys: KeySource,
    show: Callable[[ClipView | str], None] = _silent,
) -> PlaySummary:
    """Play each error's clip and act on keys; marked clips go to EVAL_DIR/suspect_labels.txt.
    `show` displays each clip's facts and the session's messages: the CLI draws them, this prints nothing."""
    summary = PlaySummary()
    heard: set[int] = set()
    marked = set(read_suspects(eval_dir))
    i, play = 0, True
    try:
        while 0 <= i < len(errors):
            err = errors[i]
            note = ""
            if play:
                try:
                    output.play(read_wav(Path(err.audio_filepath)), SAMPLE_RATE)
                    heard.add(i)
                except DataError as exc:
                    note = f"cannot play: {exc}"
                show(ClipView(err, i + 1, len(errors), err.audio_filepath in marked, note))
            key = keys()
            play = True
            if key in ("enter", "n", ""):
                i += 1
            elif key == "r":
                pass
            elif key == "p":
                i = max(0, i - 1)
            elif key == "m":
                if mark_suspect(eval_dir, err.audio_filepath):
                    summary.marked.append(err.audio_filepath)
                marked.add(err.audio_filepath)
                show(f"marked {err.audio_filepath}")
                i += 1
            elif key == "q":
                break
            else:
                show(f"unknown key {key!r}; {KEYS_HELP}")
                play = False
    finally:
        output.stop()
    summary.n_heard = len(heard)
    return summary
