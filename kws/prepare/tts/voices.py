"""Synthetic speakers for the TTS data source: reproducible draws of espeak-ng voice parameters, and the
espeak-ng subprocess that speaks a word with them.

Every random parameter comes from `Draw`, which hashes (key, parameter name) instead of consuming a random
stream. A parameter's value therefore depends only on its own name: adding a parameter later (richer
prosody, carrier phrases) leaves every existing speaker and clip unchanged, and the draws do not depend on
the Python or numpy version.
"""

from __future__ import annotations

import hashlib
import math
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from kws.errors import KWSError

if TYPE_CHECKING:
    from kws.prepare.tts.engines import EngineVoice

ESPEAK = "espeak-ng"
INSTALL_HINT = (
    "install it with `sudo apt-get install espeak-ng` (Debian/Ubuntu) or `brew install espeak-ng` (macOS)"
)

# English accents of espeak-ng 1.51 (`espeak-ng --voices=en`, the gmw/ voices; the mb/ ones need mbrola).
ACCENTS = (
    "en-us",
    "en-us-nyc",
    "en-gb",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
)
# Voice variants (voices/!v) that sound like a person. Left out: the echo/robot effects (robosoft*,
# RicishayMax*, UniRobot, anikaRobot, Demonic, Tweaky), `fast` (same as no variant) and klatt6/caleb (same
# audio as klatt in 1.51). espeak-ng silently ignores an unknown variant, so tests check these are distinct.
VARIANTS = (
    *(f"m{i}" for i in range(1, 9)),
    *(f"f{i}" for i in range(1, 6)),
    "croak",
    "whisper",
    "whisperf",
    "klatt",
    "klatt2",
    "klatt3",
    "klatt4",
    "klatt5",
    "Alex",
    "Andrea",
    "Annie",
    "Denis",
    "Mike",
    "Nguyen",
    "adam",
    "anika",
    "antonio",
    "aunty",
    "belinda",
    "benjamin",
    "david",
    "edward",
    "grandma",
    "grandpa",
    "iven",
    "linda",
    "michel",
    "paul",
    "quincy",
    "rob",
    "robert",
    "steph",
    "travis",
    "victor",
)
# The variants whose voices/!v file selects the Klatt synthesizer (a `klatt N` line): 9 of 46, so about a
# fifth of all speakers.
KLATT_VARIANTS = ("klatt", "klatt2", "klatt3", "klatt4", "klatt5", "adam", "benjamin", "david", "edward")
VARIANT_FAMILIES = ("klatt", "m", "f", "other")
RATE_WPM = (120, 220)  # espeak-ng -s; its default is 175
PITCH = (20, 80)  # espeak-ng -p, 0-99 around the variant's own base pitch; default 50
PITCH_RANGE_PCT = (40, 180)  # SSML <prosody range>; espeak-ng 1.51 has no command-line flag for it
WORD_GAP = (0, 6)  # espeak-ng -g, in 10 ms units: the pause between the words of a phrase
AMPLITUDE = (70, 150)  # espeak-ng -a, 0-200; loud settings make espeak-ng's own limiter colour the voice
# Per-clip jitter around the speaker, so two clips of one speaker are not identical.
RATE_JITTER = 0.06  # relative
PITCH_JITTER = 4  # -p units
RANGE_JITTER_PCT = 15
MAX_RATE_WPM = 450  # espeak-ng's fastest rate

T = TypeVar("T")


@dataclass(frozen=True)
class Draw:
    """Uniform random draws addressed by `key` and a parameter name (a hash, not a stream)."""

    key: str

    def uniform(self, name: str, low: float = 0.0, high: float = 1.0) -> float:
        digest = hashlib.sha256(f"{self.key}/{name}".encode()).digest()
        return low + (high - low) * (int.from_bytes(digest[:7], "big") / 2**56)

    def integer(self, name: str, low: int, high: int) -> int:
        """An integer in [low, high], both included."""
        return min(high, low + math.floor(self.uniform(name) * (high - low + 1)))

    def choice(self, name: str, options: Sequence[T]) -> T:
        return options[self.integer(name, 0, len(options) - 1)]

    def chance(self, name: str, p: float) -> bool:
        return self.uniform(name) < p

    def rng(self, name: str) -> np.random.Generator:
        """A numpy generator for bulk draws (noise samples), seeded from this key and name."""
        digest = hashlib.sha256(f"{self.key}/{name}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:16], "big"))


@dataclass(frozen=True)
class Voice:
    """One set of espeak-ng settings. Fields that a later version adds must default to None, which keeps them
    out of `key()` and so keeps the ids of existing speakers."""

    accent: str
    variant: str
    rate_wpm: int
    pitch: int
    pitch_range_pct: int
    word_gap: int
    amplitude: int

    def key(self) -> str:
        return ";".join(f"{k}={v}" for k, v in asdict(self).items() if v is not None)

    def espeak_args(self) -> list[str]:
        return [
            "-m",  # SSML, for <prosody range>
            "-z",  # no end-of-sentence pause: trimmed anyway
            *("-v", f"{self.accent}+{self.variant}"),
            *("-s", str(self.rate_wpm)),
            *("-p", str(self.pitch)),
            *("-g", str(self.word_gap)),
            *("-a", str(self.amplitude)),
        ]

    def ssml(self, text: str) -> str:
        # `text` is a validated keyword (letters, digits, spaces, ' and -), so it needs no XML escaping.
        return f'<speak><prosody range="{self.pitch_range_pct}%">{text}</prosody></speak>'


@dataclass(frozen=True)
class Speaker:
    index: int
    id: str  # 8 hex digits, a hash of voice.key(); the Speech Commands "speaker id" before `_nohash_`
    voice: Voice | EngineVoice  # espeak-ng settings, or another engine's (kws.prepare.tts.engines)

    @property
    def engine(self) -> str:
        return ESPEAK if isinstance(self.voice, Voice) else self.voice.engine


def draw_voice(draw: Draw) -> Voice:
    return Voice(
        accent=draw.choice("accent", ACCENTS),
        variant=draw.choice("variant", VARIANTS),
        rate_wpm=draw.integer("rate", *RATE_WPM),
        pitch=draw.integer("pitch", *PITCH),
        pitch_range_pct=draw.integer("range", *PITCH_RANGE_PCT),
        word_gap=draw.integer("word_gap", *WORD_GAP),
        amplitude=draw.integer("amplitude", *AMPLITUDE),
    )


def variant_family(variant: str) -> str:
    """The variant's family: "klatt" (espeak-ng's Klatt synthesizer), "m" or "f" (the numbered male and
    female variants) or "other" (named variants of the default synthesizer). Benchmarks hold out families."""
    if variant in KLATT_VARIANTS:
        return "klatt"
    if re.fullmatch(r"[mf]\d+", variant):
        return variant[0]
    return "other"


def speaker_id(voice: Voice | EngineVoice) -> str:
    """A speaker's file-name id: 8 hex digits of its settings' hash (any engine's)."""
    return hashlib.sha1(voice.key().encode()).hexdigest()[:8]


def draw_speakers(seed: int, n_speakers: int) -> list[Speaker]:
    """espeak-ng speakers 0..n-1 of `seed`. Speaker i is the same whatever n is, so a larger --speakers
    extends a run (kws.prepare.tts.engines.draw_speakers: other engines too)."""

    def espeak(draw: Draw, index: int) -> tuple[Voice, str]:
        voice = draw_voice(draw)
        return voice, speaker_id(voice)

    return unique_speakers(seed, n_speakers, espeak)


def unique_speakers(
    seed: int, n_speakers: int, draw_one: Callable[[Draw, int], tuple[Voice | EngineVoice, str]]
) -> list[Speaker]:
    """Speakers 0..n-1, speaker i drawn by `draw_one(draw, i)` -> (voice, id). Ids are unique: a draw whose id
    (or voice) is taken is redrawn with the next attempt number."""
    speakers: list[Speaker] = []
    taken: set[str] = set()
    for index in range(n_speakers):
        for attempt in range(1000):
            voice, sid = draw_one(Draw(f"kws-tts/{seed}/speaker/{index}/{attempt}"), index)
            if sid not in taken:
                break
        taken.add(sid)
        speakers.append(Speaker(index, sid, voice))
    return speakers


def jitter(voice: Voice, draw: Draw) -> Voice:
    """The speaker's voice with small per-clip prosody changes."""
    return replace(
        voice,
        rate_wpm=round(voice.rate_wpm * draw.uniform("rate_jitter", 1 - RATE_JITTER, 1 + RATE_JITTER)),
        pitch=min(99, max(0, voice.pitch + draw.integer("pitch_jitter", -PITCH_JITTER, PITCH_JITTER))),
        pitch_range_pct=max(
            0, voice.pitch_range_pct + draw.integer("range_jitter", -RANGE_JITTER_PCT, RANGE_JITTER_PCT)
        ),
    )


def espeak_version() -> str:
    """The installed espeak-ng's version, e.g. "1.51"; KWSError with the install command if it is missing."""
    exe = shutil.which(ESPEAK)
    if exe is None:
        raise KWSError(
            f"espeak-ng is not installed (it is needed by `kws prepare --dataset tts`); {INSTALL_HINT}"
        )
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"text-to-speech:\s*(\S+)", out)
    if match is None:
        raise KWSError(
            f"cannot read the version of {exe} (`{ESPEAK} --version` printed {out!r}); "
            f"reinstall it: {INSTALL_HINT}"
        )
    return match.group(1)


def synthesize(voice: Voice, text: str) -> tuple[np.ndarray, int]:
    """Speak `text` with espeak-ng; returns (int16 samples, sample rate). espeak-ng writes 22050 Hz."""
    return synthesize_ssml(voice, voice.ssml(text))


def synthesize_ssml(voice: Voice, ssml: str) -> tuple[np.ndarray, int]:
    """Speak an SSML document with the voice's espeak-ng settings (kws.prepare.tts.styles: richer ones)."""
    text = re.sub(r"<[^>]*>", "", ssml)  # for error messages
    cmd = [ESPEAK, *voice.espeak_args(), "--stdout", ssml]
    try:
        proc = subprocess.run(cmd, capture_output=True, check=False)
    except FileNotFoundError:
        raise KWSError(f"espeak-ng is not installed; {INSTALL_HINT}") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise KWSError(f"espeak-ng failed for {text!r} ({' '.join(cmd[:-2])}): {err}")
    return parse_wav_stream(proc.stdout)


def parse_wav_stream(data: bytes) -> tuple[np.ndarray, int]:
    """Decode the 16-bit mono WAV espeak-ng writes to a pipe. Its RIFF and data sizes are placeholders (it
    cannot seek back to fill them in), so everything after the `data` chunk header is taken as samples."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise KWSError(f"espeak-ng wrote no WAV data (got {data[:16]!r}); check `{ESPEAK} --stdout hello`")
    pos, rate = 12, 0
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if chunk == b"fmt ":
            channels = int.from_bytes(data[pos + 10 : pos + 12], "little")
            rate = int.from_bytes(data[pos + 12 : pos + 16], "little")
            bits = int.from_bytes(data[pos + 22 : pos + 24], "little")
            if channels != 1 or bits != 16:
                raise KWSError(f"espeak-ng wrote {channels}-channel {bits}-bit audio; expected mono 16-bit")
        elif chunk == b"data" and rate > 0:
            body = data[pos + 8 :]
            return np.frombuffer(body[: len(body) // 2 * 2], dtype="<i2").astype(np.int16), rate
        pos += 8 + size + (size & 1)
    raise KWSError("espeak-ng's WAV output has no format or no data chunk")
