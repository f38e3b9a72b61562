"""`kws prepare`: Speech Commands or a synthesized dataset, split into manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kws.cli.root import app, signal_exit_code
from kws.errors import KWSError


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
        str, typer.Option(help="all: every word a class; sub: the keywords + unknown + silence.")
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
        str | None,
        typer.Option(help="tts: comma-separated keywords (default: 30 v1 words; sub: the 10 command words)."),
    ] = None,
    speakers: Annotated[int, typer.Option(help="tts: number of synthetic speakers.")] = 300,
    clips_per_speaker: Annotated[int, typer.Option(help="tts: clips of each word per speaker.")] = 1,
    name: Annotated[str, typer.Option(help="tts: dataset folder name under --data-root.")] = "tts_keywords",
    style: Annotated[
        str, typer.Option(help="tts: plain (word alone) or rich (prosody, carrier phrases, ?/! per clip).")
    ] = "rich",
    unknown_words: Annotated[
        str | None,
        typer.Option(help="tts, sub: comma-separated non-keywords for unknown, beside the built-in ones."),
    ] = None,
    streams: Annotated[
        int,
        typer.Option(help="tts: also write this many keyword streams and >= 1 h of keyword-free ones."),
    ] = 0,
    stream_minutes: Annotated[float, typer.Option(help="tts: minutes of each stream recording.")] = 10.0,
    engines: Annotated[
        str | None,
        typer.Option(
            help="tts: comma-separated synthesizers that take the speakers in turn: espeak-ng, flite, "
            "festival, piper:VOICE.onnx (default: espeak-ng)."
        ),
    ] = None,
    exclude: Annotated[
        Path | None, typer.Option(help="File listing clips (one path a line) to leave out.")
    ] = None,
) -> None:
    """Download or synthesize a dataset, split it and write train/validation/test manifests."""
    from kws.console import prepare_table
    from kws.prepare.splits import ManifestOptions

    opts = ManifestOptions(classes=classes, rebalance=rebalance, seed=seed, exclude=exclude, workers=workers)
    with signal_exit_code():
        if dataset == "speech_commands":
            from kws.prepare.speech_commands import prepare_speech_commands

            if unknown_words is not None or streams or engines is not None:
                raise KWSError(
                    "--unknown-words, --streams and --engines are options of --dataset tts; drop them"
                )

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
            from kws.prepare.tts.engines import parse_engines
            from kws.prepare.tts.keywords import parse_unknown_words, parse_words
            from kws.prepare.tts.source import prepare_tts

            result = prepare_tts(
                data_root,
                name,
                parse_words(words, classes),
                n_speakers=speakers,
                clips_per_speaker=clips_per_speaker,
                opts=opts,
                style=style,
                unknown_words=parse_unknown_words(unknown_words),
                n_streams=streams,
                stream_minutes=stream_minutes,
                engines=parse_engines(engines),
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
