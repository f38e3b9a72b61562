"""`kws export` end to end: ONNX, int8 and TorchScript files that score what the checkpoint scores, the
parity gate that refuses a file that does not, and `kws evaluate` / `kws detect` on the exported file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from kws.audio import read_wav, write_wav
from kws.checkpoint import load_for_inference
from kws.config import load_config
from kws.detect.detector import DetectSettings, detect_audio
from kws.detect.live import LiveDetector, run_live
from kws.errors import KWSError
from kws.export import exporter
from kws.export.graph import DeployedModel
from kws.export.parity import manifest_windows, reference_probs
from kws.exported import ExportMetadata, fit_window, load_onnx
from kws.files import file_sha256
from kws.manifest import Entry, read_manifest, write_manifest
from kws.stream_manifest import Event, Stream, write_stream_manifest
from tests.export.test_graph import speechlike
from tests.helpers import CONFIGS, REPO, kws
from tests.helpers.checkpoints import random_checkpoint
from tests.helpers.tone_streams import tone_stream, train_tone_detector

EVENTS = [("up", 2.0), ("down", 6.3), ("unknown", 10.0), ("up", 14.7), ("down", 19.2)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    checkpoint = train_tone_detector(root)
    tone_stream(root / "stream.wav", seed=3, duration_s=24.0, events=EVENTS)
    return checkpoint


def fresh(trained: Path, tmp_path: Path) -> Path:
    """A copy of the run's checkpoint in its own folder (exports land beside it)."""
    (tmp_path / "run").mkdir()
    return Path(shutil.copy(trained, tmp_path / "run" / "best.pt"))


def validation(trained: Path) -> Path:
    return trained.parent.parent / "data" / "validation_manifest.json"


def test_onnx_export_scores_what_the_checkpoint_scores(trained: Path, tmp_path: Path) -> None:
    checkpoint = fresh(trained, tmp_path)
    proc = kws("export", checkpoint)
    assert proc.returncode == 0, proc.stderr
    out = checkpoint.with_name("best.onnx")
    assert f"wrote {out} (onnx fp32" in proc.stdout
    assert f"parity on {validation(trained)}" in proc.stdout  # the checkpoint's own validation manifest
    assert "top-1 agreement 100.00%" in proc.stdout
    assert sorted(p.name for p in out.parent.iterdir()) == ["best.onnx", "best.pt"]  # no temporary left

    loaded = load_for_inference(checkpoint, torch.device("cpu"))
    model = load_onnx(out)
    meta = model.metadata
    assert list(meta.labels) == loaded.labels and meta.precision == "fp32"
    assert (meta.sample_rate, meta.window_samples, meta.feature_hop_samples) == (16000, 16000, 160)
    assert meta.step == loaded.step and meta.source_checkpoint == "best.pt"  # no path: the file ships
    assert meta.source_sha256 == file_sha256(checkpoint)
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)  # what converters and tools read
    assert meta.thresholds == {} and meta.hop_s == 0.2
    # onnxruntime alone, as an app would: input "audio", output "probs", the labels in the metadata
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["audio"] and session.get_outputs()[0].name == "probs"
    assert json.loads(session.get_modelmeta().custom_metadata_map["labels"]) == loaded.labels
    check = manifest_windows(validation(trained), loaded.labels, 16000)
    probs = session.run(None, {"audio": check.windows})[0]
    assert np.abs(probs - reference_probs(loaded, check.windows)).max() < 1e-4
    assert (probs.argmax(1) == check.label_ids).mean() > 0.9  # the detector works, in the file too


def test_int8_export_is_gated_on_accuracy_and_smaller(trained: Path, tmp_path: Path) -> None:
    checkpoint = fresh(trained, tmp_path)
    proc = kws("export", checkpoint, "--quantize", "int8", "--check", validation(trained))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    fp32 = next(line for line in lines if "fp32:" in line)
    int8 = next(line for line in lines if "int8:" in line)
    assert "accuracy" in fp32 and "accuracy" in int8 and "(checkpoint " in int8
    out = checkpoint.with_name("best.int8.onnx")
    assert out.is_file() and not checkpoint.with_name("best.onnx").exists()  # only the file asked for
    model = load_onnx(out)
    assert model.metadata.precision == "int8"
    nodes = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "QuantizeLinear" in nodes and "DequantizeLinear" in nodes  # QDQ format
    graph = onnx.load(str(out)).graph
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    front_end = [n for n in graph.node if n.op_type in ("MatMul", "Log", "Pow")]  # mel, log, DCT, power
    assert front_end and all(made_by.get(i) != "DequantizeLinear" for n in front_end for i in n.input)
    fp32_bytes = int(proc.stdout.split("of fp32's ")[1].split(" KiB")[0].replace(",", "")) * 1024
    assert out.stat().st_size < fp32_bytes  # (the 7k-parameter smoke model: mostly graph, not weights)
    loaded = load_for_inference(checkpoint, torch.device("cpu"))
    check = manifest_windows(validation(trained), loaded.labels, 16000)
    accuracy = (model.probs(check.windows).argmax(1) == check.label_ids).mean()
    own = (reference_probs(loaded, check.windows).argmax(1) == check.label_ids).mean()
    assert accuracy >= own - 0.01


def test_a_failing_gate_exits_1_and_leaves_no_file(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = fresh(trained, tmp_path)

    class Perturbed(DeployedModel):
        def forward(self, audio: torch.Tensor) -> torch.Tensor:
            return torch.softmax(torch.log(super().forward(audio)) * 0.5, dim=-1)  # flatter probabilities

    monkeypatch.setattr(exporter, "DeployedModel", Perturbed)
    for fmt in ("onnx", "torchscript"):
        with pytest.raises(KWSError, match="failed the parity gate") as info:
            exporter.export_model(checkpoint, fmt=fmt)
        assert "largest probability difference" in str(info.value) and "nothing was written" in str(
            info.value
        )
        assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["best.pt"]


LAUNCHER = """import sys, torch
from kws.cli import main
from kws.export import exporter, onnx_file

if sys.argv[1] == "flatter":  # the float export's probabilities flattened: fails the fp32 gate
    class Flatter(exporter.DeployedModel):
        def forward(self, audio):
            return torch.softmax(torch.log(super().forward(audio)) * 0.5, dim=-1)
    exporter.DeployedModel = Flatter
else:  # int8 ranges calibrated on audio 300 times too loud: fails the accuracy gate
    real = onnx_file.write_int8
    onnx_file.write_int8 = lambda fp32, windows, meta, path: real(fp32, windows * 300, meta, path)
sys.argv = ["kws", *sys.argv[2:]]
main()
"""


def test_the_command_line_exits_1_on_a_failed_gate_and_writes_nothing(trained: Path, tmp_path: Path) -> None:
    checkpoint = fresh(trained, tmp_path)
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    cases = [
        (["flatter", "export", checkpoint], "fp32", "largest probability difference"),
        (
            ["int8", "export", checkpoint, "--quantize", "int8", "--check", validation(trained)],
            "int8",
            "points below",
        ),
    ]
    for args, precision, why in cases:
        proc = subprocess.run(
            [sys.executable, launcher, *map(str, args)], env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, lines  # one line, no traceback
        assert lines[-1].startswith(f"error: the exported {precision} model failed the parity gate on")
        assert why in lines[-1] and lines[-1].endswith(
            f"nothing was written to {checkpoint.with_suffix('')}"
            f"{'.int8' if precision == 'int8' else ''}.onnx"
        )
        assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["best.pt"]


def test_thresholds_travel_in_the_file_and_detect_uses_them(trained: Path, tmp_path: Path) -> None:
    checkpoint = fresh(trained, tmp_path)
    thresholds = {"thresholds": {"up": 0.6, "down": 0.7}, "hop_s": 0.1, "smooth_s": 0.2, "refractory_s": 0.8}
    checkpoint.with_name("thresholds.json").write_text(json.dumps({"target_fa_per_hour": 0.5, **thresholds}))
    proc = kws("export", checkpoint)  # the thresholds.json beside the checkpoint
    assert proc.returncode == 0, proc.stderr
    assert "thresholds: 2 keywords from" in proc.stdout
    meta = load_onnx(checkpoint.with_name("best.onnx")).metadata
    assert meta.thresholds == {"up": 0.6, "down": 0.7} and meta.target_fa_per_hour == 0.5
    assert (meta.hop_s, meta.smooth_s, meta.refractory_s) == (0.1, 0.2, 0.8)

    stream = trained.parent.parent / "stream.wav"
    onnx = kws("detect", checkpoint.with_name("best.onnx"), stream, "--out", tmp_path / "onnx.jsonl")
    assert onnx.returncode == 0, onnx.stderr
    assert "thresholds (embedded in" in onnx.stderr and "up 0.6" in onnx.stderr
    own = kws("detect", checkpoint, stream, "--thresholds", checkpoint.with_name("thresholds.json"), "--out",
              tmp_path / "own.jsonl")  # fmt: skip
    assert own.returncode == 0, own.stderr

    def found(path: Path) -> list[tuple[str, float]]:
        return [(d["label"], d["time_s"]) for d in map(json.loads, path.read_text().splitlines())]

    assert found(tmp_path / "onnx.jsonl") == found(tmp_path / "own.jsonl")
    assert [label for label, _ in found(tmp_path / "onnx.jsonl")] == ["up", "down", "up", "down"]


def test_evaluate_runs_the_exported_file(trained: Path, tmp_path: Path) -> None:
    checkpoint = fresh(trained, tmp_path)
    assert kws("export", checkpoint).returncode == 0
    reports = {}
    for name, model in (("onnx", checkpoint.with_name("best.onnx")), ("pt", checkpoint)):
        proc = kws("evaluate", model, validation(trained), "--out", tmp_path / name)
        assert proc.returncode == 0, proc.stderr
        reports[name] = json.loads((tmp_path / name / "report.json").read_text())
    assert reports["onnx"]["checkpoint"] == str(checkpoint.with_name("best.onnx").resolve())
    assert reports["onnx"]["accuracy"] == reports["pt"]["accuracy"] > 0.9
    predictions = [(tmp_path / n / "predictions.csv").read_text().splitlines() for n in ("onnx", "pt")]
    assert [row.split(",")[:3] for row in predictions[0]] == [row.split(",")[:3] for row in predictions[1]]


LIVE_WITHOUT_TORCH = """
import sys
sys.modules["torch"] = sys.modules["torchaudio"] = None
from pathlib import Path
from kws.audio import read_wav
from kws.detect.detector import DetectSettings
from kws.detect.live import LiveDetector, run_live
from kws.evaluate.scoring import load_model
live = LiveDetector(load_model(Path(sys.argv[1])), DetectSettings())
audio = read_wav(Path(sys.argv[2]))
run_live(live, (audio[i : i + 4000] for i in range(0, len(audio), 4000)), lambda d: print(d.label))
"""


def test_the_exported_file_runs_where_torch_cannot_be_imported(trained: Path, tmp_path: Path) -> None:
    checkpoint = fresh(trained, tmp_path)
    assert kws("export", checkpoint).returncode == 0
    model, no_torch = checkpoint.with_name("best.onnx"), ("torch", "torchaudio")
    stream = trained.parent.parent / "stream.wav"
    streams = tmp_path / "streams.json"
    events = tuple(Event(label, at, at + 0.4) for label, at in EVENTS if label != "unknown")
    write_stream_manifest(streams, [Stream(str(stream), 24.0, events)])
    reports = {}
    for name, manifest in (("clips", validation(trained)), ("streams", streams)):
        proc = kws("evaluate", model, manifest, "--out", tmp_path / name, without=no_torch)
        assert proc.returncode == 0, proc.stderr
        reports[name] = json.loads((tmp_path / name / "report.json").read_text())
    assert reports["clips"]["accuracy"] > 0.9 and reports["clips"]["num_samples"] == 24
    assert reports["streams"]["overall"]["recall"] == 1.0
    assert (tmp_path / "streams" / "thresholds.json").is_file()
    review = kws("listen-errors", tmp_path / "streams", without=no_torch)
    assert review.returncode == 0 and "errors.html" in review.stdout, review.stderr
    detected = kws("detect", model, stream, without=no_torch)
    assert detected.returncode == 0, detected.stderr
    words = detected.stdout.split()
    assert [word for word in words if word in ("up", "down")] == ["up", "down", "up", "down"]
    live = subprocess.run([sys.executable, "-c", LIVE_WITHOUT_TORCH, model, stream], capture_output=True,
                          text=True, cwd=REPO)  # fmt: skip
    assert live.returncode == 0, live.stderr
    assert live.stdout.split() == ["up", "down", "up", "down"]
    on_gpu = kws("detect", model, stream, "--device", "cuda", without=no_torch)
    assert on_gpu.returncode == 1
    assert on_gpu.stderr.strip().splitlines() == [
        "error: --device cuda: an exported .onnx runs on the CPU with onnxruntime; drop --device, or pass "
        "the checkpoint it came from to run on a GPU"
    ]


def test_torchscript_export_carries_its_metadata(trained: Path, tmp_path: Path) -> None:
    checkpoint = fresh(trained, tmp_path)
    proc = kws("export", checkpoint, "--format", "torchscript")
    assert proc.returncode == 0, proc.stderr
    out = checkpoint.with_name("best.torchscript.pt")
    extra = {"kws.json": ""}
    module = torch.jit.load(str(out), _extra_files=extra)
    meta = ExportMetadata.from_props(json.loads(extra["kws.json"]), out)
    loaded = load_for_inference(checkpoint, torch.device("cpu"))
    assert list(meta.labels) == loaded.labels
    entries = read_manifest(validation(trained))[:8]
    audio = torch.tensor(np.stack([fit_window(read_wav(Path(e.audio_filepath)), 16000) for e in entries]))
    with torch.inference_mode():
        assert (module(audio) - torch.tensor(reference_probs(loaded, audio.numpy()))).abs().max() < 1e-4
    proc = kws("evaluate", out, validation(trained))  # for libtorch, not for kws's own commands
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        f"error: {out} is a TorchScript export, for libtorch; kws evaluate and detect take a checkpoint or "
        "an exported .onnx"
    ]


def test_bad_export_requests_are_one_line_errors(trained: Path, tmp_path: Path) -> None:
    checkpoint = fresh(trained, tmp_path)
    cases = [
        (["--format", "tflite"], "error: --format 'tflite' is not one of onnx, torchscript"),
        (["--quantize", "int4"], "error: --quantize 'int4' is not one of int8"),
        (["--format", "torchscript", "--quantize", "int8"], "error: --quantize int8 makes an ONNX model"),
        (["--out", tmp_path], f"error: --out {tmp_path} is a directory"),
        (
            ["--out", tmp_path / "m.pt"],
            f"error: --out {tmp_path / 'm.pt'}: an ONNX model's file name ends in .onnx",
        ),
        (
            ["--out", checkpoint, "--format", "torchscript"],
            f"error: --out {checkpoint} is the checkpoint itself",
        ),
        (["--max-accuracy-drop", "-1"], "error: --max-accuracy-drop is a number of points >= 0"),
        (
            ["--check", tmp_path / "missing.json"],
            f"error: manifest {tmp_path / 'missing.json'} does not exist",
        ),
    ]
    for args, message in cases:
        proc = kws("export", checkpoint, *args)
        assert proc.returncode == 1, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith(message), proc.stderr
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["best.pt"]


def test_int8_without_labelled_clips_or_calibration_is_refused(trained: Path, tmp_path: Path) -> None:
    checkpoint = fresh(trained, tmp_path)
    state = torch.load(checkpoint, weights_only=False)
    state["config"]["data"].update(train_manifest=str(tmp_path / "gone.json"), val_manifests=[])
    torch.save(state, checkpoint)
    proc = kws("export", checkpoint, "--quantize", "int8")
    assert proc.returncode == 1
    assert (
        "needs clips labelled with the model's classes, not generated audio; pass such a manifest"
        in proc.stderr
    )
    proc = kws("export", checkpoint, "--quantize", "int8", "--check", validation(trained))
    assert proc.returncode == 1
    assert "gone.json is not here; pass one with --calibration MANIFEST" in proc.stderr
    proc = kws("export", checkpoint)  # fp32 without a manifest: the gate runs on generated audio
    assert proc.returncode == 0, proc.stderr
    assert "parity on generated audio (256 clips)" in proc.stdout
    assert "note: no detection thresholds embedded (none found)" in proc.stdout


def test_running_onnx_without_the_extra_says_how_to_install_it(trained: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not used")
    for args in (["evaluate", model, validation(trained)], ["export", trained, "--out", tmp_path / "x.onnx"]):
        proc = kws(*args, without=("onnxruntime", "onnx", "onnxscript"))
        assert proc.returncode == 1, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert "install it with `pip install 'kws[export]'`" in proc.stderr


def test_a_damaged_or_foreign_onnx_file_is_a_one_line_error(trained: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(b"\x00garbage" * 10)
    proc = kws("evaluate", damaged, validation(trained))
    assert proc.returncode == 1 and "is not a model onnxruntime can run" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["audio"], ["probs"])],
        "foreign",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 4])],
    )
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(foreign))
    proc = kws("detect", foreign, trained.parent.parent / "stream.wav")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: {foreign} carries no kws metadata (labels, sample rate, window); export it with `kws export`"
    ]


def test_live_detection_runs_the_exported_file_as_offline_detection_does(
    trained: Path, tmp_path: Path
) -> None:
    checkpoint = fresh(trained, tmp_path)
    assert kws("export", checkpoint).returncode == 0
    model = load_onnx(checkpoint.with_name("best.onnx"))
    audio = read_wav(trained.parent.parent / "stream.wav")
    settings = DetectSettings()
    offline = [(round(d.time_s, 3), d.label) for d in detect_audio(model, "mic", audio, settings)]
    assert [label for _, label in offline] == ["up", "down", "up", "down"]
    live = LiveDetector(model, settings)
    heard: list[tuple[float, str]] = []
    run_live(live, (audio[i : i + 4321] for i in range(0, len(audio), 4321)),
             lambda d: heard.append((round(d.time_s, 3), d.label)))  # fmt: skip
    assert heard == offline


def test_matchboxnet_exports_and_passes_the_gate_on_generated_audio(tmp_path: Path) -> None:
    labels = [f"w{i}" for i in range(12)]
    checkpoint = random_checkpoint(
        tmp_path / "best.pt",
        load_config(CONFIGS / "matchboxnet_3x1x64_v1.yaml"),
        labels,
        step=5,
        batchnorm_stats=True,
    )
    outcome = exporter.export_model(checkpoint)  # its manifests are not on disk here: generated audio
    assert outcome.gate.passed and outcome.gate.source == "generated audio" and outcome.gate.n_windows == 256
    assert outcome.gate.max_prob_diff < 1e-5 and outcome.gate.agreement == 1.0
    onnx_model = load_onnx(outcome.path)
    assert list(onnx_model.metadata.labels) == labels and onnx_model.metadata.step == 5
    loaded = load_for_inference(checkpoint, torch.device("cpu"))
    windows = speechlike(8).numpy()
    assert np.abs(onnx_model.probs(windows) - reference_probs(loaded, windows)).max() < 1e-5


def test_thresholds_are_found_in_the_only_stream_evaluation_and_odd_clips_are_reported(
    trained: Path, tmp_path: Path
) -> None:
    checkpoint = fresh(trained, tmp_path)
    evaluation = checkpoint.parent / "eval" / "streams_manifest"
    evaluation.mkdir(parents=True)
    # chosen for another checkpoint (an earlier training of this run dir, say): embedded, with a note
    chosen_for = {"checkpoint": "last.pt", "checkpoint_sha256": "0" * 64}
    (evaluation / "thresholds.json").write_text(json.dumps({"thresholds": {"up": 0.55}, **chosen_for}))
    entries = read_manifest(validation(trained))
    odd = []
    for i, n_samples in enumerate((9600, 24000)):  # 0.6 s and 1.5 s
        clip = np.resize(read_wav(Path(entries[i].audio_filepath)), n_samples)
        path = tmp_path / f"odd_{i}.wav"
        write_wav(path, clip)
        odd.append(Entry(str(path), n_samples / 16000, entries[i].label))
    write_manifest(tmp_path / "check.json", [*odd, *entries[2:]])
    proc = kws("export", checkpoint, "--check", tmp_path / "check.json")
    assert proc.returncode == 0, proc.stderr
    assert f"thresholds: 1 keywords from {evaluation / 'thresholds.json'}" in proc.stdout
    assert (
        "were chosen for another checkpoint (last.pt); run the stream evaluation on this one" in proc.stdout
    )
    assert load_onnx(checkpoint.with_name("best.onnx")).metadata.thresholds == {"up": 0.55}
    assert "the checkpoint on the clips as they are (`kws evaluate`): accuracy" in proc.stdout
    checked = read_manifest(tmp_path / "check.json")
    n_odd = sum(len(read_wav(Path(e.audio_filepath))) != 16000 for e in checked)
    assert n_odd >= 2 and f"; {n_odd} clips are not 1 s long, fitted to the window above" in proc.stdout
