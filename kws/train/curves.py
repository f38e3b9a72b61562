"""`curves.png`: training loss, learning rate and validation accuracy of a run, redrawn every epoch."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kws.files import atomic_path


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
