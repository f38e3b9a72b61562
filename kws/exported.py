"""A model file that `kws export` wrote: what it says about itself, and running it with onnxruntime.

`kws evaluate` and `kws detect` take an exported `.onnx` in place of a checkpoint and score the very file a
user ships: `kws.evaluate.scoring.load_model(path, device)` is the one door (a `.onnx` gives an
`OnnxModel`, anything else a checkpoint's `kws.checkpoint.LoadedModel`); this module imports no torch. The
exported graph (kws.export.graph) takes one window of WINDOW_SAMPLES; a clip of another length is fitted to
it (`fit_window`): zeros after a short clip, as if the recording went on in silence, and the centre second
of a long one. (kws's own evaluation of a checkpoint treats such clips by `features.pad` instead, so on
clips that are not one second long the two can differ a little; `kws export` reports both.)

The metadata, in an ONNX file `metadata_props` (string keys and values; lists and maps as JSON), in a
TorchScript file the extra file `kws.json`:

    kws_format        1
    labels            ["down", "go", ...]                 the output's class order
    sample_rate       16000                                Hz of the input waveform
    window_samples    16000                                the input's length: one window
    input, output     what the graph takes and returns, in words
    hop_s, smooth_s, refractory_s   streaming: seconds between windows, score smoothing, refractory period
    thresholds        {"go": 0.81, ...}                   per keyword, from a stream evaluation; {} if none
    target_fa_per_hour   the rate the thresholds were chosen for (absent without thresholds)
    precision         "fp32" or "int8"
    source_checkpoint, source_sha256, step, epoch, kws_version   where the weights came from (the
                      checkpoint's file name, not its path: the file may ship inside an app)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from kws import __version__
from kws.audio import CLIP_SAMPLES, INT16_SCALE, SAMPLE_RATE
from kws.errors import CheckpointError, KWSError
from kws.thresholds import DEFAULT_HOP_S, DEFAULT_REFRACTORY_S, DEFAULT_SMOOTH_S, TIMING_KEYS

WINDOW_SAMPLES = CLIP_SAMPLES  # an exported model's input, and a detector's window: the 1 s clips of training
METADATA_FORMAT = 1
INPUT_TEXT = "audio: float32 (batch, window_samples) mono waveform in [-1, 1] at sample_rate"
OUTPUT_TEXT = "probs: float32 (batch, len(labels)) class probabilities (softmax), in the order of labels"


@dataclass(frozen=True)
class ExportMetadata:
    labels: tuple[str, ...]
    sample_rate: int
    window_samples: int
    feature_hop_samples: int  # the MFCC's hop: a streaming hop is a whole number of these
    source_checkpoint: str  # the checkpoint's file name
    step: int
    epoch: int
    precision: str = "fp32"
    hop_s: float = DEFAULT_HOP_S
    smooth_s: float = DEFAULT_SMOOTH_S
    refractory_s: float = DEFAULT_REFRACTORY_S
    thresholds: Mapping[str, float] = field(default_factory=dict)
    target_fa_per_hour: float | None = None
    source_sha256: str = ""  # of the checkpoint file
    kws_version: str = __version__

    def with_thresholds(self, saved: Mapping[str, Any]) -> ExportMetadata:
        """These settings with a thresholds file's (kws.thresholds.read_thresholds) thresholds and timing."""
        unknown = sorted(set(saved["thresholds"]) - set(self.labels))
        if unknown:
            raise KWSError(
                f"the thresholds name labels the model does not have ({', '.join(unknown)}); pass the "
                "thresholds.json of a stream evaluation of this checkpoint"
            )
        timing: dict[str, Any] = {k: float(saved[k]) for k in TIMING_KEYS if k in saved}
        return replace(
            self,
            **timing,
            thresholds=dict(saved["thresholds"]),
            target_fa_per_hour=saved.get("target_fa_per_hour"),
        )

    def to_props(self) -> dict[str, str]:
        """String key-values (ONNX metadata_props)."""
        props = {"kws_format": str(METADATA_FORMAT), "input": INPUT_TEXT, "output": OUTPUT_TEXT}
        for key, value in asdict(self).items():
            if value is None:
                continue
            props[key] = json.dumps(list(value) if key == "labels" else value) if key in _JSON else str(value)
        return props

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: Path) -> ExportMetadata:
        """Parse `to_props`'s strings; a one-line KWSError for a file kws did not export."""
        if props.get("kws_format") != str(METADATA_FORMAT) or "labels" not in props:
            raise KWSError(
                f"{source} carries no kws metadata (labels, sample rate, window); export it with `kws export`"
            )
        try:
            values: dict[str, Any] = {}
            for key, kind in _FIELDS.items():
                if key not in props:
                    continue
                text = props[key]
                values[key] = json.loads(text) if key in _JSON else kind(text)
            values["labels"] = tuple(str(x) for x in values["labels"])
            values["thresholds"] = {str(k): float(v) for k, v in values.get("thresholds", {}).items()}
            return cls(**values)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise KWSError(f"{source} has damaged kws metadata ({exc}); export it again") from None


_JSON = {"labels", "thresholds"}
_FIELDS: dict[str, Any] = {
    "labels": list,
    "sample_rate": int,
    "window_samples": int,
    "feature_hop_samples": int,
    "source_checkpoint": str,
    "step": int,
    "epoch": int,
    "precision": str,
    "hop_s": float,
    "smooth_s": float,
    "refractory_s": float,
    "thresholds": dict,
    "target_fa_per_hour": float,
    "source_sha256": str,
    "kws_version": str,
}


EXPORT_EXTRA = "pip install 'kws[export]'"
ONNX_SUFFIX = ".onnx"
RUN_BATCH = 128  # windows per onnxruntime call


def export_module(name: str, needed_for: str) -> ModuleType:
    """An optional package of the `export` extra (onnx, onnxruntime, onnxscript), or a one-line KWSError
    with the install command."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise KWSError(f"{needed_for} needs {name} ({exc}); install it with `{EXPORT_EXTRA}`") from None


@dataclass
class OnnxModel:
    """An exported model and its metadata; `probs` runs it."""

    path: Path
    metadata: ExportMetadata
    session: Any  # onnxruntime.InferenceSession

    @property
    def labels(self) -> list[str]:
        return list(self.metadata.labels)

    @property
    def checkpoint(self) -> Path:  # what reports name as the model they evaluated
        return self.path

    @property
    def step(self) -> int:
        return self.metadata.step

    def probs(self, windows: np.ndarray, batch: int = RUN_BATCH) -> np.ndarray:
        """`(n, window_samples)` float32 waveforms -> `(n, n_classes)` float32 probabilities."""
        n = len(windows)
        out = np.zeros((n, len(self.metadata.labels)), dtype=np.float32)
        for first in range(0, n, batch):
            chunk = np.ascontiguousarray(windows[first : first + batch], dtype=np.float32)
            out[first : first + len(chunk)] = self.session.run(None, {"audio": chunk})[0]
        return out


def load_onnx(path: Path, threads: int | None = None) -> OnnxModel:
    """Open an exported model (`threads`: onnxruntime's intra-op threads; None: its default)."""
    ort = export_module("onnxruntime", f"running {path}")
    path = Path(path)
    if path.is_dir():
        raise KWSError(f"{path} is a directory; pass the exported .onnx file")
    if not path.is_file():
        raise KWSError(f"{path} does not exist; export one with `kws export CHECKPOINT`")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: its warnings are about graph rewrites, not the user's data
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/InvalidGraph types
        raise CheckpointError(
            f"{path} is not a model onnxruntime can run ({first_line(exc)}); export it again"
        ) from None
    metadata = ExportMetadata.from_props(session.get_modelmeta().custom_metadata_map, path)
    if (metadata.sample_rate, metadata.window_samples) != (SAMPLE_RATE, WINDOW_SAMPLES):
        raise KWSError(
            f"{path} takes {metadata.window_samples} samples at {metadata.sample_rate} Hz; kws runs models "
            f"on {WINDOW_SAMPLES} samples at {SAMPLE_RATE} Hz; export one from a checkpoint with those"
        )
    return OnnxModel(path, metadata, session)


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive (what `kws export --format torchscript` writes), not a checkpoint: its zip holds
    compiled code and constants.pkl, a checkpoint's only data.pkl and tensors."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def first_line(exc: BaseException) -> str:
    """An exception's message in one line (runtimes raise pages of it), or its type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_exported(path: Path) -> bool:
    return Path(path).suffix.lower() == ONNX_SUFFIX


def fit_window(clip: np.ndarray, window_samples: int) -> np.ndarray:
    """int16 samples of any length -> float32 `(window_samples,)`: zeros after a short clip, the centre of
    a long one."""
    out = np.zeros(window_samples, dtype=np.float32)
    start = max(0, (len(clip) - window_samples) // 2)
    part = clip[start : start + window_samples]
    out[: len(part)] = part.astype(np.float32) / INT16_SCALE
    return out
