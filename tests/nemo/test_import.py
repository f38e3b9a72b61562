"""NeMo `.nemo` models in kws: built here in NeMo's format with known weights (tests/helpers/nemo_files.py),
read by every command that takes a checkpoint (evaluate, export, train --init) and by `kws import-nemo`,
scoring what an independent forward with NeMo's semantics scores; what kws cannot reproduce is one line."""

from __future__ import annotations

import copy
import json
import random
import tarfile
from pathlib import Path

import onnx
import pytest
import torch

from kws.audio import float_to_int16, write_wav
from kws.checkpoint import load_checkpoint, load_for_inference
from kws.errors import CheckpointError
from kws.exported import load_onnx
from kws.manifest import Entry, write_manifest
from kws.model import build_model
from kws.train.warm_start import load_init_weights, read_init
from tests.helpers import REPO, kws
from tests.helpers.nemo_files import (
    V1_LABELS,
    matchboxnet_config,
    mixed_config,
    randomized,
    sample_audio,
    write_nemo,
)
from tests.helpers.tiny_dataset import CLASSES, make_tiny_dataset

TOLERANCE = 1e-4  # the parity bound on probabilities
SCRAMBLED = random.Random(7).sample(V1_LABELS, len(V1_LABELS))  # NeMo's v2 labels are not sorted either


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, torch.nn.Module]]:
    """MatchboxNet-3x1x64 in a plain tar, and 3x2x64 (repeat 2, unmasked convolutions) in a tar.gz."""
    root = tmp_path_factory.mktemp("nemo")
    built = {}
    for name, repeat, mask, gz in (("3x1", 1, True, False), ("3x2", 2, False, True)):
        ref = randomized(matchboxnet_config(SCRAMBLED, repeat, mask), seed=repeat)
        built[name] = (write_nemo(root / f"matchboxnet_{name}.nemo", ref, gzip=gz), ref)
    ref = randomized(mixed_config(SCRAMBLED), seed=3)
    built["mixed"] = (write_nemo(root / "mixed.nemo", ref), ref)
    return built


def clips() -> tuple[torch.Tensor, torch.Tensor]:
    """The test audio at the precision of a wav file (what evaluate and export read back)."""
    audio, lengths = sample_audio()
    return torch.from_numpy(float_to_int16(audio.numpy())).float() / 32768.0, lengths


def reference_probs(ref: torch.nn.Module, crop_pad: bool = True) -> torch.Tensor:
    audio, lengths = clips()
    with torch.no_grad():
        return ref(audio, lengths, crop_pad=crop_pad).softmax(-1)


def kws_probs(path: Path) -> torch.Tensor:
    loaded = load_for_inference(path, torch.device("cpu"))
    audio, lengths = clips()
    with torch.no_grad():
        feats, feat_lengths = loaded.features(audio, lengths)
        return loaded.model(feats, feat_lengths).softmax(-1)


@pytest.mark.parametrize("name", ["3x1", "3x2", "mixed"])
def test_a_nemo_file_scores_what_nemo_scores(models: dict, name: str) -> None:
    path, ref = models[name]
    assert tarfile.open(path).getnames() == ["./model_config.yaml", "./model_weights.ckpt"]
    assert load_for_inference(path, torch.device("cpu")).labels == SCRAMBLED  # the model's own order
    want = reference_probs(ref)
    assert 0.25 < want.max(-1).values.min()  # confident outputs, far from uniform: the check can fail
    assert (kws_probs(path) - want).abs().max() <= TOLERANCE


def test_the_mixed_encoder_maps_kernels_strides_and_repeats(models: dict) -> None:
    blocks = load_for_inference(models["mixed"][0], torch.device("cpu")).config.model.blocks
    shape = [(b.kernel, b.stride, b.dilation, b.repeat, b.residual, b.separable) for b in blocks]
    assert shape == [
        (11, 1, 1, 1, False, True),
        (5, 1, 1, 2, True, False),  # kernel 11 x kernel_size_factor 0.5, rounded up to odd
        (9, 1, 1, 3, False, False),
        (13, 2, 1, 1, True, True),
        (23, 1, 2, 1, False, True),  # 15 x 1.5 = 22 -> 23
        (1, 1, 1, 1, False, False),
    ]


def _old_layout(config: dict) -> dict:
    """NeMo 1.0 beta's config layout: `cls:` and `params:` per section, the whole under `model:`."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and "_target_" in value:
            params = {k: v for k, v in value.items() if k != "_target_"}
            value = {"cls": value["_target_"], "params": params}
        out[key] = value
    return {"model": out}


def test_nemo_1_0_config_layout_reads_the_same(models: dict, tmp_path: Path) -> None:
    _, ref = models["3x2"]
    path = write_nemo(tmp_path / "old.nemo", ref, gzip=True, config=_old_layout(ref.cfg))
    assert (kws_probs(path) - reference_probs(ref)).abs().max() <= TOLERANCE


def test_crop_pad_is_nemo_1x_s_not_nemo_3x_s(models: dict) -> None:
    """The explicit choice (kws/nemo/settings.py): crop/pad to 128 frames as NeMo 1.x, which NeMo 3.x's
    forward skips; the two differ well beyond the parity bound."""
    path, ref = models["3x1"]
    ours = kws_probs(path)
    assert (ours - reference_probs(ref, crop_pad=True)).abs().max() <= TOLERANCE
    assert (ours - reference_probs(ref, crop_pad=False)).abs().max() > 10 * TOLERANCE


def test_import_nemo_writes_a_checkpoint_that_scores_the_same(models: dict, tmp_path: Path, run_kws) -> None:  # noqa: ANN001
    path, ref = models["3x2"]
    out = tmp_path / "imported.pt"
    proc = run_kws("import-nemo", path, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "30 labels in the model's order" in proc.stdout and "crop/pad to 128 frames" in proc.stdout
    assert (kws_probs(out) - reference_probs(ref)).abs().max() <= TOLERANCE
    state = load_checkpoint(out)
    assert state["labels"] == SCRAMBLED and state["step"] == 0
    origin = state["imported_from"]
    assert origin["format"] == "nemo" and origin["file"] == path.name and len(origin["sha256"]) == 64
    assert [b["repeat"] for b in state["config"]["model"]["blocks"]] == [1, 2, 2, 2, 1, 1]


def test_import_nemo_refuses_to_replace_the_model_or_import_a_kws_checkpoint(
    models: dict,
    tmp_path: Path,
    run_kws,  # noqa: ANN001
) -> None:
    path, _ = models["3x1"]
    nemo = tmp_path / "model.nemo"
    nemo.write_bytes(path.read_bytes())
    proc = run_kws("import-nemo", nemo, "--out", tmp_path / "copy.NEMO")
    assert proc.returncode == 1 and "would replace the NeMo model; pass a .pt path" in proc.stderr
    assert run_kws("import-nemo", nemo).returncode == 0 and (tmp_path / "model.pt").is_file()
    proc = run_kws("import-nemo", tmp_path / "model.pt")
    assert proc.returncode == 1
    assert "is a PyTorch file, not a NeMo .nemo archive; a kws checkpoint needs no import" in proc.stderr


@pytest.fixture(scope="module")
def labelled(models: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test clips as wavs, each labelled with the reference model's top class: kws must score 100%."""
    root = tmp_path_factory.mktemp("clips")
    _, ref = models["3x1"]
    audio, _ = clips()
    top = reference_probs(ref).argmax(-1)
    entries = []
    for i, clip in enumerate(audio):
        wav = root / f"clip_{i}.wav"
        write_wav(wav, float_to_int16(clip.numpy()))
        entries.append(Entry(str(wav), 1.0, SCRAMBLED[int(top[i])]))
    write_manifest(root / "manifest.json", entries)
    return root / "manifest.json"


def test_evaluate_takes_a_nemo_file(models: dict, labelled: Path, tmp_path: Path, run_kws) -> None:  # noqa: ANN001
    path, _ = models["3x1"]
    proc = run_kws("evaluate", path, labelled, "--out", tmp_path / "eval")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(next((tmp_path / "eval").rglob("report.json")).read_text())
    assert report["accuracy"] == 1.0 and report["num_samples"] == 6


def test_export_takes_a_nemo_file(models: dict, labelled: Path, tmp_path: Path) -> None:
    path, ref = models["3x1"]
    out = tmp_path / "model.onnx"
    proc = kws("export", path, "--out", out, "--check", labelled)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(next(p.value for p in onnx.load(out).metadata_props if p.key == "labels")) == SCRAMBLED
    exported = load_onnx(out)
    audio, _ = clips()
    probs = torch.from_numpy(exported.probs(audio.numpy()))
    assert (probs - reference_probs(ref)).abs().max() <= TOLERANCE


def test_detect_takes_a_nemo_file(models: dict, tmp_path: Path, run_kws) -> None:  # noqa: ANN001
    path, _ = models["3x1"]
    audio, _ = clips()
    write_wav(tmp_path / "stream.wav", float_to_int16(audio.reshape(-1).numpy()))  # 6 s
    proc = kws(
        "detect", path, tmp_path / "stream.wav", "--threshold", "0.05", "--out", tmp_path / "det.jsonl"
    )
    assert proc.returncode == 0, proc.stderr
    detections = [json.loads(line) for line in (tmp_path / "det.jsonl").read_text().splitlines()]
    assert detections and all(d["label"] in SCRAMBLED and 0 <= d["time_s"] <= 6 for d in detections)


def test_init_from_a_nemo_file(models: dict, tmp_path: Path) -> None:
    path, _ = models["3x1"]
    data = make_tiny_dataset(
        tmp_path / "data",
        n_train=8,
        n_val=2,
        classes={"yes": CLASSES["up"], "no": CLASSES["down"], "buzz": (1200.0, 1800.0)},
    )
    # the rows: yes and no from the NeMo decoder, buzz fresh
    source = read_init(path)
    labels = ["buzz", "no", "yes"]
    model = build_model(source.config.model, source.config.features.n_mfcc, len(labels))
    record = load_init_weights(model, source, labels, None)
    assert record["format"] == "nemo" and record["labels_kept"] == ["no", "yes"]
    for i, label in ((1, "no"), (2, "yes")):
        assert torch.equal(model.head.weight[i], source.weights["head.weight"][SCRAMBLED.index(label)])

    proc = kws(
        "train", "--config", REPO / "configs" / "finetune.yaml", "--init", path, "--freeze", "encoder",
        "--train-manifest", data["train"], "--run-dir", tmp_path / "ft", "--max-steps", "2",
        "--batch-size", "8", "--device", "cpu",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    after = load_checkpoint(tmp_path / "ft" / "last.pt")
    converted = load_checkpoint(path)
    encoder = [k for k in converted["model"] if k.startswith("encoder.")]
    assert encoder and all(torch.equal(after["model"][k], converted["model"][k]) for k in encoder)
    assert after["config"]["features"]["pad"] == "batch" and after["init"]["format"] == "nemo"


def broken(models: dict, tmp_path: Path, edit) -> Path:  # noqa: ANN001
    """A copy of the 3x1 model whose config or weights `edit(config, weights)` changed."""
    _, ref = models["3x1"]
    config, weights = copy.deepcopy(ref.cfg), dict(ref.state_dict())
    edit(config, weights)
    return write_nemo(tmp_path / "broken.nemo", ref, config=config, weights=weights)


def _tar_without_model(models: dict, tmp_path: Path) -> Path:
    path = tmp_path / "other.nemo"
    with tarfile.open(path, "w") as tar:
        tar.add(REPO / "README.md", arcname="./README.md")
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda m, t: broken(
                m,
                t,
                lambda c, w: c["preprocessor"].update(
                    _target_="nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor"
                ),
            ),
            "its preprocessor is NeMo's AudioToMelSpectrogramPreprocessor; kws imports NeMo MatchboxNet",
        ),
        (
            lambda m, t: broken(m, t, lambda c, w: c["encoder"]["jasper"][1].update(se=True)),
            "encoder block 1 sets se=True (kws: False), which kws cannot reproduce",
        ),
        (
            lambda m, t: broken(m, t, lambda c, w: c["decoder"].update(pooling_type="max")),
            "its decoder sets pooling_type='max' (kws: 'avg')",
        ),
        (
            lambda m, t: broken(m, t, lambda c, w: c["encoder"].update(activation="tanh")),
            "its encoder sets activation='tanh' (kws: 'relu')",
        ),
        (
            lambda m, t: broken(m, t, lambda c, w: w.update({"encoder.extra.weight": torch.zeros(3)})),
            "holds weights kws's model has no place for (encoder.extra.weight)",
        ),
        (
            lambda m, t: broken(m, t, lambda c, w: w.pop("encoder.encoder.2.res.0.1.running_var")),
            "has no weight 'encoder.encoder.2.res.0.1.running_var'",
        ),
        (
            lambda m, t: broken(m, t, lambda c, w: c["preprocessor"].update(n_fft=1024)),
            "the mel filterbank in its preprocessor differs from the one its settings give",
        ),
        (_tar_without_model, "is a tar archive but not a NeMo model: it has no model_config.yaml"),
        (
            lambda m, t: Path(t / "text.nemo").write_text("not a model") and t / "text.nemo",
            "is not a tar archive or it is cut short",
        ),
    ],
    ids=[
        "mel-preprocessor",
        "squeeze-excite",
        "max-pooling",
        "tanh",
        "extra-weight",
        "missing-weight",
        "front-end",
        "foreign-tar",
        "text",
    ],
)
def test_what_kws_cannot_reproduce_is_refused_naming_it(
    models: dict, tmp_path: Path, make, message: str
) -> None:  # noqa: ANN001
    path = make(models, tmp_path)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("command", ["evaluate", "export", "import-nemo", "train"])
def test_every_command_says_it_in_one_line_and_writes_nothing(
    models: dict,
    labelled: Path,
    tmp_path: Path,
    command: str,
    run_kws,  # noqa: ANN001
) -> None:
    path = broken(models, tmp_path, lambda c, w: c["encoder"]["jasper"][1].update(se=True))
    args = {
        "evaluate": ("evaluate", path, labelled),
        "export": ("export", path),
        "import-nemo": ("import-nemo", path),
        "train": (
            "train",
            "--config",
            REPO / "configs" / "finetune.yaml",
            "--init",
            path,
            "--train-manifest",
            labelled,
        ),
    }[command]
    proc = run_kws(*args, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "encoder block 1 sets se=True (kws: False), which kws cannot reproduce" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.nemo"]
