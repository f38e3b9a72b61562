"""Evaluate a checkpoint on one or more manifests and write a report for each.

The model, features and labels come from the checkpoint alone (`kws.checkpoint.load_for_inference`);
inference runs in eval mode (no augmentation, centre crop), batched, on the GPU when there is one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kws import __version__
from kws.audio import CLIP_SAMPLES, INT16_SCALE, read_wav
from kws.console import item_progress
from kws.errors import DataError, KWSError
from kws.evaluate.report import LOW_CONFIDENCE, EvalReport, compute_report, write_report_files
from kws.manifest import Entry, file_sha256, read_manifest

if TYPE_CHECKING:
    import torch
    from rich.console import RenderableType

    from kws.checkpoint import LoadedModel

DEFAULT_BATCH_SIZE = 256
DEFAULT_TOP_K = 5


@dataclass
class EvalOutcome:
    manifest: Path
    out_dir: Path
    report: EvalReport
    files: list[Path]
    seconds: float


def resolve_device(name: str) -> torch.device:
    """auto: CUDA when available, else CPU; cuda without a GPU is an error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KWSError(f"--device {name} asked for, but no CUDA GPU is available; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise KWSError(f"unknown --device {name!r}; use auto, cpu or cuda") from None


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
    unknown = sorted({e.label for e in entries if e.label not in index})
    if unknown and classes_map is None:
        fix = " or pass --classes-map unknown to score them as `unknown`" if "unknown" in index else ""
        raise DataError(
            f"{manifest} has {len(unknown)} labels the model does not know: {', '.join(unknown)}; "
            f"the model's labels are {', '.join(labels)}. Evaluate a manifest with the model's classes{fix}"
        )
    if classes_map is not None and classes_map not in index:
        raise KWSError(
            f"--classes-map {classes_map} names no class of the model; its labels are {', '.join(labels)}"
        )
    scored = [e.label if e.label in index else str(classes_map) for e in entries]
    return np.array([index[label] for label in scored], dtype=np.int64), scored


def predict(loaded: LoadedModel, entries: Sequence[Entry], batch_size: int, description: str) -> np.ndarray:
    """Softmax probabilities `(n_clips, n_classes)` for every clip, in manifest order."""
    import torch

    device = next(loaded.model.parameters()).device
    batches = [entries[i : i + batch_size] for i in range(0, len(entries), batch_size)]
    out = np.zeros((len(entries), len(loaded.labels)), dtype=np.float64)

    def read(batch: Sequence[Entry]) -> list[np.ndarray]:
        return [read_wav(Path(e.audio_filepath)) for e in batch]

    # One reader thread decodes the next batch while the model runs (libsndfile releases the GIL).
    with ThreadPoolExecutor(1) as pool, item_progress("clips") as progress, torch.inference_mode():
        task = progress.add_task(description, total=len(entries))
        pending = pool.submit(read, batches[0]) if batches else None
        start = 0
        for b in range(len(batches)):
            assert pending is not None
            clips = pending.result()
            pending = pool.submit(read, batches[b + 1]) if b + 1 < len(batches) else None
            # Pad like the trainer's packed set: at least one clip length, zeros after each clip's end.
            width = max(CLIP_SAMPLES, max(len(c) for c in clips))
            audio = np.zeros((len(clips), width), dtype=np.int16)
            for row, clip in enumerate(clips):
                audio[row, : len(clip)] = clip
            audio_t = torch.from_numpy(audio).to(device).float().mul_(1.0 / INT16_SCALE)  # (batch, samples)
            lengths = torch.tensor([len(c) for c in clips], device=device)
            feats, feat_lengths = loaded.features(audio_t, lengths)  # (batch, n_mfcc, frames)
            logits = loaded.model(feats, feat_lengths)  # (batch, n_classes)
            out[start : start + len(clips)] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
            start += len(clips)
            progress.advance(task, len(clips))
    return out


def evaluate_manifest(
    loaded: LoadedModel,
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
    return EvalOutcome(manifest, Path(out_dir), report, files, time.perf_counter() - t0)


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
    from kws.checkpoint import load_for_inference

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
        if not Path(manifest).is_file():
            raise DataError(f"manifest {manifest} does not exist; run `kws prepare` or check the path")
    loaded = load_for_inference(Path(checkpoint), resolve_device(device))
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


def summary_renderables(
    outcomes: Sequence[EvalOutcome], n_pairs: int = 10, n_worst: int = 5
) -> list[RenderableType]:
    """What `kws evaluate` prints: per manifest a headline, the most frequent confusions and the worst
    classes; for several manifests, then one row each side by side."""
    from rich import box
    from rich.table import Table

    from kws.evaluate.report import confusion_pairs, worst_classes

    items: list[RenderableType] = []
    for o in outcomes:
        r = o.report
        lo, hi = r.accuracy_ci95
        items.append(
            f"\n[bold]{o.manifest.name}[/]: accuracy [bold]{r.accuracy:.2%}[/] (95% CI {lo:.2%} - {hi:.2%}), "
            f"top-{r.top_k} {r.top_k_accuracy:.2%}, {r.num_samples:,} clips, "
            f"{len(r.misclassified):,} errors, "
            f"{r.low_confidence_count:,} low-confidence errors (confidence <= {r.low_confidence_threshold:g})"
        )
        pairs = confusion_pairs(r, n_pairs)
        if pairs:
            table = Table(title=f"{len(pairs)} most frequent confusions", title_justify="left")
            for name in ("true", "predicted", "count", "% of true class"):
                table.add_column(name, justify="right" if name[0] in "c%" else "left")
            for true, predicted, count in pairs:
                support = r.per_class[true].support
                table.add_row(true, predicted, str(count), f"{count / support:.1%}" if support else "-")
            items.append(table)
        worst = Table(title=f"worst {n_worst} classes", title_justify="left")
        for name in ("class", "recall", "precision", "F1", "support"):
            worst.add_column(name, justify="left" if name == "class" else "right")
        for label, m in worst_classes(r, n_worst):
            worst.add_row(label, f"{m.recall:.1%}", f"{m.precision:.1%}", f"{m.f1:.3f}", str(m.support))
        items.append(worst)
        items.append(f"report: {o.out_dir} ({o.seconds:.1f} s); listen: kws listen-errors {o.out_dir}")
    if len(outcomes) > 1:
        side = Table(
            title="\nall manifests",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            collapse_padding=True,
        )
        top = f"top-{outcomes[0].report.top_k}"
        for name in ("manifest", "clips", "accuracy", "95% CI", top, "errors", "low-conf"):
            side.add_column(name, justify="left" if name == "manifest" else "right", no_wrap=True)
        for o in outcomes:
            r = o.report
            lo, hi = r.accuracy_ci95
            side.add_row(
                o.manifest.stem,
                f"{r.num_samples:,}",
                f"{r.accuracy:.2%}",
                f"{100 * lo:.1f}-{100 * hi:.1f}%",
                f"{r.top_k_accuracy:.2%}",
                f"{len(r.misclassified):,}",
                f"{r.low_confidence_count:,}",
            )
        items.append(side)
    return items
