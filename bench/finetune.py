"""New words from a few examples (issue 14): fine-tuning a trained model against training from scratch.

1. The base model: `--base CKPT` (e.g. `runs/demo/best.pt` of `bash .ci/demo`), or one trained here the
   demo's way (`kws prepare --dataset tts`, `kws train --config configs/tts_quick.yaml`, both seed 0).
2. New words that are not among the 30 Speech Commands v1 words and sound like none of them (espeak-ng's
   phonemes, kws.prepare.tts.phonemes), spoken by speakers the base model never heard: `kws prepare
   --dataset tts --words ... --seed D` with D other than the base dataset's seed. Speakers are drawn from
   the seed alone (kws.prepare.tts.voices.draw_speakers), so another seed draws other voices; the bench
   checks that no speaker id and no voice (all espeak-ng settings) of the new dataset is in the base's.
3. For k in 1, 5, 20, 100: k clips per word drawn (seeded, nested: the k=5 clips hold the k=1 clip) from the
   new dataset's train split, written as a manifest; then, at the same number of optimizer steps, batch
   min(128, clips), the same seed, no validation (the last checkpoint is scored); the subset is listed
   several times over in the training manifest, so that an epoch is at least 20 steps (MIN_EPOCH_STEPS):
   - init:    `kws train --config configs/finetune.yaml --init BASE` (every new word gets a fresh row of
              the classifier: the two label lists share no word);
   - scratch: `kws train --config configs/tts_quick.yaml --max-steps S`;
   - freeze:  (`--freeze`) as init, with `--freeze encoder`: only the classifier trains.
4. `kws evaluate` of each run's last.pt on the new dataset's test split (speakers of neither training set).

    python bench/finetune.py --base runs/demo/best.pt --freeze     # 13-23 minutes a seed on 2 shared cores
    python bench/finetune.py --base runs/demo/best.pt --seeds 0,1 --freeze
    python bench/finetune.py --steps 5 --root /tmp/kws_ft_small    # a quick look (trains a base first)

Runs already scored in ROOT/results.json with the same settings are reused, so a stopped bench continues
where it stopped. Target (issue 14): with --init and 20 clips per word, accuracy within 3 points of
from-scratch training on 100 clips per word. Not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kws.manifest import Entry, read_manifest, write_manifest  # noqa: E402
from kws.prepare.tts.keywords import V1_WORDS, parse_words  # noqa: E402

WORDS = "music,camera,window,volume,pause,lights"
KS = "1,5,20,100"
SCRATCH = REPO / "configs" / "tts_quick.yaml"
FINETUNE = REPO / "configs" / "finetune.yaml"
MAX_BATCH = 128
EPOCHS = 1_000_000  # the step budget, not the epochs, ends every run
# kws train ends every epoch with last.pt and curves.png, 0.3-1 s on 2 busy cores: at k=1 (6 clips, batch 6)
# that would be every step, 2-10x the training itself. So the subset is written this many batches' worth of
# times over (the copies are shuffled together, so a batch may hold a clip twice; the same for every method).
MIN_EPOCH_STEPS = 20
TARGET_POINTS = 3.0
METHODS = ("init", "scratch", "freeze")


def run(*args: object) -> float:
    """Run a command, echoing it; returns its wall seconds."""
    command = [str(a) for a in args]
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def kws(*args: object) -> float:
    return run(sys.executable, "-m", "kws", *args)


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")
        )
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


# ---------------------------------------------------------------- base model and data


def base_model(args: argparse.Namespace) -> tuple[Path, Path]:
    """The base checkpoint and the dataset it was trained on: --base (its dataset: --base-data, else the
    folder of the train manifest its config names), or a model trained here the demo's way."""
    if args.base is not None:
        if args.base_data is not None:
            return args.base, args.base_data
        import torch

        config = torch.load(args.base, map_location="cpu", weights_only=False)["config"]
        return args.base, Path(config["data"]["train_manifest"]).parent
    data = args.root / "data" / "tts_keywords"
    run_dir = args.root / "base"
    if not (run_dir / "best.pt").is_file():
        kws("prepare", "--dataset", "tts", "--data-root", args.root / "data", "--seed", 0)
        kws("train", "--config", SCRATCH, "--train-manifest", data / "train_manifest.json",
            "--val-manifest", data / "validation_manifest.json", "--run-dir", run_dir, "--seed", 0,
            "--overwrite")  # fmt: skip
    return run_dir / "best.pt", data


def check_new_words(words: list[str], base_labels: list[str]) -> None:
    """Refuse a word that is a v1 word or a base label, or sounds the same as one in en-us or en-gb."""
    from kws.prepare.tts.phonemes import homophone_of, pronunciations

    known = sorted({*V1_WORDS, *base_labels})
    prons = pronunciations([*words, *known])
    clashes = [f"{w!r} ~ {k!r}" for w in words for k in [homophone_of(w, known, prons)] if k is not None]
    if clashes:
        raise SystemExit(f"--words must be new to the base model; these are not: {', '.join(clashes)}")


def voices(dataset: Path) -> dict[str, tuple[Any, ...]]:
    """Speaker id -> all of its espeak-ng settings, from the dataset's speakers.json (every split)."""
    doc = json.loads((dataset / "speakers.json").read_text(encoding="utf-8"))
    keys = ("accent", "variant", "rate_wpm", "pitch", "pitch_range_pct", "word_gap", "amplitude")
    return {sid: tuple(s.get(k) for k in keys) for sid, s in doc["speakers"].items()}


def check_unheard(new: Path, base: Path) -> str:
    """Stop when a speaker (by id or by voice) of the new dataset is in the base dataset; else say so."""
    new_voices, base_voices = voices(new), voices(base)
    shared_ids = new_voices.keys() & base_voices.keys()
    shared_voices = set(new_voices.values()) & set(base_voices.values())
    if shared_ids or shared_voices:
        raise SystemExit(
            f"{len(shared_ids)} speaker ids and {len(shared_voices)} voices of {new} are also in {base}; "
            "pick another --data-seed"
        )
    return (
        f"{len(new_voices)} new-word speakers vs {len(base_voices)} base speakers ({base}): "
        "0 shared ids, 0 shared voices"
    )


def subsets(train: Path, ks: list[int], seed: int, out: Path) -> dict[int, Path]:
    """k clips per word of the train split, for each k: the first k of a seeded shuffle of each word's
    clips, so the subsets are nested and differ only by the clips added."""
    by_word: dict[str, list[Entry]] = {}
    for e in read_manifest(train):
        by_word.setdefault(e.label, []).append(e)
    short = {w: len(v) for w, v in by_word.items() if len(v) < max(ks)}
    if short:
        raise SystemExit(f"the train split has fewer than {max(ks)} clips of {short}; pass more --speakers")
    rng = np.random.default_rng(seed)
    order = {w: [v[i] for i in rng.permutation(len(v))] for w, v in sorted(by_word.items())}
    paths = {}
    for k in ks:
        paths[k] = out / f"train_k{k}_seed{seed}.json"
        write_manifest(paths[k], [e for w in sorted(order) for e in order[w][:k]])
    return paths


# ---------------------------------------------------------------- the runs


def train_and_score(
    method: str, base: Path, manifest: Path, test: Path, run_dir: Path, args: argparse.Namespace, seed: int
) -> dict[str, Any]:
    """Train one run to `args.steps` steps and score its last.pt on the test split."""
    clips = read_manifest(manifest)
    batch = min(MAX_BATCH, len(clips))
    repeats = math.ceil(MIN_EPOCH_STEPS * batch / len(clips))
    copies = manifest.with_name(f"{manifest.stem}_x{repeats}.json")
    write_manifest(copies, clips * repeats)
    if method == "scratch":
        start = ["--config", SCRATCH]
    else:
        start = [
            "--config",
            FINETUNE,
            "--init",
            base,
            *(["--freeze", "encoder"] if method == "freeze" else []),
        ]
    train_s = kws("train", *start, "--train-manifest", copies, "--set", "data.val_manifests=[]",
                  "--set", f"data.cache_dir={args.root / 'cache'}", "--run-dir", run_dir,
                  "--max-steps", args.steps, "--epochs", EPOCHS, "--batch-size", batch, "--seed", seed,
                  "--overwrite")  # fmt: skip
    kws("evaluate", run_dir / "last.pt", test, "--out", run_dir / "eval")
    report = json.loads((run_dir / "eval" / "report.json").read_text(encoding="utf-8"))
    step = report["checkpoint_step"]
    if step != args.steps:
        raise SystemExit(f"{run_dir / 'last.pt'} stopped at step {step}, not {args.steps}")
    return {
        "clips": len(clips),
        "batch": batch,
        "repeats": repeats,
        "accuracy": report["accuracy"],
        "train_wall_s": train_s,
    }


def load_results(path: Path, setting: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The runs of an earlier bench with the same setting (none when it differs)."""
    if not path.is_file():
        return {}
    earlier = json.loads(path.read_text(encoding="utf-8"))
    return dict(earlier["runs"]) if earlier.get("setting") == setting else {}


def percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def print_table(runs: dict[str, dict[str, Any]], seeds: list[int], ks: list[int], methods: list[str]) -> None:
    """One row per k: accuracies (the mean over seeds, and each seed's), wall seconds, and the target."""

    def acc(seed: int, k: int, method: str) -> float | None:
        row = runs.get(f"{seed}/{k}/{method}")
        return None if row is None else float(row["accuracy"])

    def mean(values: list[float | None]) -> float | None:
        return (
            None if any(v is None for v in values) else float(np.mean([v for v in values if v is not None]))
        )

    heads = [f"accuracy {m}" for m in methods] + [f"train s {m}" for m in methods]
    print("| k | clips | copies | batch | steps | " + " | ".join(heads) + " |")
    print("|" + "---|" * (5 + len(heads)))
    for k in ks:
        first = next((runs[f"{s}/{k}/{m}"] for s in seeds for m in methods if f"{s}/{k}/{m}" in runs), None)
        if first is None:
            continue
        cells = [str(k), str(first["clips"]), str(first["repeats"]), str(first["batch"]), str(first["steps"])]
        for m in methods:
            each = [acc(s, k, m) for s in seeds]
            cells.append(
                percent(mean(each)) + (f" ({', '.join(percent(v) for v in each)})" if len(seeds) > 1 else "")
            )
        for m in methods:
            walls = [runs[f"{s}/{k}/{m}"]["train_wall_s"] for s in seeds if f"{s}/{k}/{m}" in runs]
            cells.append(f"{np.mean(walls):.0f}" if walls else "-")
        print("| " + " | ".join(cells) + " |")
    init20 = mean([acc(s, 20, "init") for s in seeds])
    scratch100 = mean([acc(s, 100, "scratch") for s in seeds])
    if init20 is None or scratch100 is None:
        print("target: not measured (needs init at k=20 and scratch at k=100)")
        return
    gap = 100 * (scratch100 - init20)
    verdict = "met" if gap <= TARGET_POINTS else "not met"
    print(
        f"target: scratch k=100 {percent(scratch100)} minus init k=20 {percent(init20)} = {gap:+.1f} points "
        f"(at most {TARGET_POINTS:g}): {verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=Path("/tmp/kws_finetune_bench"))
    parser.add_argument("--base", type=Path, help="base checkpoint (default: train one in ROOT/base)")
    parser.add_argument("--base-data", type=Path, help="the base model's dataset (for the speaker check)")
    parser.add_argument("--words", default=WORDS)
    parser.add_argument("--speakers", type=int, default=400, help="speakers of the new-word dataset")
    parser.add_argument("--data-seed", type=int, default=1, help="seed of the new-word dataset's speakers")
    parser.add_argument("--ks", default=KS, help="clips per word, comma-separated")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps of every run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", help="comma-separated seeds (subsets and training); overrides --seed")
    parser.add_argument("--freeze", action="store_true", help="also --init with --freeze encoder")
    parser.add_argument("--skip-init", action="store_true", help="scratch runs only (before --init exists)")
    args = parser.parse_args()

    start = time.perf_counter()
    args.root = args.root.resolve()
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]
    ks = sorted(int(k) for k in args.ks.split(","))
    words = parse_words(args.words)
    methods = ["scratch"] if args.skip_init else ["init", "scratch", *(["freeze"] if args.freeze else [])]
    methods = [m for m in METHODS if m in methods]

    base, base_data = base_model(args)
    base = base.resolve()
    import torch

    base_labels = list(torch.load(base, map_location="cpu", weights_only=False)["labels"])
    check_new_words(words, base_labels)
    data = args.root / "data" / "tts_new_words"
    kws("prepare", "--dataset", "tts", "--data-root", args.root / "data", "--name", data.name,
        "--words", ",".join(words), "--speakers", args.speakers, "--seed", args.data_seed)  # fmt: skip
    unheard = check_unheard(data, base_data)
    print(unheard)
    test = data / "test_manifest.json"

    setting = {"base": str(base), "words": words, "speakers": args.speakers, "data_seed": args.data_seed,
               "steps": args.steps}  # fmt: skip
    results_path = args.root / "results.json"
    runs = load_results(results_path, setting)
    for seed in seeds:
        manifests = subsets(data / "train_manifest.json", ks, seed, args.root / "subsets")
        for k in ks:
            for method in methods:
                key = f"{seed}/{k}/{method}"
                if key in runs:
                    continue
                run_dir = args.root / "runs" / f"seed{seed}" / f"k{k}_{method}"
                row = train_and_score(method, base, manifests[k], test, run_dir, args, seed)
                runs[key] = {**row, "steps": args.steps}
                print(json.dumps({key: runs[key]}), flush=True)
                doc = {"setting": setting, "machine": machine(), "runs": runs}
                results_path.write_text(json.dumps(doc, indent=1), encoding="utf-8")

    print()
    print(f"base {base} ({len(base_labels)} labels); new words {', '.join(words)}")
    print(f"new-word dataset {data} (seed {args.data_seed}, {args.speakers} speakers); {unheard}")
    print(f"test split: {len(read_manifest(test))} clips of unheard speakers; seeds {seeds}; {machine()}")
    print(f"command: {' '.join(sys.argv)}")
    print_table(runs, seeds, ks, methods)
    print(f"bench wall time {time.perf_counter() - start:.0f} s; results in {results_path}")


if __name__ == "__main__":
    main()
