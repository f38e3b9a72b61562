"""The settings a detector runs with: the defaults, and `thresholds.json`, the file in which a stream
evaluation (`kws evaluate CHECKPOINT STREAMS`) records per-keyword thresholds for a target rate of false
accepts with the hop, smoothing and refractory period they were chosen at. `kws detect` reads it, and
`kws export` copies it into the exported model's metadata.

    {"target_fa_per_hour": 0.5, "thresholds": {"go": 0.81, ...}, "hop_s": 0.2, "smooth_s": 0.3,
     "refractory_s": 1.0}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kws.errors import KWSError
from kws.files import read_text

THRESHOLDS_FILE = "thresholds.json"
DEFAULT_HOP_S = 0.2  # seconds between windows: 500x real time and more on 2 CPU cores (bench/stream.py)
DEFAULT_SMOOTH_S = 0.3
DEFAULT_REFRACTORY_S = 1.0
DEFAULT_THRESHOLD = 0.8
TIMING_KEYS = ("hop_s", "smooth_s", "refractory_s")


def threshold_text(threshold: float | None, spec: str = ".3f") -> str:
    """A keyword's threshold as the printouts and pages show it: "off" for one that never fires (None in a
    report's JSON, above 1 in memory)."""
    return "off" if threshold is None or threshold > 1 else format(threshold, spec)


def read_thresholds(path: Path) -> dict[str, Any]:
    """A thresholds.json: `{"thresholds": {label: x}, "hop_s": .., "smooth_s": .., "refractory_s": ..}`."""
    text = read_text(
        Path(path), "thresholds file", KWSError, "pass the thresholds.json of a stream evaluation"
    )
    try:
        data = json.loads(text)
        thresholds = data["thresholds"]
        if not isinstance(thresholds, dict):
            raise TypeError
        parsed = {str(k): float(v) for k, v in thresholds.items()}
    except (ValueError, KeyError, TypeError):
        raise KWSError(
            f'{path} is not a thresholds file: expected JSON with a "thresholds" object of label: number, '
            "as `kws evaluate CHECKPOINT STREAM_MANIFEST` writes"
        ) from None
    bad = [k for k, v in parsed.items() if not (0.0 <= v <= 1.0)]
    if bad:
        raise KWSError(f"{path}: thresholds must lie in [0, 1]; {', '.join(bad)} do not")
    out: dict[str, Any] = {"thresholds": parsed}
    for key in (*TIMING_KEYS, "target_fa_per_hour"):
        if isinstance(data.get(key), (int, float)):
            out[key] = float(data[key])
    for key in (
        "checkpoint",
        "checkpoint_sha256",
    ):  # what they were chosen for (files before 2026-11-28: none)
        if isinstance(data.get(key), str) and data[key]:
            out[key] = data[key]
    return out


def chosen_for_another(saved: dict[str, Any], checkpoint_sha256s: set[str]) -> str | None:
    """The checkpoint a thresholds file (read_thresholds) names as the one its thresholds were chosen for,
    when that is none of `checkpoint_sha256s` (the model at hand); None when it is, or the file does not
    say (older files) or nothing is known of the model."""
    chosen_for = saved.get("checkpoint_sha256")
    if not chosen_for or not checkpoint_sha256s or chosen_for in checkpoint_sha256s:
        return None
    return str(saved.get("checkpoint") or "unknown")
