"""The `kws` command line. Commands parse options, call one library function and print a summary.

Heavy imports (torch) happen inside the commands so that `kws --help` answers instantly. This is the one
place where errors become exit codes: a `KWSError` prints `error: <message>` and exits 1; Ctrl-C exits 130.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import click
import typer

from kws import __version__
from kws.errors import KWSError

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
    dataset: Annotated[str, typer.Option(help="speech_commands (download or local copy) or tts (synthesize).")] = (
        "speech_commands"
    ),
    data_root: Annotated[Path, typer.Option(help="Folder that receives the dataset and its manifests.")] = Path(
        "data"
    ),
    version: Annotated[int, typer.Option("--version", help="Speech Commands version: 1 or 2.")] = 1,
    classes: Annotated[str, typer.Option(help="all: every word a class; sub: 10 words + unknown + silence.")] = "all",
    rebalance: Annotated[bool, typer.Option(help="Duplicate train clips until every class is as large as the largest.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for every random choice (unknown, silence, rebalance, synthesis).")] = 0,
    url: Annotated[Optional[str], typer.Option(help="Download from this URL instead of the official one.")] = None,
    archive: Annotated[Optional[Path], typer.Option(help="Use this .tar.gz already on disk.")] = None,
    sha256: Annotated[Optional[str], typer.Option(help="Expected SHA-256 of a non-official archive.")] = None,
    verify: Annotated[bool, typer.Option(help="Verify the archive's SHA-256 before extracting.")] = True,
    source: Annotated[Optional[Path], typer.Option(help="Use this extracted tree in the Speech Commands layout.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes (default: all cores).")] = None,
    words: Annotated[Optional[str], typer.Option(help="tts: comma-separated keywords (default: the 30 v1 words).")] = None,
    speakers: Annotated[int, typer.Option(help="tts: number of synthetic speakers.")] = 300,
    clips_per_speaker: Annotated[int, typer.Option(help="tts: clips of each word per speaker.")] = 1,
    name: Annotated[str, typer.Option(help="tts: dataset folder name under --data-root.")] = "tts_keywords",
    exclude: Annotated[Optional[Path], typer.Option(help="File listing clips (one path a line) to leave out.")] = None,
) -> None:
    """Download or synthesize a dataset, split it and write train/validation/test manifests."""
    from kws.splits import ManifestOptions, summary_table

    opts = ManifestOptions(classes=classes, rebalance=rebalance, seed=seed, exclude=exclude, workers=workers)
    if dataset == "speech_commands":
        from kws.speech_commands import prepare_speech_commands

        result = prepare_speech_commands(
            data_root, version, opts, url=url, archive=archive, sha256=sha256, verify=verify, source=source
        )
    elif dataset == "tts":
        from kws.tts import parse_words, prepare_tts

        result = prepare_tts(
            data_root,
            name,
            parse_words(words),
            n_speakers=speakers,
            clips_per_speaker=clips_per_speaker,
            opts=opts,
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

    Console().print(summary_table(result))


def main() -> None:
    """Entry point of the `kws` console script: the error boundary."""
    try:
        code = app(standalone_mode=False)
    except KWSError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:  # usage errors: click's own message and exit code 2
        exc.show()
        sys.exit(exc.exit_code)
    if isinstance(code, int):
        sys.exit(code)
