"""`kws export`: a checkpoint to an ONNX or TorchScript file, proven by the parity gate before it is kept.

The file is written under a temporary name beside its destination and renamed only when the gate passes
(kws.export.parity); a failed gate, an error or Ctrl-C leaves no file. With `--quantize int8` the float
model is exported and gated first, then quantized with ranges calibrated on CALIBRATION_CLIPS training
clips, and the int8 file is gated on accuracy. Detection thresholds go into the file from `--thresholds`,
else a thresholds.json beside the checkpoint, else the one stream evaluation in `<checkpoint dir>/eval/`.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from kws.audio import read_wav
from kws.checkpoint import LoadedModel, load_for_inference
from kws.errors import KWSError
from kws.export.graph import WINDOW_SAMPLES, DeployedModel
from kws.export.parity import (
    DEFAULT_MAX_DROP,
    GENERATED_CLIPS,
    REFERENCE_BATCH,
    CheckSet,
    GateResult,
    accuracy,
    generated_windows,
    manifest_windows,
    reference_probs,
    run_gate,
)
from kws.exported import ONNX_SUFFIX, ExportMetadata, fit_window, load_onnx
from kws.files import atomic_path, file_sha256
from kws.manifest import check_manifest_path, read_manifest
from kws.thresholds import THRESHOLDS_FILE, chosen_for_another, read_thresholds

FORMATS = ("onnx", "torchscript")
QUANTIZE = ("int8",)
CALIBRATION_CLIPS = 512
SUFFIXES = {"onnx": (ONNX_SUFFIX,), "torchscript": (".pt", ".pth")}
KIND = {"onnx": "an ONNX", "torchscript": "a TorchScript"}


@dataclass
class ExportOutcome:
    """What `export_model` wrote and measured, for the printout."""

    path: Path
    format: str
    precision: str
    size_bytes: int
    gate: GateResult  # of the file written
    fp32_gate: GateResult | None  # of the float model an int8 file was quantized from
    fp32_size_bytes: int | None
    metadata: ExportMetadata
    thresholds_source: Path | None
    thresholds_note: str  # why no thresholds were embedded, or advice about them; "" when none is due
    check: CheckSet
    evaluate_accuracy: float | None  # the checkpoint on the clips as they are (as `kws evaluate`)
    seconds: float


def default_out(checkpoint: Path, fmt: str, quantize: str | None) -> Path:
    """Beside the checkpoint: best.pt -> best.onnx, best.int8.onnx, best.torchscript.pt."""
    suffix = ".torchscript.pt" if fmt == "torchscript" else (".int8.onnx" if quantize else ".onnx")
    return Path(checkpoint).with_name(Path(checkpoint).stem + suffix)


def base_metadata(loaded: LoadedModel, precision: str) -> ExportMetadata:
    """The metadata of `loaded` exported at `precision`, without thresholds. The checkpoint is named by its
    file name and SHA-256, not its path: the file may ship inside an app."""
    feats = loaded.config.features
    return ExportMetadata(
        labels=tuple(loaded.labels),
        sample_rate=feats.sample_rate,
        window_samples=WINDOW_SAMPLES,
        feature_hop_samples=feats.hop_length,
        source_checkpoint=Path(loaded.checkpoint).name,
        source_sha256=file_sha256(Path(loaded.checkpoint)) if Path(loaded.checkpoint).is_file() else "",
        step=loaded.step,
        epoch=loaded.epoch,
        precision=precision,
    )


def _check_set(loaded: LoadedModel, check: Path | None) -> CheckSet:
    """--check, else the checkpoint's validation manifest when it is on disk, else generated audio."""
    if check is None:
        own = [Path(m) for m in loaded.config.data.val_manifests if Path(m).is_file()]
        check = own[0] if own else None
    if check is None:
        return CheckSet(generated_windows(GENERATED_CLIPS, WINDOW_SAMPLES), None, "generated audio")
    check_manifest_path(check)
    return manifest_windows(check, loaded.labels, WINDOW_SAMPLES)


def _calibration(loaded: LoadedModel, calibration: Path | None) -> np.ndarray:
    """CALIBRATION_CLIPS windows (seed 0) from --calibration, else the checkpoint's training manifest."""
    own = loaded.config.data.train_manifest
    path = calibration or (Path(own) if own else None)
    if path is None or not Path(path).is_file():
        raise KWSError(
            f"int8 calibration reads training clips, but the training manifest {path} is not here; "
            "pass one with --calibration MANIFEST"
        )
    check_manifest_path(path)
    return calibration_windows(Path(path))


def calibration_windows(manifest: Path) -> np.ndarray:
    """CALIBRATION_CLIPS clips of `manifest` drawn with seed 0, each fitted to the window `(n, window)`."""
    entries = read_manifest(manifest)
    rng = np.random.default_rng(0)
    picked = rng.choice(len(entries), size=min(CALIBRATION_CLIPS, len(entries)), replace=False)
    return np.stack([fit_window(read_wav(Path(entries[i].audio_filepath)), WINDOW_SAMPLES) for i in picked])


def _thresholds_file(checkpoint: Path, thresholds: Path | None) -> tuple[Path | None, str]:
    """--thresholds, else thresholds.json beside the checkpoint, else the only one under its eval/ folder;
    and a note when none is taken."""
    if thresholds is not None:
        return thresholds, ""
    beside = Path(checkpoint).with_name(THRESHOLDS_FILE)
    if beside.is_file():
        return beside, ""
    found = sorted(Path(checkpoint).parent.glob(f"eval/*/{THRESHOLDS_FILE}"))
    if len(found) == 1:
        return found[0], ""
    why = (
        f"{len(found)} stream evaluations under {Path(checkpoint).parent / 'eval'}" if found else "none found"
    )
    return None, (
        f"no detection thresholds embedded ({why}); `kws detect` on the file uses 0.8 for every keyword "
        "unless told otherwise: pass a stream evaluation's thresholds.json with --thresholds"
    )


def _check_out(out: Path, checkpoint: Path, fmt: str) -> None:
    if out.is_dir():
        raise KWSError(f"--out {out} is a directory; give the file to write, e.g. {out / 'model.onnx'}")
    if out.resolve() == Path(checkpoint).resolve():
        raise KWSError(f"--out {out} is the checkpoint itself; give the exported model another name")
    if out.suffix.lower() not in SUFFIXES[fmt]:
        raise KWSError(
            f"--out {out}: {KIND[fmt]} model's file name ends in {' or '.join(SUFFIXES[fmt])} "
            "(kws evaluate and kws detect tell exported models by it)"
        )


def _gate_failed(gate: GateResult, path: Path) -> KWSError:
    return KWSError(
        f"the exported {gate.precision} model failed the parity gate on {gate.source} "
        f"({'; '.join(gate.failures)}); nothing was written to {path}"
    )


def export_model(
    checkpoint: Path,
    *,
    fmt: str = "onnx",
    out: Path | None = None,
    check: Path | None = None,
    quantize: str | None = None,
    thresholds: Path | None = None,
    calibration: Path | None = None,
    max_drop: float | None = None,
) -> ExportOutcome:
    """Export `checkpoint` as `fmt` (int8 with `quantize`) to `out` (default: beside it), keeping the file
    only when it passes the parity gate on `check` (see the module docstring for the defaults)."""
    t0 = time.perf_counter()
    if fmt not in FORMATS:
        raise KWSError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZE:
        raise KWSError(f"--quantize {quantize!r} is not one of {', '.join(QUANTIZE)}")
    if quantize is not None and fmt != "onnx":
        raise KWSError("--quantize int8 makes an ONNX model; use it with --format onnx")
    max_drop = DEFAULT_MAX_DROP if max_drop is None else max_drop
    if not max_drop >= 0:
        raise KWSError(f"--max-accuracy-drop is a number of points >= 0, got {max_drop}")
    out = Path(out) if out is not None else default_out(checkpoint, fmt, quantize)
    _check_out(out, checkpoint, fmt)
    loaded = load_for_inference(Path(checkpoint), torch.device("cpu"))
    precision = quantize or "fp32"
    metadata = base_metadata(loaded, "fp32")
    source, note = _thresholds_file(checkpoint, thresholds)
    if source is not None:
        saved = read_thresholds(source)
        metadata = metadata.with_thresholds(saved)
        other = chosen_for_another(saved, {metadata.source_sha256} - {""})
        if other is not None:
            note = (
                f"the thresholds in {source} were chosen for another checkpoint "
                f"({other}); run the stream evaluation on this one "
                f"(`kws evaluate {checkpoint} STREAM_MANIFEST`) and export again"
            )
        elif quantize:
            note = (
                "the thresholds were chosen on the checkpoint's scores; check them on the int8 file with "
                f"`kws evaluate {out} STREAM_MANIFEST`"
            )
    check_set = _check_set(loaded, check)
    if quantize and (check_set.label_ids is None or not (check_set.label_ids >= 0).any()):
        where = (
            "generated audio"
            if check_set.label_ids is None
            else f"{check_set.source}, whose labels are not the model's"
        )
        raise KWSError(
            f"--quantize int8 is gated on accuracy, which needs clips labelled with the model's classes, not "
            f"{where}; pass such a manifest with --check"
        )
    calibration_windows = _calibration(loaded, calibration) if quantize else None
    reference = reference_probs(loaded, check_set.windows)
    deployed = DeployedModel(loaded)
    fp32_gate, fp32_size = None, None
    with atomic_path(out) as tmp:
        if fmt == "torchscript":
            from kws.export.torchscript_file import load_torchscript, torchscript_probs, write_torchscript

            write_torchscript(deployed, metadata, tmp)
            module, _ = load_torchscript(tmp)
            gate = run_gate(check_set, reference, lambda w: torchscript_probs(module, w), "fp32")
        else:
            from kws.export.onnx_file import write_int8, write_onnx

            with tempfile.TemporaryDirectory(dir=out.parent) as work:
                fp32_path = Path(work) / "fp32.onnx" if quantize else tmp
                write_onnx(deployed, metadata, fp32_path)
                gate = run_gate(check_set, reference, load_onnx(fp32_path).probs, "fp32")
                if quantize and gate.passed:
                    assert calibration_windows is not None
                    fp32_gate, fp32_size = gate, fp32_path.stat().st_size
                    int8_meta = replace(metadata, precision=precision)
                    write_int8(fp32_path, calibration_windows, int8_meta, tmp)
                    gate = run_gate(check_set, reference, load_onnx(tmp).probs, precision, max_drop)
        if not gate.passed:
            raise _gate_failed(gate, out)
        size = tmp.stat().st_size
    evaluate_accuracy = None
    if check_set.entries and check_set.label_ids is not None:
        from kws.evaluate.scoring import predict

        own = predict(loaded, check_set.entries, REFERENCE_BATCH, "the checkpoint on the clips as they are")
        evaluate_accuracy = accuracy(own, check_set.label_ids)
    return ExportOutcome(
        path=out,
        format=fmt,
        precision=precision,
        size_bytes=size,
        gate=gate,
        fp32_gate=fp32_gate,
        fp32_size_bytes=fp32_size,
        metadata=metadata,
        thresholds_source=source,
        thresholds_note=note,
        check=check_set,
        evaluate_accuracy=evaluate_accuracy,
        seconds=time.perf_counter() - t0,
    )
