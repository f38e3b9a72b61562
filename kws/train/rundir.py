"""A run directory: `config.yaml` (the resolved config), `metrics.jsonl`, checkpoints, `curves.png`, and
TensorBoard event files when `tensorboard` is installed. Only rank 0 touches it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from kws.config import upgrade_layout
from kws.errors import CheckpointError, ConfigError
from kws.files import read_text, write_text_atomic
from kws.plots import pyplot, quiet_plotting, save_figure
from kws.yaml_text import parse_yaml

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
LAST = "last.pt"
BEST = "best.pt"
CURVES_FILE = "curves.png"
TENSORBOARD_DIR = "tensorboard"
CACHE_DIR = "cache"  # the packed datasets, unless data.cache_dir says elsewhere


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
    fix = "delete it or choose another --run-dir"
    text = read_text(path, "the run's config", ConfigError, fix)
    loaded = parse_yaml(text, f"{path} is not valid YAML ({fix})")
    return loaded if isinstance(loaded, dict) else None


def check_run_dir(run_dir: Path, config: Mapping[str, Any], *, resume: bool, overwrite: bool) -> list[str]:
    """Whether `run_dir` may take this run; changes nothing (see `start_run_dir`). Returns the config keys
    that changed (resuming with another config); raises ConfigError or CheckpointError when it refuses:

    - a run dir holding another config, unless `resume` (continue with it) or `overwrite` (start over);
    - a run dir holding a run (`last.pt`) without `resume` or `overwrite`: a re-run must not silently
      restart at step 0 and replace its checkpoints;
    - `resume` without a `last.pt` to continue from."""
    run_dir = Path(run_dir)
    last = run_dir / LAST
    if resume and overwrite:
        raise ConfigError(
            f"--resume continues the run in {run_dir} and --overwrite starts it over; pass only one of them"
        )
    if resume and not last.is_file():
        raise CheckpointError(f"nothing to resume: {last} does not exist; drop --resume to start a new run")
    if overwrite:
        return []
    old = read_run_config(run_dir)
    changed = config_differences(upgrade_layout(old), config) if old is not None else []
    if changed and not resume:
        shown = ", ".join(changed[:6]) + (" ..." if len(changed) > 6 else "")
        raise ConfigError(
            f"{run_dir} holds a run with another config (differs in {shown}); pass --resume to continue it "
            "with the new config, or start over with a new --run-dir or --overwrite"
        )
    if not resume and last.is_file():
        raise ConfigError(
            f"{run_dir} already holds a run ({_describe(last)}); continue it with --resume, or start over "
            "with a new --run-dir or --overwrite"
        )
    return changed


def start_run_dir(run_dir: Path, config: Mapping[str, Any], *, overwrite: bool) -> None:
    """Write `config.yaml`, once the run is known to start; with `overwrite`, first remove what the previous
    run wrote (checkpoints, metrics, curves, TensorBoard events), keeping the packed cache."""
    run_dir = Path(run_dir)
    if overwrite:
        for name in (LAST, BEST, METRICS_FILE, CURVES_FILE):
            (run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(run_dir / TENSORBOARD_DIR, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / CONFIG_FILE, yaml.safe_dump(dict(config), sort_keys=False))


def _describe(last: Path) -> str:
    """`last.pt at step 24`, or only the name when the file cannot be read (the refusal stands either way)."""
    from kws.checkpoint import load_checkpoint  # torch: only when there is a checkpoint to look at

    try:
        step = load_checkpoint(last)["step"]
    except CheckpointError:
        return last.name
    return f"{last.name} at step {step}"


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
        self._tb = _tensorboard_writer(Path(run_dir) / TENSORBOARD_DIR)

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


@quiet_plotting()
def write_curves(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Plot the `step` and `val` records of metrics.jsonl into a PNG at `path` (atomically)."""
    plt = pyplot()

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
    save_figure(fig, path, dpi=100)
