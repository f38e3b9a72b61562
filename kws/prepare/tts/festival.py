"""Festival, an engine of the TTS source (kws.prepare.tts.engines), with the English voices Debian packages:
kal_diphone (festvox-kallpc16k, US male), ked_diphone (festvox-kdlpc16k, US male) and the HTS voice
cmu_us_slt_arctic_hts (festvox-us-slt-hts, US female).

Festival takes a third of a second to start, so each process that synthesizes keeps one Festival running
(`--pipe`: Scheme commands on its stdin) and asks it for one wave file at a time; a file appears under its
final name only once written (Festival renames it), which is what this side waits for. The Festival dies
with its stdin: when the worker process ends, however it ends. Its folder of wave files, `kws-festival-*` in
the temporary directory, is removed at exit, and by the next Festival started here when its process was
killed before it could (SIGKILL).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
import soundfile as sf

from kws.errors import KWSError
from kws.prepare.tts.engines import program_version

if TYPE_CHECKING:
    from kws.prepare.tts.engines import EngineSpec, EngineVoice

FESTIVAL = "festival"
PACKAGES = {
    "kal_diphone": "festvox-kallpc16k",
    "ked_diphone": "festvox-kdlpc16k",
    "cmu_us_slt_arctic_hts": "festvox-us-slt-hts",
}
INSTALL = f"sudo apt-get install festival {' '.join(PACKAGES.values())}"
VOICES = tuple(PACKAGES)
HTS_VOICES = {"cmu_us_slt_arctic_hts"}  # their tempo is the HTS engine's -r; the others' Duration_Stretch
DIPHONE_STRETCH = 1.1  # the diphone voices' own Duration_Stretch (their voice_* functions set it)
# int_lr_params target_f0_mean: 85 Hz and lower aborts slow speech in Festival 2.5
F0_VOICES = {"kal_diphone": (95.0, 165.0), "ked_diphone": (95.0, 165.0)}
F0_STD_PER_HZ = 14 / 105  # the voices' own target_f0_std over target_f0_mean: the range scales with the mean
TIMEOUT_S = 60.0
DIR_PREFIX = "kws-festival-"
LOCK_FILE = "lock"  # held (flock) by the process the folder belongs to, for its lifetime
ORPHAN_AGE_S = 60.0


def voices(spec: EngineSpec) -> tuple[str, ...]:
    return VOICES


def version(spec: EngineSpec) -> str:
    """Festival's version; KWSError naming the packages to install when it or a voice is missing."""
    exe, found = program_version(FESTIVAL, r"System:\s*([\d.]+)", INSTALL)
    listed = subprocess.run(
        [exe, "-b", "(print (voice.list))"], capture_output=True, text=True, check=False
    ).stdout
    missing = [PACKAGES[v] for v in VOICES if v not in listed.split("(")[-1].replace(")", " ").split()]
    if missing:
        raise KWSError(
            f"--engines festival: the voice packages {', '.join(missing)} are missing; install them with "
            f"`sudo apt-get install {' '.join(missing)}`"
        )
    return found


class FestivalError(KWSError):
    def __init__(self, message: str, returncode: int | None) -> None:
        super().__init__(message)
        self.returncode = returncode  # None: Festival is still running (it refused the request)


class _Festival:
    """One running Festival and the voice it has selected."""

    def __init__(self) -> None:
        import fcntl

        remove_orphans()
        self.dir = Path(tempfile.mkdtemp(prefix=DIR_PREFIX))
        self.held = open(self.dir / LOCK_FILE, "w")  # noqa: SIM115  (closed in close(); the system frees it)
        fcntl.flock(self.held, fcntl.LOCK_EX)
        self.stderr: IO[str] = open(self.dir / "stderr.txt", "w+", encoding="utf-8")  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [FESTIVAL, "--pipe"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=self.stderr,
                text=True,
                start_new_session=True,  # a terminal's Ctrl-C is for kws: Festival would abort the request
            )
        except FileNotFoundError:
            raise KWSError(f"Festival is not installed; install it with `{INSTALL}`") from None
        self.voice: str | None = None
        self.n = 0
        self.stderr_at = 0
        self.lock = threading.Lock()

    def say(self, voice: str, text: str, tempo: float, f0_hz: float | None) -> tuple[np.ndarray, int]:
        with self.lock:
            self.n += 1
            part, done = self.dir / f"{self.n}.part", self.dir / f"{self.n}.wav"
            failed = self.dir / f"{self.n}.failed"
            cmds = [] if voice == self.voice else [f"(voice_{voice})"]
            if voice in HTS_VOICES:
                cmds.append(f'(set! hts_engine_params (append {_hts_params(voice)} \'(("-r" {tempo:.4f}))))')
            else:
                cmds.append(f"(Parameter.set 'Duration_Stretch {DIPHONE_STRETCH / tempo:.4f})")
            if f0_hz is not None:
                cmds.append(
                    f"(set! int_lr_params '((target_f0_mean {f0_hz:.1f}) (target_f0_std "
                    f"{f0_hz * F0_STD_PER_HZ:.1f}) (model_f0_mean 170) (model_f0_std 34)))"
                )
            cmds.append(f'(utt.save.wave (utt.synth (Utterance Text {_quote(text)})) "{part}" \'riff)')
            cmds.append(f'(system "mv {part} {done}")')
            self.voice = None  # until it is known to be selected
            self.stderr_at = (self.dir / "stderr.txt").stat().st_size  # what this request adds is its own
            # An error (a voice Festival lacks) skips the rest of the commands and marks the request failed.
            request = f'(unwind-protect (begin {"".join(cmds)}) (system "touch {failed}"))'
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(request + "\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                raise self._died(text) from None
            deadline = time.monotonic() + TIMEOUT_S
            while not done.is_file():
                if failed.is_file() or self.proc.poll() is not None or time.monotonic() > deadline:
                    raise self._died(text)
                time.sleep(0.002)
            self.voice = voice
            audio, rate = sf.read(done, dtype="float64")
            done.unlink()
            return audio, int(rate)

    def _died(self, text: str) -> FestivalError:
        self.stderr.flush()
        self.stderr.seek(self.stderr_at)
        err = " ".join(self.stderr.read().split())
        returncode = self.proc.poll()  # before close(), which ends a Festival that is still running
        self.close()
        global _RUNNING
        _RUNNING = None
        message = f"Festival failed for {text!r}: {err[-300:] or 'no output'}; check `{INSTALL}`"
        return FestivalError(message, returncode)

    def close(self) -> None:
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        self.held.close()


_RUNNING: _Festival | None = None


def remove_orphans() -> None:
    """Remove this user's Festival folders in the temporary directory whose process is gone (killed by
    SIGKILL, which skips atexit): a live process holds a lock on its folder's LOCK_FILE, which the system
    releases however the process ends. A folder without one (being created, or left by an older kws) is
    removed once it is ORPHAN_AGE_S old."""
    for folder in Path(tempfile.gettempdir()).glob(f"{DIR_PREFIX}*"):
        try:
            if folder.stat().st_uid != os.getuid() or not _unlocked(folder):
                continue
        except OSError:  # gone meanwhile
            continue
        shutil.rmtree(folder, ignore_errors=True)


def _unlocked(folder: Path) -> bool:
    """Whether no process holds `folder`'s lock (taking it for a moment to tell)."""
    import fcntl

    try:
        with open(folder / LOCK_FILE) as lock:  # not created: a folder without one is judged by age
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True
    except FileNotFoundError:
        return time.time() - folder.stat().st_mtime > ORPHAN_AGE_S


def _festival() -> _Festival:
    global _RUNNING
    if _RUNNING is None:
        _RUNNING = _Festival()
        atexit.register(_RUNNING.close)
    return _RUNNING


def _hts_params(voice: str) -> str:
    """The HTS voice's own engine parameters (its voice function sets hts_engine_params to them)."""
    return f"{voice}::hts_engine_params"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def speak(voice: EngineVoice, text: str, tempo: float, f0_hz: float | None) -> tuple[np.ndarray, int]:
    """Festival's float samples `(samples,)` and their rate for `text`; `tempo` > 1 is faster.

    Festival 2.5's diphone voices abort (SIGABRT: "Target pitchmarks end before end of target segment
    timings", then a heap error) on a few combinations of a low pitch and a slow tempo; such a clip is said
    again, always the same way, at the voice's own pitch. Festival runs in its own session, so a Ctrl-C or
    SIGTERM meant for kws never reaches it and never takes this path."""
    try:
        return _festival().say(voice.voice, text, tempo, f0_hz)
    except FestivalError as exc:
        if f0_hz is None or exc.returncode != -signal.SIGABRT:
            raise
        return _festival().say(voice.voice, text, tempo, None)
