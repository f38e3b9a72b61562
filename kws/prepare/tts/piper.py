"""Piper, an engine of the TTS source (kws.prepare.tts.engines): a neural voice file the user supplies,
`--engines piper:VOICE.onnx` with `VOICE.onnx.json` beside it (`pip install 'kws[piper]'`).

Piper's VITS models draw random noise inside the ONNX graph, from a generator that cannot be seeded per
call, so the same text would come out different each time. The noise scales are set to 0: the speech is the
model's mean rendering, the same to the byte on every run; the speakers' variety comes from tempo (Piper's
length scale) and size, as for the other engines. Each process keeps its loaded voices, on one thread each
(the workers are the parallelism, and one thread keeps the sums in one order).
"""

from __future__ import annotations

import hashlib
import json
import threading
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kws.errors import KWSError

if TYPE_CHECKING:
    from kws.prepare.tts.engines import EngineSpec, EngineVoice

INSTALL = "pip install 'kws[piper]'"
F0_VOICES: dict[str, tuple[float, float]] = {}  # Piper has no pitch setting
_LOCK = threading.Lock()


def voices(spec: EngineSpec) -> tuple[str, ...]:
    return (spec.voice_name,)


def version(spec: EngineSpec) -> str:
    """piper-tts's version and the SHA-256 of the voice and its config (first 12 digits): a new file is a new
    voice. KWSError when piper-tts is missing or the file is not a voice it can load."""
    try:
        package = metadata.version("piper-tts")
    except metadata.PackageNotFoundError:
        raise KWSError(f"--engines {spec}: piper-tts is not installed; install it with `{INSTALL}`") from None
    model = Path(spec.model or "")
    if not model.is_file():
        raise KWSError(f"--engines {spec}: no such voice file; give the path of a Piper .onnx voice")
    if not Path(f"{model}.json").is_file():
        raise KWSError(
            f"--engines {spec}: {model.name}.json is missing; a Piper voice needs its config beside the .onnx"
        )
    _load(str(model))  # a file that is no voice is refused before any work
    digest = hashlib.sha256()
    for path in (model, Path(f"{model}.json")):
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return f"piper-tts {package}, {model.name} {digest.hexdigest()[:12]}"


@lru_cache(maxsize=4)
def _load(model: str) -> Any:
    try:
        import onnxruntime as ort  # piper-tts's own dependency
        from piper import PiperVoice
        from piper.config import PiperConfig
    except ImportError:
        raise KWSError(
            "piper-tts is not installed; install it with `pip install 'kws[piper]'` (onnxruntime, which it "
            "needs, also comes with `pip install 'kws[export]'`)"
        ) from None

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        config = json.loads(Path(f"{model}.json").read_text(encoding="utf-8"))
        session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
        return PiperVoice(session=session, config=PiperConfig.from_dict(config))
    except Exception as exc:  # onnxruntime's errors (InvalidProtobuf, Fail...) share no base class
        raise KWSError(
            f"cannot load the Piper voice {model}: {exc}; check the file and its .onnx.json"
        ) from None


def speak(voice: EngineVoice, text: str, tempo: float, f0_hz: float | None) -> tuple[np.ndarray, int]:
    """Piper's float samples `(samples,)` and their rate for `text`; `tempo` > 1 is faster."""
    try:
        from piper import SynthesisConfig
    except ImportError:
        raise KWSError("piper-tts is not installed; install it with `pip install 'kws[piper]'`") from None
    assert voice.model is not None
    loaded = _load(voice.model)
    config = SynthesisConfig(length_scale=1 / tempo, noise_scale=0.0, noise_w_scale=0.0, normalize_audio=True)
    with _LOCK:
        chunks = [chunk.audio_float_array for chunk in loaded.synthesize(text, config)]
    audio = np.concatenate(chunks).astype(np.float64) if chunks else np.zeros(0)
    return audio, int(loaded.config.sample_rate)
