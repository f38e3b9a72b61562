"""kws's `.nemo` import against NeMo itself: the probabilities kws computes for the models and audio that
`bench/nemo_reference.py` wrote with real NeMo (in its own venv), next to NeMo's.

    /tmp/nemo-venv/bin/python bench/nemo_reference.py --out /tmp/nemo_ref   # NeMo's side (see its docstring)
    python bench/nemo_parity.py --ref /tmp/nemo_ref                           # kws's side, in kws's venv

Per model and batch it prints the largest probability difference and the top-1 agreement against NeMo 1.x's
forward (crop/pad to 128 frames, what kws reproduces: kws/nemo/settings.py) and against NeMo 3.x's own
`forward` (no crop/pad). Exit code 1 when the NeMo 1.x difference exceeds the issue's bound (1e-4).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from kws.checkpoint import load_for_inference

BOUND = 1e-4  # largest probability difference allowed against NeMo (issue 14)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ref", type=Path, default=Path("/tmp/nemo_ref"), help="bench/nemo_reference.py --out"
    )
    args = parser.parse_args()
    models = sorted(args.ref.glob("*.nemo"))
    if not models:
        print(f"no .nemo files in {args.ref}; run bench/nemo_reference.py in NeMo's venv first (see above)")
        return 1
    worst = 0.0
    print(f"{'model':<24} {'batch':<6} {'vs NeMo 1.x':>12} {'top-1':>6} {'vs NeMo 3.x':>12} {'top-1':>6}")
    for path in models:
        ref = np.load(path.with_suffix(".npz"))
        loaded = load_for_inference(path, torch.device("cpu"))
        if loaded.labels != [str(x) for x in ref["labels"]]:
            print(f"{path.name}: label order differs from NeMo's")
            return 1
        for suffix, batch in (("", "1 s"), ("_short", "short")):
            audio, lengths = (
                torch.from_numpy(ref[f"audio{suffix}"]),
                torch.from_numpy(ref[f"lengths{suffix}"]),
            )
            with torch.no_grad():
                feats, feat_lengths = loaded.features(audio, lengths)
                probs = loaded.model(feats, feat_lengths).softmax(-1).numpy()
            cells = []
            for forward in ("nemo1", "nemo3"):
                theirs = ref[f"probs_{forward}{suffix}"]
                diff = float(np.abs(probs - theirs).max())
                agree = float((probs.argmax(-1) == theirs.argmax(-1)).mean())
                cells.append(f"{diff:>12.2e} {agree:>6.0%}")
                worst = max(worst, diff) if forward == "nemo1" else worst
            print(f"{path.stem:<24} {batch:<6} {' '.join(cells)}")
    print(f"largest difference against NeMo 1.x's forward: {worst:.2e} (bound {BOUND:g})")
    return 0 if worst <= BOUND else 1


if __name__ == "__main__":
    sys.exit(main())
