"""`kws export`: a checkpoint to a file that runs outside kws, kept only when it scores what kws scores."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kws.cli.root import app, signal_exit_code

if TYPE_CHECKING:
    from kws.export.parity import GateResult


def _accuracy(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


def _gate_line(gate: GateResult) -> str:
    line = (
        f"{gate.precision}: top-1 agreement {gate.agreement:.2%}, largest probability difference "
        f"{gate.max_prob_diff:.1e}"
    )
    if gate.accuracy_exported is not None:
        exported, own = _accuracy(gate.accuracy_exported), _accuracy(gate.accuracy_checkpoint)
        line += f", accuracy {exported} (checkpoint {own})"
    return line


@app.command("export")
def export_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint written by `kws train` (runs/x/best.pt).")],
    format: Annotated[str, typer.Option("--format", help="onnx, or torchscript (libtorch, C++).")] = "onnx",
    out: Annotated[
        Path | None,
        typer.Option(help="File to write; default beside the checkpoint (best.onnx, best.int8.onnx)."),
    ] = None,
    check: Annotated[
        Path | None,
        typer.Option(help="Manifest for the parity gate; default the checkpoint's validation manifest."),
    ] = None,
    quantize: Annotated[
        str | None, typer.Option(help="int8: static quantization calibrated on training clips.")
    ] = None,
    thresholds: Annotated[
        Path | None,
        typer.Option(help="thresholds.json to embed; default the one beside the checkpoint, if any."),
    ] = None,
    calibration: Annotated[
        Path | None, typer.Option(help="int8: manifest of calibration clips; default the training manifest.")
    ] = None,
    max_accuracy_drop: Annotated[
        float | None,
        typer.Option(help="int8: accuracy points it may lose against the checkpoint (default 1)."),
    ] = None,
) -> None:
    """Export a checkpoint (waveform in, probabilities out, features inside) and check that the file scores
    what the checkpoint scores; a file that fails the check is not written."""
    from kws.export.exporter import export_model

    with signal_exit_code():
        outcome = export_model(
            checkpoint,
            fmt=format,
            out=out,
            check=check,
            quantize=quantize,
            thresholds=thresholds,
            calibration=calibration,
            max_drop=max_accuracy_drop,
        )
    meta, checked = outcome.metadata, outcome.check
    sampled = f" of {checked.n_in_manifest:,}" if checked.n_in_manifest > len(checked.windows) else ""
    typer.echo(f"parity on {outcome.gate.source} ({len(checked.windows):,}{sampled} clips):")
    for gate in (outcome.fp32_gate, outcome.gate):
        if gate is not None:
            typer.echo(f"  {_gate_line(gate)}")
    if outcome.evaluate_accuracy is not None:
        fitted = checked.n_not_one_second
        typer.echo(
            f"  the checkpoint on the clips as they are (`kws evaluate`): "
            f"accuracy {outcome.evaluate_accuracy:.2%}"
            + (f"; {fitted:,} clips are not 1 s long, fitted to the window above" if fitted else "")
        )
    if checked.n_unlabelled:
        typer.echo(
            f"  {checked.n_unlabelled:,} clips have labels the model lacks: left out of the accuracies"
        )
    if meta.thresholds:
        typer.echo(
            f"thresholds: {len(meta.thresholds)} keywords from {outcome.thresholds_source}"
            + (f" ({meta.target_fa_per_hour:g} false accepts/hour)" if meta.target_fa_per_hour else "")
        )
    if outcome.thresholds_note:
        typer.echo(f"note: {outcome.thresholds_note}")
    size = f"{outcome.size_bytes / 1024:,.0f} KiB"
    if outcome.fp32_size_bytes:
        fp32 = outcome.fp32_size_bytes
        size += f", {outcome.size_bytes / fp32:.0%} of fp32's {fp32 / 1024:,.0f} KiB"
    typer.echo(
        f"wrote {outcome.path} ({outcome.format} {outcome.precision}, {size}; "
        f"labels {', '.join(meta.labels)}) in {outcome.seconds:.1f} s"
    )
