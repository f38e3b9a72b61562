"""`kws import-nemo`: a NeMo `.nemo` speech-command model as a kws checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kws.cli.root import app
from kws.errors import KWSError


@app.command("import-nemo")
def import_nemo(
    model: Annotated[Path, typer.Argument(help="NeMo MatchboxNet/QuartzNet speech-command model (.nemo).")],
    out: Annotated[
        Path | None, typer.Option(help="Checkpoint to write; default beside the model, MODEL.pt.")
    ] = None,
) -> None:
    """Convert a NeMo .nemo speech-command model into a kws checkpoint.

    Labels stay in the model's order; inputs are cropped/padded to its audio_length as NeMo <= 2.2 did. Every
    command that takes a checkpoint also takes the .nemo file directly."""
    from kws.checkpoint import save_checkpoint
    from kws.nemo.importer import nemo_checkpoint

    state = nemo_checkpoint(model)  # first: a file that is no .nemo is named as such
    out = out if out is not None else model.with_suffix(".pt")
    if out.suffix.lower() == ".nemo" or (out.exists() and out.resolve() == model.resolve()):
        raise KWSError(
            f"--out {out} would replace the NeMo model; pass a .pt path, e.g. {model.with_suffix('.pt')}"
        )
    save_checkpoint(out, state)
    n_frames = state["imported_from"]["crop_pad_frames"]
    blocks = len(state["config"]["model"]["blocks"])
    typer.echo(
        f"Imported {model.name}: {blocks} encoder blocks, {len(state['labels'])} labels in the model's order "
        f"({', '.join(state['labels'][:5])}{', ...' if len(state['labels']) > 5 else ''}), crop/pad to "
        f"{n_frames} frames as NeMo <= 2.2 (NeMo >= 2.3's forward skips it)."
    )
    if state["imported_from"]["note"]:
        typer.echo(state["imported_from"]["note"])
    typer.echo(f"Wrote {out}")
