"""The `kws` command line. Commands parse options, call one library function and print a summary.

Heavy imports (torch) happen inside the commands so that `kws --help` answers instantly. This is the one
place where errors become exit codes: a `KWSError` prints `error: <message>` and exits 1; Ctrl-C exits 130
(128 + SIGINT), SIGTERM during training 143.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kws import __version__
from kws.errors import KWSError

if TYPE_CHECKING:
    from kws.evaluate import listen

app = typer.Typer(
    name="kws",
    help="Keyword spotting: prepare Speech Commands or a synthesized dataset, train QuartzNet/MatchboxNet, "
    "evaluate, and listen to the errors.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell convention
EXIT_TERMINATED = 143  # 128 + SIGTERM


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"kws {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    pass


@app.command()
def prepare(
    dataset: Annotated[str, typer.Option(help="speech_commands (download or local copy) or tts.")] = (
        "speech_commands"
    ),
    data_root: Annotated[Path, typer.Option(help="Folder that receives the dataset and manifests.")] = Path(
        "data"
    ),
    version: Annotated[int, typer.Option("--version", help="Speech Commands version: 1 or 2.")] = 1,
    classes: Annotated[
        str, typer.Option(help="all: every word a class; sub: 10 words + unknown + silence.")
    ] = ("all"),
    rebalance: Annotated[
        bool, typer.Option(help="Duplicate train clips until all classes are equal.")
    ] = False,
    seed: Annotated[
        int, typer.Option(help="Seed for every random choice (unknown, silence, rebalance, tts).")
    ] = 0,
    url: Annotated[
        str | None, typer.Option(help="Download from this URL instead of the official one.")
    ] = None,
    archive: Annotated[Path | None, typer.Option(help="Use this .tar.gz already on disk.")] = None,
    sha256: Annotated[str | None, typer.Option(help="Expected SHA-256 of a non-official archive.")] = None,
    verify: Annotated[bool, typer.Option(help="Verify the archive's SHA-256 before extracting.")] = True,
    source: Annotated[
        Path | None, typer.Option(help="Use this extracted Speech Commands tree in place.")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Parallel workers (default: all cores).")] = None,
    words: Annotated[
        str | None, typer.Option(help="tts: comma-separated keywords (default: 30 v1 words).")
    ] = None,
    speakers: Annotated[int, typer.Option(help="tts: number of synthetic speakers.")] = 300,
    clips_per_speaker: Annotated[int, typer.Option(help="tts: clips of each word per speaker.")] = 1,
    name: Annotated[str, typer.Option(help="tts: dataset folder name under --data-root.")] = "tts_keywords",
    style: Annotated[
        str, typer.Option(help="tts: plain (word alone) or rich (prosody, carrier phrases, ?/! per clip).")
    ] = "rich",
    exclude: Annotated[
        Path | None, typer.Option(help="File listing clips (one path a line) to leave out.")
    ] = None,
) -> None:
    """Download or synthesize a dataset, split it and write train/validation/test manifests."""
    from kws.console import prepare_table
    from kws.prepare.splits import ManifestOptions

    opts = ManifestOptions(classes=classes, rebalance=rebalance, seed=seed, exclude=exclude, workers=workers)
    with _signal_exit_code():
        if dataset == "speech_commands":
            from kws.prepare.speech_commands import prepare_speech_commands

            result = prepare_speech_commands(
                data_root,
                version,
                opts,
                url=url,
                archive=archive,
                sha256=sha256,
                verify=verify,
                source=source,
            )
        elif dataset == "tts":
            from kws.prepare.tts.source import parse_words, prepare_tts

            result = prepare_tts(
                data_root,
                name,
                parse_words(words),
                n_speakers=speakers,
                clips_per_speaker=clips_per_speaker,
                opts=opts,
                style=style,
            )
        else:
            raise KWSError(f"unknown --dataset {dataset!r}; use speech_commands or tts")
    for note in result.notes:
        typer.echo(note)
    if result.up_to_date:
        typer.echo(f"Manifests in {result.dataset_dir} are up to date for these options; nothing to do.")
    if result.n_excluded:
        typer.echo(f"Excluded {result.n_excluded} clips listed in {exclude}.")
    from rich.console import Console

    Console().print(prepare_table(result))


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
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        device=device,
        precision=precision,
        seed=seed,
        compile=compile or None,
    )
    from kws.train.loop import train as run_training  # torch: imported once the options are known good

    with _signal_exit_code():
        result = run_training(cfg, run_dir or Path("runs") / config.stem, resume=resume, overwrite=overwrite)
    if result.is_main:
        Console().print(train_table(result))


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint written by `kws train` (runs/x/best.pt).")],
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
) -> None:
    """Evaluate a checkpoint on manifests: report.json, predictions.csv, confusion.png, per_class.png."""
    from rich.console import Console

    from kws.console import evaluation_renderables
    from kws.evaluate.scoring import evaluate as evaluate_checkpoint

    outcomes = evaluate_checkpoint(
        checkpoint,
        manifests,
        out=out,
        batch_size=batch_size,
        device=device,
        top_k=top_k,
        low_confidence=low_confidence,
        classes_map=classes_map,
    )
    console = Console()
    for item in evaluation_renderables(outcomes):
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
    """Look at and listen to the misclassifications of an evaluation."""
    from kws.evaluate import listen

    output = listen.SoundDeviceOutput() if play else None  # fail before any work when there is no sound
    result = listen.listen_errors(eval_dir, top=top, sort=sort, html=html)
    report = result.report
    typer.echo(
        f"{len(report.misclassified)} errors of {report.num_samples} clips (accuracy {report.accuracy:.2%}); "
        f"{len(result.errors)} selected, sorted by {sort}."
    )
    if result.page is not None:
        page = result.page.path.resolve()
        typer.echo(f"wrote {page} ({result.page.n_cards} clips)")
        typer.echo(f"open {page.as_uri()}")
        if result.page.missing:
            missing = result.page.missing
            typer.echo(f"warning: {len(missing)} clips could not be read, e.g. {missing[0]}", err=True)
    if output is not None:
        summary = listen.play_session(
            eval_dir, result.errors, output=output, keys=listen.terminal_keys(), show=_show_clip
        )
        suspects = Path(eval_dir) / listen.SUSPECT_FILE
        typer.echo(f"heard {summary.n_heard} clips; marked {len(summary.marked)} as mislabeled.")
        if summary.marked or suspects.is_file():
            typer.echo(f"suspects: {suspects}; leave them out with `kws prepare ... --exclude {suspects}`")


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


@contextlib.contextmanager
def _signal_exit_code() -> Iterator[None]:
    """Exit with 128 + the signal that stopped the command (130 Ctrl-C, 143 SIGTERM): Typer turns every
    KeyboardInterrupt into exit code 130 before `main` could tell them apart."""
    from kws.interrupt import Interrupted

    try:
        yield
    except Interrupted as exc:
        raise typer.Exit(128 + exc.signum) from None


def _usage_error(exc: typer.TyperException) -> int:
    """Print a Typer usage error as `error: ...` (one line, no usage block or panel); its exit code."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # bare `kws`: the help, not an error (Typer's own test)
        if exc.format_message():  # with rich, Typer already printed it while raising; without, it is here
            typer.echo(exc.format_message())
        return exc.exit_code
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)  # a UsageError knows the command it was parsing
    if ctx is not None:
        stop = "" if message.endswith((".", "?", "!")) else "."
        message = f"{message}{stop} See `{ctx.command_path} --help`."
    typer.echo(f"error: {message}", err=True)
    return exc.exit_code


def main() -> None:
    """Entry point of the `kws` console script: the error boundary."""
    try:
        code = app(standalone_mode=False)
    except KWSError as exc:
        if exc.from_rank is None:  # a DDP process raising another process's error: that one prints it
            typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt as exc:  # 128 + the signal: 130 (Ctrl-C), 143 (SIGTERM, kws.interrupt)
        typer.echo("interrupted", err=True)
        sys.exit(128 + getattr(exc, "signum", EXIT_INTERRUPTED - 128))
    except OSError as exc:  # a file-system failure no library call turned into a KWSError: still one line
        where = f": {exc.filename}" if exc.filename else ""
        typer.echo(
            f"error: {exc.strerror or exc}{where}; check the path, its permissions and free space", err=True
        )
        sys.exit(EXIT_ERROR)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except typer.TyperException as exc:  # usage errors (exit 2): Typer's own wording, on one line
        sys.exit(_usage_error(exc))
    if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):  # a command stopped by Ctrl-C or SIGTERM
        typer.echo("interrupted", err=True)
    if isinstance(code, int):
        sys.exit(code)
