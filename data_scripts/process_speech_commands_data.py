"""Prepare Google Speech Commands with the reference tool's flags; the same as `kws prepare`.

    python data_scripts/process_speech_commands_data.py --data_root data --data_version 1 --class_split sub

writes data/google_speech_recognition_v1/{train,validation,test}_manifest.json. Differences from the
reference: the archive's SHA-256 is verified, an interrupted download resumes, and `sub`'s silence clips
come from disjoint regions of each noise recording per split (see kws/prepare/splits.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from kws.console import prepare_table
from kws.errors import KWSError
from kws.prepare.speech_commands import prepare_speech_commands
from kws.prepare.splits import ManifestOptions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data_root", required=True, help="folder that receives the dataset and manifests")
    parser.add_argument("--data_version", type=int, default=1, help="Speech Commands version: 1 or 2")
    parser.add_argument("--class_split", default="all", choices=["all", "sub"], help="class set")
    parser.add_argument("--rebalance", action="store_true", help="equalize the train classes by duplication")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    parser.add_argument("--log", action="store_true", help="accepted for compatibility; kws always reports")
    args = parser.parse_args(argv)
    opts = ManifestOptions(classes=args.class_split, rebalance=args.rebalance, seed=args.seed)
    try:
        result = prepare_speech_commands(
            Path(args.data_root),
            args.data_version,
            opts,
            url=None,
            archive=None,
            sha256=None,
            verify=True,
            source=None,
        )
    except KWSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    for note in result.notes:
        print(note)
    if result.up_to_date:
        print(f"Manifests in {result.dataset_dir} are up to date for these options; nothing to do.")
    Console().print(prepare_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
