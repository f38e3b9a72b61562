"""The `kws` command line. Commands parse options, call one library function and print a summary.

Heavy imports (torch) happen inside the commands so that `kws --help` answers instantly. This is the one
place where errors become exit codes: a `KWSError` prints `error: <message>` and exits 1; Ctrl-C exits 130
(128 + SIGINT), SIGTERM 143. The commands live in the modules beside this one, one per step: dataset
(`prepare`), training (`train`), evaluation (`evaluate`, `listen-errors`), detection (`detect`),
deployment (`export`); model_import (`import-nemo`).
"""

from __future__ import annotations

import sys

import typer

# isort: off
# The commands register in pipeline order, the order `kws --help` lists them in.
from kws.cli import dataset, training, model_import, evaluation, detection, deployment  # noqa: F401

# isort: on
from kws.cli.evaluation import _show_clip, evaluate  # noqa: F401  (the tests call them here)
from kws.cli.root import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED, app
from kws.errors import KWSError

__all__ = ["app", "main"]


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
