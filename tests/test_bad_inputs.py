"""Bad input to any command is one clear line (issue 10): the real CLI, in a subprocess, for every mistake a
user makes often. Each case checks the exit code (1: bad input, 2: usage), exactly one `error:` line on
stderr naming the problem, no traceback, and that nothing was written or changed that should not be.

The cases are a table. To stay fast on 2 cores, the selected cases are prepared one after the other and then
run two at a time by one module fixture; each test only judges its own case's outcome.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.helpers import SMOKE
from tests.helpers import kws as run_kws
from tests.helpers.speech_commands import write_wav
from tests.helpers.tiny_dataset import make_tiny_dataset

TRAIN_STEPS = 2  # the shared run: long enough to write last.pt and best.pt
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


# ---------------------------------------------------------------- shared inputs (built on first use)


class Shared:
    """What several cases start from: a tiny dataset, a short training run and its evaluation, each made
    on first use with the CLI itself (a failure is kept, so that the cases needing it fail quickly)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._built: dict[str, Path | Exception] = {}

    def _once(self, name: str, build: Callable[[], Path]) -> Path:
        if name not in self._built:
            try:
                self._built[name] = build()
            except Exception as exc:  # kept and raised again for every case that needs it
                self._built[name] = exc
        built = self._built[name]
        if isinstance(built, Exception):
            raise RuntimeError(f"building the shared {name} failed: {built}")
        return built

    @cached_property
    def manifests(self) -> dict[str, Path]:
        return make_tiny_dataset(self.root / "tiny", n_train=4, n_val=2)

    @property
    def run_dir(self) -> Path:
        """A finished run trained with `same_run_args()`: a copy of it holds the config those options make."""

        def build() -> Path:
            proc = kws(self.same_run_args(), self.root)
            assert proc.returncode == 0 and (self.root / "run" / "best.pt").is_file(), proc.stderr[-2000:]
            return self.root / "run"

        return self._once("run", build)

    @property
    def eval_dir(self) -> Path:
        def build() -> Path:
            out = self.root / "eval"
            args = ["evaluate", self.run_dir / "best.pt", self.manifests["validation"], "--out", out]
            proc = kws([*args, "--device", "cpu"], self.root)
            assert proc.returncode == 0 and (out / "report.json").is_file(), proc.stderr[-2000:]
            return out

        return self._once("evaluation", build)

    def train_args(self, *more: str | Path, manifest: Path | None = None) -> list[str | Path]:
        """`kws train` on the smoke config into `run` (relative to the case folder)."""
        return [
            "train",
            "--config",
            SMOKE,
            "--train-manifest",
            manifest or self.manifests["train"],
            "--run-dir",
            "run",
            *more,
        ]

    def same_run_args(self, *more: str | Path) -> list[str | Path]:
        """The options the shared run was trained with (a copy of it holds the same config)."""
        return self.train_args(
            "--val-manifest", self.manifests["validation"], "--max-steps", str(TRAIN_STEPS), *more
        )

    def copy_run(self, here: Path) -> Path:
        return Path(shutil.copytree(self.run_dir, here / "run"))


# ---------------------------------------------------------------- the table


Fragment = str | re.Pattern[str]


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Shared, Path], Sequence[str | Path]]  # writes inputs into the case folder; the args
    exit_code: int
    fragments: tuple[Fragment, ...]  # each must be in the error line
    unchanged: tuple[str, ...] = (".",)  # paths (relative to the case folder) that must not change at all
    no_files: tuple[str, ...] = ()  # folders that must hold no file afterwards (absent or empty)
    forbidden: tuple[str, ...] = ()  # text that must not appear anywhere in stdout/stderr
    again: re.Pattern[str] | None = None  # run a second time; its output must match this
    skip: str | None = None


def usage(args: str, *fragments: Fragment) -> Case:
    return Case(f"usage: kws {args}", lambda s, h: args.split(), 2, fragments)


def config_case(
    name: str, fragments: tuple[Fragment, ...], *more: str, yaml_edit: dict | None = None
) -> Case:
    """`kws train` with a bad option or config: refused before anything is decoded or written."""

    def setup(s: Shared, here: Path) -> list[str | Path]:
        args = s.train_args(*more)
        if yaml_edit is not None:
            cfg = yaml.safe_load(SMOKE.read_text())
            for section, values in yaml_edit.items():
                cfg[section].update(values)
            (here / "bad.yaml").write_text(yaml.safe_dump(cfg))
            args[args.index(SMOKE)] = "bad.yaml"
        return args

    return Case(f"config: {name}", setup, 1, fragments)


def data_case(
    name: str, write: Callable[[Shared, Path], Path], fragments: tuple[Fragment, ...], **kw: object
) -> Case:
    """`kws train` on a manifest that `write(shared, data_dir)` makes: the data must stay as it was, and
    no checkpoint or decoded cache may be left behind."""

    def setup(s: Shared, here: Path) -> list[str | Path]:
        (here / "data").mkdir()
        return s.train_args(manifest=write(s, here / "data"))

    return Case(
        f"data: {name}",
        setup,
        1,
        fragments,
        unchanged=("data",),
        no_files=("run/cache", "run/last.pt", "run/best.pt"),
        **kw,  # type: ignore[arg-type]
    )


def good_lines(s: Shared, n: int = 8) -> list[str]:
    """The first `n` lines of the tiny train manifest (valid clips of several classes)."""
    return s.manifests["train"].read_text().splitlines()[:n]


def with_clip(name: str, samples: np.ndarray, rate: int = 16_000) -> Callable[[Shared, Path], Path]:
    """A manifest of good clips plus one clip `name` holding `samples`."""

    def write(s: Shared, data: Path) -> Path:
        clip = write_wav(data / name, samples, rate)
        return manifest_with(data, good_lines(s), [clip])

    return write


def manifest_with(data: Path, lines: list[str], clips: list[Path], label: str = "up") -> Path:
    extra = [f'{{"audio_filepath": "{c.resolve()}", "duration": 0.5, "command": "{label}"}}' for c in clips]
    path = data / "train.json"
    path.write_text("".join(f"{line}\n" for line in [*lines, *extra]))
    return path


def malformed_json(s: Shared, data: Path) -> Path:
    lines = (
        good_lines(s, 2) + ['{"audio_filepath": "x.wav", "duration": 1.0, "command": '] + good_lines(s)[2:]
    )
    (data / "malformed.json").write_text("".join(f"{line}\n" for line in lines))
    return data / "malformed.json"


def without_label(s: Shared, data: Path) -> Path:
    clip = s.manifests["train"].parent / "up" / "train_0.wav"
    lines = [*good_lines(s, 3), f'{{"audio_filepath": "{clip.resolve()}", "duration": 0.5}}']
    (data / "nolabel.json").write_text("".join(f"{line}\n" for line in lines))
    return data / "nolabel.json"


def missing_wav(s: Shared, data: Path) -> Path:
    return manifest_with(data, good_lines(s), [data / "missing.wav"])


def corrupt_wav(s: Shared, data: Path) -> Path:
    (data / "corrupt.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    return manifest_with(data, good_lines(s), [data / "corrupt.wav"])


def empty_manifest(s: Shared, data: Path) -> Path:
    (data / "empty.json").write_text("")
    return data / "empty.json"


def zero_sample_wavs(s: Shared, data: Path) -> Path:
    clips = [write_wav(data / f"silent_{k}.wav", np.zeros(0, np.int16)) for k in range(3)]
    return manifest_with(data, good_lines(s), clips)


def one_class(s: Shared, data: Path) -> Path:
    lines = [line for line in s.manifests["train"].read_text().splitlines() if '"command": "up"' in line]
    assert len(lines) > 1
    (data / "single.json").write_text("".join(f"{line}\n" for line in lines))
    return data / "single.json"


def run_case(
    name: str, setup: Callable[[Shared, Path], Sequence[str | Path]], *frags: Fragment, **kw: object
) -> Case:
    return Case(f"run dir: {name}", setup, 1, frags, **kw)  # type: ignore[arg-type]


def last_pt_without_resume(s: Shared, here: Path) -> list[str | Path]:
    s.copy_run(here)
    return s.same_run_args()


def resume_without_last_pt(s: Shared, here: Path) -> list[str | Path]:
    (here / "run").mkdir()
    return s.train_args("--resume")


def resume_corrupt_last_pt(s: Shared, here: Path) -> list[str | Path]:
    last = s.copy_run(here) / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated, as by a full disk
    # Another step count: a resume that wrote its config before failing would change config.yaml.
    return [*s.train_args("--val-manifest", s.manifests["validation"], "--max-steps", "5"), "--resume"]


def read_only_run_dir(s: Shared, here: Path) -> list[str | Path]:
    (here / "run").mkdir(mode=0o555)
    return s.train_args()


def damaged_checkpoint(s: Shared, here: Path) -> list[str | Path]:
    (here / "ckpt").mkdir()
    (here / "ckpt" / "damaged.pt").write_bytes((s.run_dir / "last.pt").read_bytes()[:1000])
    return ["evaluate", "ckpt/damaged.pt", s.manifests["validation"]]


def directory_checkpoint(s: Shared, here: Path) -> list[str | Path]:
    (here / "ckpt_dir").mkdir()
    return ["evaluate", "ckpt_dir", s.manifests["validation"]]


def report_file_to_listen(s: Shared, here: Path) -> list[str | Path]:
    shutil.copytree(s.eval_dir, here / "eval")
    return ["listen-errors", "eval/report.json"]


def directory_manifest(s: Shared, here: Path) -> list[str | Path]:
    (here / "manifests").mkdir()
    return ["evaluate", s.run_dir / "last.pt", "manifests"]


def binary_manifest(s: Shared, data: Path) -> Path:
    return write_wav(data / "clip.wav", np.zeros(1600, np.int16) + 100)  # a wav where a manifest belongs


def config_file(name: str, content: bytes) -> Callable[[Shared, Path], list[str | Path]]:
    """`kws train --config <name>` with `content` as the file."""

    def setup(s: Shared, here: Path) -> list[str | Path]:
        (here / name).write_bytes(content)
        args = s.train_args()
        args[args.index(SMOKE)] = name
        return args

    return setup


def cuda_without_gpu(s: Shared, here: Path) -> list[str | Path]:
    return s.train_args("--device", "cuda")


def not_a_tar(s: Shared, here: Path) -> list[str | Path]:
    (here / "notatar.tar.gz").write_bytes(np.random.default_rng(1).bytes(3000))
    return ["prepare", "--archive", "notatar.tar.gz", "--no-verify", "--data-root", "data"]


def wrong_layout(s: Shared, here: Path) -> list[str | Path]:
    src = here / "src"
    (src / "stuff").mkdir(parents=True)
    (src / "readme.txt").write_text("not Speech Commands\n")
    (src / "stuff" / "a.txt").write_text("a\n")
    with tarfile.open(here / "layout.tar.gz", "w:gz") as tar:
        tar.add(src, arcname=".")
    shutil.rmtree(src)
    return ["prepare", "--archive", "layout.tar.gz", "--no-verify", "--data-root", "data"]


def tts_words(words: str) -> Callable[[Shared, Path], list[str | Path]]:
    return lambda s, h: [
        "prepare",
        "--dataset",
        "tts",
        "--words",
        words,
        "--speakers",
        "1",
        "--data-root",
        "data",
    ]


NO_ESPEAK = None if shutil.which("espeak-ng") else "tts needs espeak-ng"
LONG_PHRASE = "this is a very long phrase that nobody would say as a keyword"
assert len(LONG_PHRASE) > 50


CASES: list[Case] = [
    # Usage errors: click's, exit 2.
    usage("trian", "trian"),
    usage("train --epochs three", "--epochs"),
    usage("evaluate", re.compile("(?i)checkpoint")),
    usage("prepare --bogus", "--bogus"),
    # Config: refused before anything is decoded (no cache/) or written (no config.yaml): no run dir at all.
    config_case("optim.lr=-1", ("optim.lr",), "--set", "optim.lr=-1"),
    config_case("optim.weight_decay=-1", ("optim.weight_decay",), "--set", "optim.weight_decay=-1"),
    config_case("--batch-size 0", (re.compile(r"--batch-size|batch_size"),), "--batch-size", "0"),
    config_case("--batch-size -4", (re.compile(r"--batch-size|batch_size"),), "--batch-size", "-4"),
    config_case("--epochs 0", (re.compile(r"--epochs|trainer\.epochs"),), "--epochs", "0"),
    config_case("--max-steps 0", (re.compile(r"--max-steps|max_steps"),), "--max-steps", "0"),
    config_case("yaml unknown key", ("trainer.epohcs", "bad.yaml"), yaml_edit={"trainer": {"epohcs": 3}}),
    config_case("yaml wrong type", ("trainer.epochs", "bad.yaml"), yaml_edit={"trainer": {"epochs": "ten"}}),
    config_case("--set unknown section", ("optimizer",), "--set", "optimizer.lr=0.1"),
    config_case(
        "--set YAML syntax", ("optim.betas", re.compile(r"line 1, column \d+")), "--set", "optim.betas=[0.9"
    ),
    Case(
        "config: YAML syntax error",
        config_file("broken.yaml", b"optim:\n  betas: [0.9, 0.5\ntrainer: {epochs: 2}\n"),
        1,
        ("broken.yaml", re.compile(r"line \d+, column \d+")),
    ),
    Case(
        "config: a binary file", config_file("model.pt", bytes(range(128, 256)) * 8), 1, ("model.pt", "UTF-8")
    ),
    # Run dir.
    run_case("last.pt without --resume", last_pt_without_resume, "--resume"),
    run_case("--resume without last.pt", resume_without_last_pt, "last.pt"),
    run_case("--resume on a corrupt last.pt", resume_corrupt_last_pt, "last.pt"),
    run_case(
        "read-only run dir",
        read_only_run_dir,
        "run",
        re.compile(r"(?i)permission|read-only|not writable"),
        skip="root ignores permissions: a read-only run dir cannot fail" if IS_ROOT else None,
    ),
    # Data.
    data_case(
        "malformed JSON line", malformed_json, ("malformed.json", re.compile(r"malformed\.json:3\b|line 3\b"))
    ),
    data_case("line without command/label", without_label, ("nolabel.json", "command", "label")),
    data_case("missing wav", missing_wav, ("missing.wav",)),
    data_case("corrupt wav", corrupt_wav, ("corrupt.wav",)),
    data_case(
        "8 kHz wav", with_clip("rate8k.wav", np.zeros(8000, np.int16) + 100, 8000), ("rate8k.wav", "8000")
    ),
    data_case(
        "stereo wav",
        with_clip("stereo.wav", np.zeros((16000, 2), np.int16) + 100),
        ("stereo.wav", re.compile(r"mono|channels")),
    ),
    data_case("empty manifest", empty_manifest, ("empty.json",)),
    data_case("a wav as the manifest", binary_manifest, ("clip.wav", "UTF-8")),
    data_case(
        "0-sample wavs",
        zero_sample_wavs,
        (re.compile(r"(?<![\w/.-])3(?![\w/.-])"), re.compile(r"silent_[012]\.wav")),  # the count, an example
    ),
    data_case("one class", one_class, ("single.json", re.compile(r"(?i)\bclass"))),
    # Checkpoints.
    Case("checkpoint: truncated", damaged_checkpoint, 1, ("damaged.pt",), forbidden=("weights_only",)),
    Case("checkpoint: a directory", directory_checkpoint, 1, ("ckpt_dir", "is a directory")),
    Case("evaluate: a directory as the manifest", directory_manifest, 1, ("manifests", "is a directory")),
    Case(
        "checkpoint: report.json to listen-errors",
        report_file_to_listen,
        1,
        ("report.json", re.compile(r"(?i)\bpass\b[^;]*\b(folder|directory)")),
        forbidden=("does not exist",),  # the file is there: the fix is to name its folder
    ),
    # Device.
    Case(
        "device: --device cuda without CUDA",
        cuda_without_gpu,
        1,
        ("CUDA",),
        skip="CUDA is available here" if _cuda_available() else None,
    ),
    # Prepare.
    Case(
        "prepare: not a tar.gz",
        not_a_tar,
        1,
        ("notatar.tar.gz",),
        unchanged=("notatar.tar.gz",),
        no_files=("data",),
    ),
    Case(
        "prepare: archive with the wrong layout",
        wrong_layout,
        1,
        (re.compile(r"validation_list|testing_list|layout|Speech Commands"),),
        unchanged=("layout.tar.gz",),
        forbidden=("already extracted",),
        # A second run must not take the wrong folder as extracted: incomplete, or extracted anew.
        again=re.compile(r"(?i)incomplete|extracting layout\.tar\.gz"),
    ),
    Case("prepare: tts --words 'yes,,no'", tts_words("yes,,no"), 1, ("--words",), skip=NO_ESPEAK),
    Case("prepare: tts --words 60-char phrase", tts_words(LONG_PHRASE), 1, ("--words",), skip=NO_ESPEAK),
]


# ---------------------------------------------------------------- running the cases


def snapshot(path: Path) -> dict[str, str]:
    """{relative path: sha256 and mtime} of the files under `path` (or of `path` itself); folders too."""
    if not path.exists():
        return {}
    paths = [path] if path.is_file() else sorted(path.rglob("*"))
    out = {}
    for p in paths:
        rel = p.relative_to(path).as_posix() if p != path else "."
        if p.is_dir():
            out[rel] = "folder"
        else:
            out[rel] = f"{hashlib.sha256(p.read_bytes()).hexdigest()} {p.stat().st_mtime_ns}"
    return out


def files_under(path: Path) -> list[str]:
    if path.is_file():
        return [path.name]
    return (
        sorted(str(p.relative_to(path)) for p in path.rglob("*") if not p.is_dir()) if path.exists() else []
    )


def kws(args: Sequence[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_kws(*args, cwd=cwd, timeout=180, columns=200)  # 200 columns: one error line stays one line


@dataclass
class Outcome:
    here: Path
    runs: list[subprocess.CompletedProcess[str]] = field(default_factory=list)
    before: dict[str, dict[str, str]] = field(default_factory=dict)
    after: dict[str, dict[str, str]] = field(default_factory=dict)
    setup_error: str | None = None  # the case could not be prepared (a shared input failed to build)


def case_ids(items: Sequence[pytest.Item]) -> set[str]:
    """The ids of the cases this session will run (all, or those `-k` kept)."""
    return {
        item.callspec.params["case"].id
        for item in items
        if getattr(item, "originalname", None) == "test_bad_input" and hasattr(item, "callspec")
    }


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Outcome]]:
    wanted = case_ids(request.session.items)
    cases = [c for c in CASES if c.id in wanted and c.skip is None]
    shared = Shared(tmp_path_factory.mktemp("shared"))
    prepared: list[tuple[Case, Sequence[str | Path], Outcome]] = []
    failed: dict[str, Outcome] = {}
    for i, case in enumerate(cases):  # setup in this process, one after the other (shared inputs are lazy)
        here = tmp_path_factory.mktemp(f"case{i}")
        try:
            args = case.setup(shared, here)
        except Exception as exc:  # only this case fails; the others still run
            failed[case.id] = Outcome(here, setup_error=f"{type(exc).__name__}: {exc}")
            continue
        outcome = Outcome(here, before={p: snapshot(here / p) for p in case.unchanged})
        prepared.append((case, args, outcome))

    def run(job: tuple[Case, Sequence[str | Path], Outcome]) -> None:
        case, args, outcome = job
        outcome.runs.append(kws(args, outcome.here))
        if case.again is not None:
            outcome.runs.append(kws(args, outcome.here))
        outcome.after = {p: snapshot(outcome.here / p) for p in case.unchanged}

    with ThreadPoolExecutor(max_workers=2) as pool:  # most of a run is importing torch: two at a time
        list(pool.map(run, prepared))
    yield {**failed, **{case.id: outcome for case, _, outcome in prepared}}
    for _, _, outcome in prepared:  # let pytest clean up a read-only run dir
        for p in outcome.here.rglob("*"):
            if p.is_dir():
                p.chmod(0o755)


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in ANSI.sub("", proc.stderr).splitlines() if line.startswith("error:")]


def problems_of(case: Case, proc: subprocess.CompletedProcess[str]) -> list[str]:
    """What is wrong with one run of a case (empty: it behaved)."""
    found = []
    output = proc.stdout + proc.stderr
    if proc.returncode != case.exit_code:
        found.append(f"exit code {proc.returncode}, expected {case.exit_code}")
    if "Traceback" in output:
        last = [line for line in output[output.index("Traceback") :].splitlines() if line.strip()][-1]
        found.append(f"a traceback, ending in: {last}")
    lines = error_lines(proc)
    if len(lines) != 1:
        tail = [line for line in ANSI.sub("", proc.stderr).splitlines() if line.strip()][-3:]
        found.append(f"{len(lines)} `error:` lines on stderr, expected 1: {lines}; stderr ends: {tail}")
    for line in lines[:1]:
        for frag in case.fragments:
            hit = frag.search(line) if isinstance(frag, re.Pattern) else frag in line
            if not hit:
                found.append(f"the error line lacks {getattr(frag, 'pattern', frag)!r}: {line}")
    found += [f"the output says {text!r}" for text in case.forbidden if text in output]
    return found


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=c.id, marks=pytest.mark.skipif(c.skip is not None, reason=c.skip or ""))
        for c in CASES
    ],
)
def test_bad_input(case: Case, outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes[case.id]
    if outcome.setup_error is not None:
        pytest.fail(f"could not prepare the case: {outcome.setup_error}")
    problems = problems_of(case, outcome.runs[0])
    if case.again is not None:
        second = outcome.runs[1]
        problems += [f"second run: {p}" for p in problems_of(case, second)]
        if not case.again.search(ANSI.sub("", second.stdout + second.stderr)):
            problems.append(f"second run: the output does not match {case.again.pattern!r}")
    for path in case.unchanged:
        if outcome.before[path] != outcome.after[path]:
            before, after = outcome.before[path], outcome.after[path]
            changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
            problems.append(f"{path} changed: {changed}")
    for path in case.no_files:
        if left := files_under(outcome.here / path):
            problems.append(f"{path} holds files afterwards: {left[:5]}")
    assert not problems, "\n".join(problems)
