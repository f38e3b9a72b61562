"""`kws train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kws.cli.root import app, signal_exit_code
from kws.errors import KWSError


@app.command()
def train(
    config: Annotated[
        Path | None, typer.Option(help="YAML config (see configs/); with --resume, default: the run's.")
    ] = None,
    train_manifest: Annotated[
        Path | None, typer.Option(help="Training manifest (overrides data.train_manifest).")
    ] = None,
    val_manifest: Annotated[
        list[Path] | None, typer.Option(help="Validation manifest (data.val_manifests); repeat for several.")
    ] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Output folder (default: runs/<config name>).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (trainer.epochs).")] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Stop after this many optimizer steps; the schedule spans them.")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Batch size per process (trainer.batch_size)")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda (trainer.device).")] = None,
    precision: Annotated[str | None, typer.Option(help="32, bf16 or 16 (trainer.precision).")] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of initialisation, data order and augmentation.")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --run-dir from last.pt.")
    ] = False,
    init: Annotated[
        Path | None,
        typer.Option(
            help="Start a new run from this checkpoint's weights (kws .pt or NeMo .nemo): its model and "
            "features, its encoder, the classifier rows of shared labels (init.checkpoint)."
        ),
    ] = None,
    freeze: Annotated[
        str | None, typer.Option(help="encoder: with --init, train the classifier only (init.freeze).")
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Start over in a --run-dir holding a run (replaces checkpoints, metrics)."
        ),
    ] = False,
    compile: Annotated[
        bool, typer.Option("--compile", help="torch.compile the model (trainer.compile).")
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config value: section.key=value (repeatable)."),
    ] = None,
) -> None:
    """Train a keyword-spotting model (one process, or one per GPU under torchrun -m kws train)."""
    from rich.console import Console

    from kws.config import apply_options, load_config
    from kws.console import train_table
    from kws.train.rundir import CONFIG_FILE

    if init is not None and resume:
        raise KWSError(
            "--init starts a new run from a checkpoint's weights and --resume continues the run in --run-dir "
            "from its last.pt; pass only one of them"
        )
    if config is None:
        if resume and run_dir is not None and not (run_dir / CONFIG_FILE).is_file():
            raise KWSError(
                f"nothing to resume: {run_dir} holds no {CONFIG_FILE} (no run was started there); check "
                "--run-dir, or drop --resume and pass --config to start a new run"
            )
        if not (resume and run_dir is not None):
            raise KWSError("--config is required (only --resume with an existing --run-dir may leave it out)")
        config = run_dir / CONFIG_FILE
    cfg = load_config(config, set_ or ())
    cfg = apply_options(
        cfg,
        train_manifest=train_manifest,
        val_manifests=val_manifest,
        init=init,
        freeze=freeze,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        device=device,
        precision=precision,
        seed=seed,
        compile=compile or None,
    )
    from kws.train.loop import train as run_training  # torch: imported once the options are known good

    with signal_exit_code():
        result = run_training(cfg, run_dir or Path("runs") / config.stem, resume=resume, overwrite=overwrite)
    if result.is_main:
        Console().print(train_table(result))
