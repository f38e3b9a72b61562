"""A run directory: `config.yaml` (the resolved config), `metrics.jsonl`, checkpoints, `curves.png`, and
TensorBoard event files when `tensorboard` is installed. Only rank 0 touches it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from kws.errors import ConfigError
from kws.files import atomic_path, write_text_atomic

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
LAST = "last.pt"
BEST = "best.pt"
CURVES_FILE = "curves.png"


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def read_run_config(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{path} is not valid YAML ({exc}); delete it or choose another --run-dir"
        ) from None
    return loaded if isinstance(loaded, dict) else None


def claim_run_dir(run_dir: Path, config: Mapping[str, Any], resume: bool) -> list[str]:
    """Check that `run_dir` may hold this run and write `config.yaml`. A run dir holding another config
    refuses unless `resume`; returns the keys that changed (empty for a new or identical run)."""
    run_dir = Path(run_dir)
    old = read_run_config(run_dir)
    changed = config_differences(old, config) if old is not None else []
    if changed and not resume:
        shown = ", ".join(changed[:6]) + (" ..." if len(changed) > 6 else "")
        raise ConfigError(
            f"{run_dir} holds a run with another config (differs in {shown}); pass --resume to continue it "
            "with the new config, or choose a new --run-dir"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / CONFIG_FILE, yaml.safe_dump(dict(config), sort_keys=False))
    return changed


class MetricsLog:
    """Appends records to metrics.jsonl (and TensorBoard when available); keeps them for the curves."""

    def __init__(self, run_dir: Path, keep_until_step: int | None, enabled: bool = True) -> None:
        """`keep_until_step`: resuming, keep the records up to that step (later ones are redone); None:
        start a fresh log. `enabled=False` (ranks other than 0) keeps records in memory only."""
        self.path = Path(run_dir) / METRICS_FILE
        self.records: list[dict[str, Any]] = []
        self.enabled = enabled
        self._file: Any = None
        self._tb: Any = None
        if not enabled:
            return
        if keep_until_step is not None and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    rec = json.loads(line)
                    if rec.get("step", 0) <= keep_until_step:
                        self.records.append(rec)
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in self.records))
        self._file = self.path.open("a", encoding="utf-8")
        self._tb = _tensorboard_writer(Path(run_dir) / "tensorboard")

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if not self.enabled:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            step = record["step"]
            for key, value in _flatten(record).items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self._tb.add_scalar(f"{record['kind']}/{key}", value, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()


def _tensorboard_writer(folder: Path) -> Any:
    try:
        import tensorboard  # noqa: F401  (the optional extra `kws[tensorboard]`)
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(folder))


def write_curves(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Plot the `step` and `val` records of metrics.jsonl into a PNG at `path` (atomically)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: training runs on servers
    import matplotlib.pyplot as plt

    steps, losses, lrs = [], [], []
    val: dict[str, tuple[list[int], list[float]]] = {}
    for r in records:
        if r.get("kind") == "step":
            steps.append(r["step"])
            losses.append(r["loss"])
            lrs.append(r["lr"])
        elif r.get("kind") == "val":
            for name, m in r["val"].items():
                xs, ys = val.setdefault(name, ([], []))
                xs.append(r["step"])
                ys.append(100.0 * m["accuracy"])

    fig, (ax_loss, ax_lr, ax_acc) = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    ax_loss.plot(steps, losses, lw=1)
    ax_loss.set_ylabel("train loss")
    if losses and min(losses) > 0:
        ax_loss.set_yscale("log")
    ax_lr.plot(steps, lrs, lw=1, color="tab:orange")
    ax_lr.set_ylabel("learning rate")
    for name, (xs, ys) in val.items():
        ax_acc.plot(xs, ys, marker="o", ms=3, label=name)
    if val:
        ax_acc.legend(loc="lower right")
    ax_acc.set_ylabel("validation accuracy (%)")
    ax_acc.set_xlabel("step")
    for ax in (ax_loss, ax_lr, ax_acc):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
