"""`kws detect`: keywords in recordings or live from the microphone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kws.cli.root import app, signal_exit_code
from kws.errors import KWSError


@app.command()
def detect(
    checkpoint: Annotated[
        Path, typer.Argument(help="Checkpoint (runs/x/best.pt), or a model from `kws export` (.onnx).")
    ],
    audio: Annotated[
        list[Path] | None, typer.Argument(help="16 kHz mono wav recordings of any length.")
    ] = None,
    thresholds: Annotated[
        Path | None, typer.Option(help="thresholds.json of a stream evaluation (per keyword; also its hop).")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="One threshold for every keyword (default 0.8).")
    ] = None,
    hop: Annotated[float | None, typer.Option(help="Seconds between windows (default 0.2).")] = None,
    smooth: Annotated[float | None, typer.Option(help="Seconds of score smoothing (default 0.3).")] = None,
    refractory: Annotated[
        float | None, typer.Option(help="Seconds without another detection (default 1).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the detections here as JSON lines.")] = None,
    mic: Annotated[
        bool, typer.Option(help="Detect live from the default microphone (needs kws\\[audio]).")
    ] = False,
    device: Annotated[str, typer.Option(help="auto (GPU when available), cpu or cuda.")] = "auto",
) -> None:
    """Find keywords in recordings (or live from the microphone): time, label and score of each detection."""
    from kws.detect.detector import foreign_thresholds, keyword_thresholds, resolve_settings
    from kws.thresholds import threshold_text

    if bool(audio) == mic:
        raise KWSError("pass recordings to scan or --mic, not both and not neither; see `kws detect --help`")
    if mic and out is not None:
        raise KWSError("--out writes the detections of recordings; with --mic they are printed as they come")
    settings = resolve_settings(
        thresholds_file=thresholds, threshold=threshold, hop_s=hop, smooth_s=smooth, refractory_s=refractory
    )
    from kws.console import detection_line
    from kws.evaluate.scoring import load_model
    from kws.exported import OnnxModel

    loaded = load_model(checkpoint, device)
    if isinstance(loaded, OnnxModel):  # its own thresholds, unless the command line gives some
        settings = resolve_settings(
            thresholds_file=thresholds,
            threshold=threshold,
            hop_s=hop,
            smooth_s=smooth,
            refractory_s=refractory,
            embedded=loaded,
        )
    chosen = keyword_thresholds(loaded.labels, settings)
    typer.echo(
        f"thresholds ({settings.source}): "
        + ", ".join(f"{k} {threshold_text(v, 'g')}" for k, v in chosen.items()),
        err=True,
    )
    note = foreign_thresholds(thresholds, loaded) if thresholds is not None else None
    if note:
        typer.echo(note, err=True)
    with signal_exit_code():
        if mic:
            from kws.audio import SAMPLE_RATE
            from kws.detect.live import BACKLOG_S, LiveDetector, microphone_blocks, run_live

            live = LiveDetector(loaded, settings)
            typer.echo("listening (Ctrl-C to stop)", err=True)
            run_live(
                live,
                microphone_blocks(live.hop),
                lambda d: typer.echo(detection_line(d, live=True)),
                lambda n: typer.echo(
                    f"detection fell {BACKLOG_S:g} s behind the microphone and skipped {n / SAMPLE_RATE:.2f} "
                    "s of audio; a larger --hop or an exported .onnx model needs less CPU",
                    err=True,
                ),
            )
            return
        from kws.detect.detector import detect_files
        from kws.files import write_text_atomic

        result = detect_files(loaded, audio or [], settings)
    for item in result.detections:
        typer.echo(detection_line(item))
    if out is not None:
        import json

        write_text_atomic(out, "".join(json.dumps(d.to_json()) + "\n" for d in result.detections))
    typer.echo(
        f"{len(result.detections)} detections in {result.audio_s / 3600:.2f} h of audio, "
        f"{result.seconds:.1f} s ({result.real_time_factor:,.0f}x real time)"
        + (f"; wrote {out}" if out is not None else ""),
        err=True,
    )
