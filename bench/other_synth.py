"""Held-out test speech from a second synthesizer, flite, for bench/generalization.py (issue 7).

The speakers and clips are kws.prepare.tts.flite's; this script writes a test set from the command line:

    apt-get install flite
    python bench/other_synth.py --words yes,no,up --speakers 40 --out /tmp/flite_test
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kws.errors import KWSError
from kws.prepare.tts import flite
from kws.prepare.tts.source import parse_words


def make_test_set(words: list[str], n_speakers: int, out: Path, seed: int = 0, workers: int = 2) -> Path:
    """kws.prepare.tts.flite.make_test_set, stopping the benchmark with its message when flite is missing."""
    try:
        return flite.make_test_set(words, n_speakers, out, seed, workers)
    except KWSError as exc:
        raise SystemExit(f"error: {exc}") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--words", required=True)
    ap.add_argument("--speakers", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    manifest = make_test_set(parse_words(args.words), args.speakers, args.out, args.seed)
    print(f"wrote {manifest}")


if __name__ == "__main__":
    main()
