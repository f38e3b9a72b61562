"""Accuracy on voices never heard in training: the exact recipe against the robust recipe (issue 7).

On a TTS dataset made by `kws prepare --dataset tts`, whole voice families are held out: speakers whose
espeak-ng accent or variant family is in the held-out lists never reach training. The remaining ("seen")
speakers are split by a hash of their id into training speakers and in-domain test speakers. A third test
set holds the same words spoken by a second synthesizer, flite (bench/other_synth.py): voices no espeak-ng
setting makes, the nearest this machine has to real people. Both recipes train for the same number of steps
with the same seed, then are scored on all three test sets, each broken down by voice family or flite voice.

    python bench/generalization.py --dataset data/tts_keywords --steps 300
    python bench/generalization.py --make --data-root /tmp/kws_gen --speakers 300 --steps 300
    python bench/generalization.py --dataset data/tts_keywords --steps 1200 \
        --exact-result earlier.json --robust-set features.vtlp_prob=1.0   # try a variant of the robust one

Speaker metadata comes from the dataset's speakers.json, or, for a dataset made before that file existed,
from re-drawing the speakers with kws.prepare.tts.voices.draw_speakers (ids checked against the clips).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from other_synth import make_test_set

from kws.audio import CLIP_SAMPLES, read_wav
from kws.checkpoint import load_for_inference
from kws.config import Config, apply_overrides, load_config
from kws.manifest import Entry, read_manifest, write_manifest
from kws.prepare.tts.voices import draw_speakers, variant_family
from kws.train.loop import train

ROOT = Path(__file__).resolve().parent.parent
EXACT = ROOT / "configs" / "matchboxnet_3x1x64_v1.yaml"
ROBUST = ROOT / "configs" / "matchboxnet_3x1x64_robust.yaml"
WORDS = "yes,no,up,down,left,right,on,off,stop,go,zero,one"


def speaker_of(entry: Entry) -> str:
    return Path(entry.audio_filepath).name.split("_nohash_")[0]


def speaker_families(dataset: Path, seed: int) -> dict[str, tuple[str, str]]:
    """Speaker id -> (accent, variant family)."""
    doc = dataset / "speakers.json"
    if doc.is_file():
        speakers = json.loads(doc.read_text(encoding="utf-8"))["speakers"]
        return {sid: (s["accent"], s["variant_family"]) for sid, s in speakers.items()}
    stamp = json.loads((dataset / ".kws_tts.json").read_text(encoding="utf-8"))
    drawn = draw_speakers(int(stamp.get("seed", seed)), int(stamp["n_speakers"]))
    return {s.id: (s.voice.accent, variant_family(s.voice.variant)) for s in drawn}


def in_domain_test(sid: str, share: float) -> bool:
    digest = hashlib.sha256(f"generalization/{sid}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < share


def write_split(
    dataset: Path,
    out: Path,
    held_accents: set[str],
    held_families: set[str],
    test_share: float,
    families: dict[str, tuple[str, str]],
) -> dict[str, Path]:
    entries = [
        e
        for name in ("train", "validation", "test")
        for e in read_manifest(dataset / f"{name}_manifest.json")
    ]
    unknown = {speaker_of(e) for e in entries} - families.keys()
    if unknown:
        raise SystemExit(f"{len(unknown)} speakers of {dataset} are missing from its speaker metadata")
    parts: dict[str, list[Entry]] = {"train": [], "in_domain": [], "held_out": []}
    for e in entries:
        sid = speaker_of(e)
        accent, family = families[sid]
        if accent in held_accents or family in held_families:
            parts["held_out"].append(e)
        else:
            parts["in_domain" if in_domain_test(sid, test_share) else "train"].append(e)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, part in parts.items():
        paths[name] = out / f"{name}_manifest.json"
        write_manifest(paths[name], part)
        print(f"{name:10s} {len(part):6d} clips, {len({speaker_of(e) for e in part}):4d} speakers")
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
    label: str
    manifest: Path
    group_of: Callable[[Entry], str]


def flite_voice(entry: Entry) -> str:
    return "flite " + speaker_of(entry).split("_")[1]


def test_sets(
    manifests: dict[str, Path], families: dict[str, tuple[str, str]], flite: Path | None
) -> dict[str, TestSet]:
    def family(entry: Entry) -> str:
        return families[speaker_of(entry)][1]

    tests = {
        "in_domain": TestSet("in-domain", manifests["in_domain"], family),
        "held_out": TestSet("held-out espeak-ng voices", manifests["held_out"], family),
    }
    if flite is not None:
        tests["other_synth"] = TestSet("held-out synthesizer (flite)", flite, flite_voice)
    return tests


def print_table(rows: dict[str, dict[str, Any]], tests: dict[str, TestSet]) -> None:
    ex, ro = rows["exact"]["scores"], rows["robust"]["scores"]

    def line(label: str, e: float, r: float) -> None:
        print(f"{label:32s}{100 * e:9.1f}%{100 * r:9.1f}%{100 * (r - e):+9.1f}")

    print(f"{'':32s}{'exact':>10s}{'robust':>10s}{'delta':>10s}")
    for name, test in tests.items():
        if name not in ex or name not in ro:
            continue
        line(test.label, ex[name]["accuracy"], ro[name]["accuracy"])
        if name != "in_domain":
            for group, e_acc in ex[name]["groups"].items():
                line(f"  {group}", e_acc, ro[name]["groups"].get(group, float("nan")))
    e_rate, r_rate = rows["exact"]["clips_per_s"], rows["robust"]["clips_per_s"]
    print(f"{'train clips/s':32s}{e_rate:10.1f}{r_rate:10.1f}{-100 * (1 - r_rate / e_rate):+9.1f}%")


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, help="an existing `kws prepare --dataset tts` folder")
    ap.add_argument(
        "--make", action="store_true", help="synthesize the dataset first (kws prepare --dataset tts)"
    )
    ap.add_argument("--data-root", type=Path, default=Path("/tmp/kws_gen"))
    ap.add_argument("--name", default="tts_gen")
    ap.add_argument("--words", default=WORDS)
    ap.add_argument("--speakers", type=int, default=300)
    ap.add_argument(
        "--held-accents", default="en-029", help="comma-separated espeak-ng accents never trained on"
    )
    ap.add_argument(
        "--held-families", default="klatt", help="comma-separated variant families (klatt, m, f, other)"
    )
    ap.add_argument(
        "--test-share", type=float, default=0.2, help="share of seen speakers kept for in-domain test"
    )
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--exact", type=Path, default=EXACT)
    ap.add_argument("--robust", type=Path, default=ROBUST)
    ap.add_argument(
        "--robust-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of the robust config (repeatable), e.g. features.vtlp_range=[0.8,1.25] "
        "or augment.room.prob=0.4",
    )
    ap.add_argument("--out", type=Path, default=Path("/tmp/kws_generalization"))
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument(
        "--exact-result",
        type=Path,
        help="reuse the exact recipe's row of an earlier --json (same steps and seed)",
    )
    ap.add_argument(
        "--other-synth-speakers",
        type=int,
        default=40,
        help="flite speakers of the held-out-synthesizer test set (needs `apt-get install flite`; 0: none)",
    )
    ap.add_argument("--timing-steps", type=int, default=20, help="interleaved steps for the per-step speed")
    ap.add_argument("--timing-only", action="store_true", help="only the interleaved per-step timing")
    args = ap.parse_args()

    dataset = args.dataset or args.data_root / args.name
    if args.make:
        cmd = [sys.executable, "-m", "kws", "prepare", "--dataset", "tts", "--data-root", str(args.data_root)]
        cmd += ["--name", args.name, "--words", args.words, "--speakers", str(args.speakers)]
        cmd += ["--clips-per-speaker", "1", "--seed", str(args.seed)]
        subprocess.run(cmd, check=True)
    dataset = dataset.resolve()
    if args.timing_only:
        cfgs = [
            bench_config(p, Path("unused"), dataset, 1, args.seed, args.out, extra)
            for p, extra in ((args.exact, []), (args.robust, args.robust_set))
        ]
        ex_s, ro_s = interleaved_step_s(*cfgs, args.timing_steps, n_labels=len(args.words.split(",")))
        slower = 100 * (1 - ex_s / ro_s)
        print(
            f"per step (median of {args.timing_steps}, interleaved): exact {ex_s:.3f} s, robust {ro_s:.3f} s"
        )
        print(f"steps/s drop with the robust recipe: {slower:.1f}%")
        return
    held_accents = {a for a in args.held_accents.split(",") if a}
    held_families = {f for f in args.held_families.split(",") if f}
    families = speaker_families(dataset, args.seed)
    manifests = write_split(
        dataset, args.out / "manifests", held_accents, held_families, args.test_share, families
    )

    flite = None
    if args.other_synth_speakers:
        words = sorted({e.label.replace("_", " ") for e in read_manifest(manifests["in_domain"])})
        flite = make_test_set(words, args.other_synth_speakers, args.out / "flite", args.seed)
    tests = test_sets(manifests, families, flite)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    setting = {
        "dataset": str(dataset),
        "held_accents": sorted(held_accents),
        "held_families": sorted(held_families),
        "other_synth_speakers": args.other_synth_speakers,
        "seed": args.seed,
        "steps": args.steps,
    }
    rows: dict[str, dict[str, Any]] = {}
    if args.exact_result:
        earlier = json.loads(args.exact_result.read_text(encoding="utf-8"))
        if {k: earlier.get(k) for k in setting} != setting:
            raise SystemExit(f"{args.exact_result} was measured with other settings than {setting}")
        rows["exact"] = earlier["runs"]["exact"]
    for name, path in (("exact", args.exact), ("robust", args.robust)):
        if name in rows:
            continue
        extra = args.robust_set if name == "robust" else []
        cache = args.out / "cache"
        cfg = bench_config(path, manifests["train"], dataset, args.steps, args.seed, cache, extra)
        run_dir = args.out / f"run_{name}_{time.strftime('%Y%m%d_%H%M%S')}"
        result = train(cfg, run_dir)
        rows[name] = {
            "config": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
            "overrides": extra,
            "scores": score(result.checkpoints["last"], tests, device),
            "steps": result.steps,
            "clips_per_s": result.clips_per_s,
            "train_s": result.train_s,
        }
        print(json.dumps({name: rows[name]}))

    print()
    print(f"dataset {dataset}; held out: accents {sorted(held_accents)}, families {sorted(held_families)}")
    if flite is not None:
        print(f"other synthesizer: {flite} ({args.other_synth_speakers} flite speakers)")
    batch = load_config(args.exact).trainer.batch_size
    print(f"seed {args.seed}, {args.steps} steps of batch {batch}, device {device}")
    print_table(rows, tests)
    if args.json:
        args.json.write_text(json.dumps({**setting, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
