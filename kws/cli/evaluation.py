"""`kws evaluate` (clips and streams) and `kws listen-errors`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kws.cli.root import app
from kws.errors import KWSError

if TYPE_CHECKING:
    from kws.evaluate import listen
    from kws.evaluate.page import PageResult


@app.command()
def evaluate(
    checkpoint: Annotated[
        Path, typer.Argument(help="Checkpoint (runs/x/best.pt), or a model from `kws export` (.onnx).")
    ],
    manifests: Annotated[list[Path], typer.Argument(help="One or more manifests to evaluate.")],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Report folder (one manifest) or parent of one folder per manifest; "
            "default <checkpoint dir>/eval/<manifest stem>/."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Clips per inference batch.")] = 256,
    device: Annotated[str, typer.Option(help="auto (GPU when available), cpu or cuda.")] = "auto",
    top_k: Annotated[int, typer.Option(help="Report top-k accuracy and each error's k best labels.")] = 5,
    low_confidence: Annotated[float, typer.Option(help="Errors with confidence <= this are low.")] = 0.25,
    classes_map: Annotated[
        str | None, typer.Option(help="Score labels the model does not know as this class, e.g. unknown.")
    ] = None,
    hop: Annotated[
        float | None,
        typer.Option(help="Streams: seconds between 1 s windows (default 0.2, or --thresholds')."),
    ] = None,
    smooth: Annotated[
        float | None,
        typer.Option(help="Streams: seconds of score smoothing (default 0.3, or --thresholds')."),
    ] = None,
    refractory: Annotated[
        float | None,
        typer.Option(help="Streams: seconds between two detections (default 1.0, or --thresholds')."),
    ] = None,
    tolerance: Annotated[float, typer.Option(help="Streams: seconds a hit may lie outside its event.")] = 0.5,
    target_fa_per_hour: Annotated[
        float | None,
        typer.Option(help="Streams: choose each keyword's threshold for this many false accepts/hour (0.5)."),
    ] = None,
    thresholds: Annotated[
        Path | None,
        typer.Option(
            help="Streams: report at these thresholds (a thresholds.json chosen on other recordings) instead "
            "of choosing them here; its hop, smoothing and refractory period too, unless given."
        ),
    ] = None,
) -> None:
    """Evaluate a checkpoint on manifests: report.json, predictions.csv, confusion.png, per_class.png; on a
    stream manifest (lines with "events"): recall, false accepts per hour, det.png and thresholds.json."""
    from rich.console import Console

    from kws.console import evaluation_renderables
    from kws.detect.detector import resolve_settings
    from kws.detect.evaluation import (
        DEFAULT_TARGET_FA_PER_HOUR,
        GivenThresholds,
        StreamOptions,
        StreamOutcome,
        evaluate_manifests,
    )
    from kws.detect.summary import stream_evaluation_renderables

    if thresholds is not None and target_fa_per_hour is not None:
        raise KWSError(
            "--thresholds and --target-fa-per-hour both given; pass one (given thresholds are not chosen)"
        )
    settings = resolve_settings(
        thresholds_file=thresholds, threshold=None, hop_s=hop, smooth_s=smooth, refractory_s=refractory
    )
    options = StreamOptions(
        settings.hop_s,
        settings.smooth_s,
        settings.refractory_s,
        tolerance,
        DEFAULT_TARGET_FA_PER_HOUR if target_fa_per_hour is None else target_fa_per_hour,
    )
    given = None if thresholds is None else GivenThresholds(str(thresholds), dict(settings.thresholds))
    outcomes = evaluate_manifests(
        checkpoint,
        manifests,
        out=out,
        device=device,
        options=options,
        batch_size=batch_size,
        top_k=top_k,
        low_confidence=low_confidence,
        classes_map=classes_map,
        given=given,
    )
    streams = [o for o in outcomes if isinstance(o, StreamOutcome)]
    clips = [o for o in outcomes if not isinstance(o, StreamOutcome)]
    console = Console()
    for item in [*evaluation_renderables(clips), *stream_evaluation_renderables(streams)]:
        console.print(item, soft_wrap=isinstance(item, str))  # a path to copy stays on one line


@app.command("listen-errors")
def listen_errors(
    eval_dir: Annotated[Path, typer.Argument(help="Folder of an evaluation (holds report.json).")],
    top: Annotated[int, typer.Option(help="Errors to show (0: all).")] = 200,
    sort: Annotated[
        str, typer.Option(help="confidence (least confident first), -confidence, or pair (grouped).")
    ] = "confidence",
    html: Annotated[bool, typer.Option(help="Write EVAL_DIR/errors.html, a self-contained page.")] = True,
    play: Annotated[bool, typer.Option(help="Play the clips in the terminal (needs kws\\[audio]).")] = False,
) -> None:
    """Look at and listen to the misclassifications of an evaluation (of a stream evaluation: its false
    accepts and missed events, each with the seconds of audio around it)."""
    from kws.detect.stream_report import is_stream_evaluation
    from kws.evaluate import listen

    if is_stream_evaluation(eval_dir):
        from kws.detect.review import listen_stream_errors

        if play:
            raise KWSError(
                "--play plays clip evaluations only; open the errors.html this command writes instead"
            )
        found = listen_stream_errors(eval_dir, top=top, sort=sort, html=html)
        typer.echo(
            f"{len(found.errors.false_accepts)} false accepts and {len(found.errors.missed)} missed events; "
            f"{len(found.cards)} selected, sorted by {sort}."
        )
        _echo_page(found.page, "cards", "recordings")
        return
    output = listen.SoundDeviceOutput() if play else None  # fail before any work when there is no sound
    result = listen.listen_errors(eval_dir, top=top, sort=sort, html=html)
    report = result.report
    typer.echo(
        f"{len(report.misclassified)} errors of {report.num_samples} clips (accuracy {report.accuracy:.2%}); "
        f"{len(result.errors)} selected, sorted by {sort}."
    )
    _echo_page(result.page, "clips", "clips")
    if output is not None:
        summary = listen.play_session(
            eval_dir, result.errors, output=output, keys=listen.terminal_keys(), show=_show_clip
        )
        suspects = Path(eval_dir) / listen.SUSPECT_FILE
        typer.echo(f"heard {summary.n_heard} clips; marked {len(summary.marked)} as mislabeled.")
        if summary.marked or suspects.is_file():
            typer.echo(f"suspects: {suspects}; leave them out with `kws prepare ... --exclude {suspects}`")


def _echo_page(page: PageResult | None, unit: str, audio: str) -> None:
    """Where the errors page went (its path and file:// URL), and the audio it could not read."""
    if page is None:
        return
    path = page.path.resolve()
    typer.echo(f"wrote {path} ({page.n_cards} {unit})")
    typer.echo(f"open {path.as_uri()}")
    if page.missing:
        typer.echo(f"warning: cannot read {len(page.missing)} {audio}, e.g. {page.missing[0]}", err=True)


def _show_clip(item: listen.ClipView | str) -> None:
    """The `--play` session's screen: a panel of the clip's facts, or one line of news."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    from kws.evaluate.listen import KEYS_HELP

    console = Console()
    if isinstance(item, str):  # paths and labels are text, never Rich markup (`[...]` in a file name)
        console.print(Text(item, style="yellow"))
        return
    err = item.err
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", justify="right")
    grid.add_column()
    manifest = f" (manifest: {err.manifest_label})" if err.manifest_label else ""
    grid.add_row("true", Text.assemble((err.label, "bold green"), manifest))
    grid.add_row("predicted", Text(err.predicted, style="bold red"))
    grid.add_row("confidence", f"{err.confidence:.1%}")
    grid.add_row("top-k", Text("  ".join(f"{label} {p:.1%}" for label, p in err.top_k)))
    grid.add_row("file", Text(err.audio_filepath))
    grid.add_row("manifest line", str(err.index))
    if item.marked:
        grid.add_row("", Text("marked as mislabeled", style="yellow"))
    if item.note:
        grid.add_row("", Text(item.note, style="yellow"))
    console.print(Panel(grid, title=f"error {item.position}/{item.total}", expand=False))
    console.print(Text(KEYS_HELP, style="dim"))
