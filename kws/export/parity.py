"""The parity gate: an exported model must score what the checkpoint scores, on the user's own audio.

The check set is one window per clip of a manifest (`--check`; by default the checkpoint's validation
manifest when it exists; at most MAX_CHECK_CLIPS of them, drawn with seed 0), fitted to the window as
kws.exported.fit_window does; without a manifest, generated audio (tones, chirps, noise, near-silence:
GENERATED_CLIPS windows, the same every time). Both sides see the same windows: the checkpoint through
kws's own inference (kws.checkpoint.LoadedModel: its features and model, in eval mode), the exported file
through its runtime. A clip that is not one second long is fitted to the window for both; `kws export`
also reports the checkpoint's accuracy on the clips as they are (as `kws evaluate` scores them), which can
differ a little for such clips.

fp32 passes with top-1 agreement >= MIN_AGREEMENT and a largest probability difference <= MAX_PROB_DIFF;
int8 passes when its accuracy is at most `max_drop` points below the checkpoint's (a labelled manifest is
needed to measure that).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kws.audio import SAMPLE_RATE, read_wav
from kws.checkpoint import LoadedModel
from kws.exported import fit_window
from kws.manifest import Entry, read_manifest

MIN_AGREEMENT = 0.999
MAX_PROB_DIFF = 1e-3
DEFAULT_MAX_DROP = 1.0  # accuracy points an int8 model may lose
GENERATED_CLIPS = 256
MAX_CHECK_CLIPS = 4096  # 256 MiB of float32 windows
QUIET_LEVEL = 1e-4  # the "silence" of the generated audio: digital zeros make per-utterance
# normalisation divide float rounding by a zero variance, in kws's own inference as in the file
REFERENCE_BATCH = 256


@dataclass
class CheckSet:
    windows: np.ndarray  # (n, window_samples) float32
    label_ids: np.ndarray | None  # (n,) class ids; None for generated audio
    source: str  # the manifest, or "generated audio"
    n_unlabelled: int = 0  # clips whose label the model does not have (left out of the accuracies)
    n_in_manifest: int = 0  # clips the manifest lists (more than len(windows) when it was sampled)
    n_not_one_second: int = 0  # clips fitted to the window (padded or cut)
    entries: list[Entry] = field(default_factory=list)  # the clips, for kws's own evaluation of them


@dataclass
class GateResult:
    precision: str  # "fp32" | "int8"
    n_windows: int
    source: str
    agreement: float  # top-1, exported vs checkpoint
    max_prob_diff: float
    accuracy_checkpoint: float | None
    accuracy_exported: float | None
    failures: list[str] = field(default_factory=list)  # why the gate failed; empty when it passed

    @property
    def passed(self) -> bool:
        return not self.failures


def generated_windows(n: int, window_samples: int, seed: int = 0) -> np.ndarray:
    """Deterministic test audio `(n, window_samples)`: tones, chirps, noise bursts and silence at many
    levels, so every part of the front end and every class score is exercised."""
    rng = np.random.default_rng(seed)
    t = np.arange(window_samples) / SAMPLE_RATE
    out = np.zeros((n, window_samples), dtype=np.float32)
    for i in range(n):
        kind = i % 4
        level = 10 ** rng.uniform(-3.5, -0.3)
        if kind == 0:
            wave = np.sin(2 * np.pi * rng.uniform(80, 7000) * t)
        elif kind == 1:
            f0, f1 = rng.uniform(100, 4000, size=2)
            wave = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * t[-1])))
        elif kind == 2:
            wave = rng.standard_normal(window_samples) * np.hanning(window_samples)
        else:
            wave, level = rng.standard_normal(window_samples), QUIET_LEVEL
        out[i] = (level * wave / max(np.abs(wave).max(), 1e-9)).astype(np.float32)
    return out


def manifest_windows(manifest: Path, labels: Sequence[str], window_samples: int) -> CheckSet:
    """One window per clip of `manifest` (at most MAX_CHECK_CLIPS, drawn with seed 0, in manifest order);
    labels the model lacks are kept out of the accuracies."""
    listed = read_manifest(manifest)
    entries = listed
    if len(listed) > MAX_CHECK_CLIPS:
        picked = np.random.default_rng(0).choice(len(listed), size=MAX_CHECK_CLIPS, replace=False)
        entries = [listed[i] for i in sorted(picked.tolist())]
    index = {label: i for i, label in enumerate(labels)}
    clips = [read_wav(Path(e.audio_filepath)) for e in entries]
    windows = np.stack([fit_window(clip, window_samples) for clip in clips])
    ids = np.array([index.get(e.label, -1) for e in entries], dtype=np.int64)
    n_fitted = sum(len(clip) != window_samples for clip in clips)
    return CheckSet(windows, ids, str(manifest), int((ids < 0).sum()), len(listed), n_fitted, entries)


def reference_probs(loaded: LoadedModel, windows: np.ndarray) -> np.ndarray:
    """kws's own inference on `(n, window_samples)` windows -> `(n, n_classes)` probabilities."""
    out = []
    with torch.inference_mode():
        for first in range(0, len(windows), REFERENCE_BATCH):
            audio = torch.from_numpy(np.ascontiguousarray(windows[first : first + REFERENCE_BATCH]))
            lengths = torch.full((audio.shape[0],), audio.shape[1])
            feats, feat_lengths = loaded.features(audio, lengths)
            out.append(torch.softmax(loaded.model(feats, feat_lengths).float(), dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(loaded.labels)), dtype=np.float32)


def accuracy(probs: np.ndarray, ids: np.ndarray | None) -> float | None:
    """Top-1 accuracy over the clips with a label the model has; None when there are none."""
    if ids is None or not (ids >= 0).any():
        return None
    known = ids >= 0
    return float((probs[known].argmax(1) == ids[known]).mean())


def run_gate(
    check: CheckSet,
    reference: np.ndarray,
    exported: Callable[[np.ndarray], np.ndarray],
    precision: str,
    max_drop: float = DEFAULT_MAX_DROP,
) -> GateResult:
    """Score the check set with the exported model and compare with `reference` (kws's own probabilities)."""
    probs = exported(check.windows)
    agreement = float((probs.argmax(1) == reference.argmax(1)).mean())
    max_diff = float(np.abs(probs - reference).max())
    acc_ref, acc_exp = accuracy(reference, check.label_ids), accuracy(probs, check.label_ids)
    failures = []
    if precision == "fp32":
        if agreement < MIN_AGREEMENT:
            failures.append(f"top-1 agreement {agreement:.2%} < {MIN_AGREEMENT:.1%}")
        if max_diff > MAX_PROB_DIFF:
            failures.append(f"largest probability difference {max_diff:.2g} > {MAX_PROB_DIFF:g}")
    elif acc_ref is not None and acc_exp is not None:
        drop = 100 * (acc_ref - acc_exp)
        if drop > max_drop:
            failures.append(
                f"int8 accuracy {acc_exp:.2%} is {drop:.2f} points below fp32's ({max_drop:g} allowed)"
            )
    return GateResult(precision, len(probs), check.source, agreement, max_diff, acc_ref, acc_exp, failures)
