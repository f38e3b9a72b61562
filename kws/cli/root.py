"""The `kws` Typer application, its exit codes and the translation of signals into them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated

import typer

from kws import __version__

app = typer.Typer(
    name="kws",
    help="Keyword spotting: prepare Speech Commands or a synthesized dataset, train QuartzNet/MatchboxNet, "
    "fine-tune (also NeMo .nemo models), evaluate, listen to the errors, detect keywords in recordings, and "
    "export models that run outside kws.",
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


@contextlib.contextmanager
def signal_exit_code() -> Iterator[None]:
    """Exit with 128 + the signal that stopped the command (130 Ctrl-C, 143 SIGTERM): Typer turns every
    KeyboardInterrupt into exit code 130 before `main` could tell them apart."""
    from kws.interrupt import Interrupted

    try:
        yield
    except Interrupted as exc:
        raise typer.Exit(128 + exc.signum) from None
