"""Evaluate a checkpoint on one or more manifests and write a report for each.

The model, features and labels come from the checkpoint alone (`kws.checkpoint.load_for_inference`);
inference runs in eval mode (no augmentation, centre crop), batched, on the GPU when there is one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kws import __version__
from kws.audio import CLIP_SAMPLES, INT16_SCALE, read_wav
from kws.console import item_progress
from kws.errors import DataError, KWSError
from kws.evaluate.report import (
    LOW_CONFIDENCE,
    ClassMetrics,
    EvalReport,
    compute_report,
    confusion_pairs,
    worst_classes,
    write_report_files,
)
from kws.files import file_sha256
from kws.manifest import Entry, check_labels, check_manifest_path, read_manifest

if TYPE_CHECKING:
    from kws.checkpoint import LoadedModel
    from kws.exported import OnnxModel

DEFAULT_BATCH_SIZE = 256
DEFAULT_TOP_K = 5
N_CONFUSIONS_SHOWN = 10  # in the summary `kws evaluate` prints; the report files keep them all
N_WORST_SHOWN = 5


@dataclass
class EvalOutcome:
    manifest: Path
    out_dir: Path
    report: EvalReport
    files: list[Path]
    seconds: float
    confusions: list[tuple[str, str, int]]  # the most frequent (true, predicted, count), for the summary
    worst_classes: list[tuple[str, ClassMetrics]]  # lowest recall first, for the summary


def out_dirs(checkpoint: Path, manifests: Sequence[Path], out: Path | None) -> list[Path]:
    """`--out` is the folder itself for one manifest and the parent of one folder per manifest for several;
    manifests with the same file name are told apart by their folder's name."""
    stems = [Path(m).stem for m in manifests]
    names = [
        f"{Path(m).parent.name}_{stem}" if stems.count(stem) > 1 else stem
        for m, stem in zip(manifests, stems, strict=True)
    ]
    if len(set(names)) < len(names):
        raise KWSError("the same manifest is listed twice; list each manifest once")
    if out is not None:
        return [Path(out)] if len(manifests) == 1 else [Path(out) / name for name in names]
    return [Path(checkpoint).parent / "eval" / name for name in names]


def label_ids(
    entries: Sequence[Entry], labels: Sequence[str], manifest: Path, classes_map: str | None
) -> tuple[np.ndarray, list[str]]:
    """Class id and scored label of every clip. A label the model does not know is an error, unless
    `classes_map` names a model class (e.g. `unknown`) that such clips are scored as."""
    index = {label: i for i, label in enumerate(labels)}
    if classes_map is None:
        fix = " or pass --classes-map unknown to score them as `unknown`" if "unknown" in index else ""
        check_labels(entries, labels, manifest, f"Evaluate a manifest with the model's classes{fix}")
    if classes_map is not None and classes_map not in index:
        raise KWSError(
            f"--classes-map {classes_map} names no class of the model; its labels are {', '.join(labels)}"
        )
    scored = [e.label if e.label in index else str(classes_map) for e in entries]
    return np.array([index[label] for label in scored], dtype=np.int64), scored


def predict(
    loaded: LoadedModel | OnnxModel, entries: Sequence[Entry], batch_size: int, description: str
) -> np.ndarray:
    """Softmax probabilities `(n_clips, n_classes)` for every clip, in manifest order. An exported model
    (OnnxModel) sees each clip fitted to its one window (kws.exported.fit_window)."""
    from kws.exported import OnnxModel, fit_window

    if isinstance(loaded, OnnxModel):
        window = loaded.metadata.window_samples

        def run(clips: list[np.ndarray]) -> np.ndarray:
            assert isinstance(loaded, OnnxModel)
            return loaded.probs(np.stack([fit_window(c, window) for c in clips]))

        return _batched(run, entries, len(loaded.labels), batch_size, description)
    import torch

    device = next(loaded.model.parameters()).device

    def run_torch(clips: list[np.ndarray]) -> np.ndarray:
        assert not isinstance(loaded, OnnxModel)
        # Pad like the trainer's packed set: at least one clip length, zeros after each clip's end.
        width = max(CLIP_SAMPLES, max(len(c) for c in clips))
        audio = np.zeros((len(clips), width), dtype=np.int16)
        for row, clip in enumerate(clips):
            audio[row, : len(clip)] = clip
        audio_t = torch.from_numpy(audio).to(device).float().mul_(1.0 / INT16_SCALE)  # (batch, samples)
        lengths = torch.tensor([len(c) for c in clips], device=device)
        feats, feat_lengths = loaded.features(audio_t, lengths)  # (batch, n_mfcc, frames)
        logits = loaded.model(feats, feat_lengths)  # (batch, n_classes)
        return torch.softmax(logits.float(), dim=-1).cpu().numpy()

    with torch.inference_mode():
        return _batched(run_torch, entries, len(loaded.labels), batch_size, description)


def _batched(
    run: Callable[[list[np.ndarray]], np.ndarray],
    entries: Sequence[Entry],
    n_classes: int,
    batch_size: int,
    description: str,
) -> np.ndarray:
    """`run` over the clips of `entries`, `batch_size` at a time, with a progress bar -> `(n_clips,
    n_classes)`."""
    batches = [entries[i : i + batch_size] for i in range(0, len(entries), batch_size)]
    out = np.zeros((len(entries), n_classes), dtype=np.float64)

    def read(batch: Sequence[Entry]) -> list[np.ndarray]:
        return [read_wav(Path(e.audio_filepath)) for e in batch]

    # One reader thread decodes the next batch while the model runs (libsndfile releases the GIL).
    with ThreadPoolExecutor(1) as pool, item_progress("clips") as progress:
        task = progress.add_task(description, total=len(entries))
        pending = pool.submit(read, batches[0]) if batches else None
        start = 0
        for b in range(len(batches)):
            assert pending is not None
            clips = pending.result()
            pending = pool.submit(read, batches[b + 1]) if b + 1 < len(batches) else None
            out[start : start + len(clips)] = run(clips)
            start += len(clips)
            progress.advance(task, len(clips))
    return out


def evaluate_manifest(
    loaded: LoadedModel | OnnxModel,
    manifest: Path,
    out_dir: Path,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    top_k: int = DEFAULT_TOP_K,
    low_confidence: float = LOW_CONFIDENCE,
    classes_map: str | None = None,
) -> EvalOutcome:
    """Run the model over one manifest and write report.json, predictions.csv and the PNGs to `out_dir`."""
    t0 = time.perf_counter()
    manifest = Path(manifest)
    entries = read_manifest(manifest)
    y_true, scored = label_ids(entries, loaded.labels, manifest, classes_map)
    missing = [e.audio_filepath for e in entries if not os.path.isfile(e.audio_filepath)]
    if missing:
        raise DataError(
            f"{len(missing)} clips listed in {manifest} do not exist (e.g. {missing[0]}); "
            "re-run `kws prepare` or fix the manifest"
        )
    probs = predict(loaded, entries, batch_size, f"evaluating {manifest.name}")
    report = compute_report(
        loaded.labels,
        y_true,
        probs.argmax(axis=1),
        probs,
        [e.audio_filepath for e in entries],
        top_k=top_k,
        low_confidence=low_confidence,
        manifest_labels=[e.label for e in entries] if classes_map else None,
    )
    report = replace(
        report,
        checkpoint=str(Path(loaded.checkpoint).resolve()),
        checkpoint_step=loaded.step,
        manifest=str(manifest.resolve()),
        manifest_sha256=file_sha256(manifest),
        kws_version=__version__,
    )
    files = write_report_files(report, out_dir)
    return EvalOutcome(
        manifest,
        Path(out_dir),
        report,
        files,
        time.perf_counter() - t0,
        confusions=confusion_pairs(report, N_CONFUSIONS_SHOWN),
        worst_classes=worst_classes(report, N_WORST_SHOWN),
    )


def load_model(path: Path, device: str = "auto") -> LoadedModel | OnnxModel:
    """A checkpoint on `device` (`--device`: auto, cpu, cuda, cuda:N), or an exported `.onnx`, which runs on
    the CPU with onnxruntime and imports no torch."""
    from kws.exported import is_exported, is_torchscript, load_onnx

    if is_exported(path):
        if device not in ("auto", "cpu"):
            raise KWSError(
                f"--device {device}: an exported .onnx runs on the CPU with onnxruntime; drop --device, or "
                "pass the checkpoint it came from to run on a GPU"
            )
        return load_onnx(path)
    if Path(path).is_file() and is_torchscript(path):
        raise KWSError(
            f"{path} is a TorchScript export, for libtorch; kws evaluate and detect take a checkpoint or an "
            "exported .onnx"
        )
    from kws.checkpoint import load_for_inference
    from kws.train.device import pick_device

    return load_for_inference(Path(path), pick_device(device))


def evaluate(
    checkpoint: Path,
    manifests: Sequence[Path],
    *,
    out: Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str = "auto",
    top_k: int = DEFAULT_TOP_K,
    low_confidence: float = LOW_CONFIDENCE,
    classes_map: str | None = None,
) -> list[EvalOutcome]:
    """Evaluate `checkpoint` on each manifest; reports go to `<checkpoint dir>/eval/<manifest stem>/`
    unless `out` is given (see `out_dirs`)."""
    if not manifests:
        raise KWSError("give at least one manifest to evaluate")
    if batch_size < 1:
        raise KWSError(f"--batch-size must be at least 1, got {batch_size}")
    if top_k < 1:
        raise KWSError(f"--top-k must be at least 1, got {top_k}")
    if not 0.0 <= low_confidence <= 1.0:
        raise KWSError(f"--low-confidence is a probability between 0 and 1, got {low_confidence}")
    dirs = out_dirs(checkpoint, manifests, out)
    for manifest in manifests:
        check_manifest_path(manifest)
    loaded = load_model(Path(checkpoint), device)
    return [
        evaluate_manifest(
            loaded,
            Path(m),
            d,
            batch_size=batch_size,
            top_k=top_k,
            low_confidence=low_confidence,
            classes_map=classes_map,
        )
        for m, d in zip(manifests, dirs, strict=True)
    ]
