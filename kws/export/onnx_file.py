"""Writing the deployed model (kws.export.graph) as ONNX, and its int8 version.

The graph is made by PyTorch's dynamo exporter (`torch.onnx.export(dynamo=True)`, which needs onnxscript),
opset OPSET, with the MFCC as convolutions and matrix products (kws.export.frontend), so the whole path from
waveform to probabilities is one file of standard operators. Input `audio` `(batch, window_samples)`,
output `probs` `(batch, n_classes)`, batch dynamic. The exporter's per-node notes (source lines, stack
traces) are dropped: a third of the int8 file, and nothing a runtime reads.

Int8 is onnxruntime's static post-training quantization in QDQ form: weights int8 per output channel,
activations uint8 with ranges calibrated on training clips (percentiles), biases float. Only the encoder's
convolutions and the head are quantized; the MFCC (DFT, power, mel filterbank, log, DCT) stays float: the
power spectrum's dynamic range would not survive 8 bits.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kws.export.graph import WINDOW_SAMPLES, DeployedModel
from kws.exported import ExportMetadata, export_module

OPSET = 18
QUANTIZED_OPS = ["Conv", "Gemm"]
FOLD_OUTPUT_LIMIT = 1024  # elements: constants that would fold into larger tensors stay computed
CALIBRATION_BATCH = 32


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's and quantizer's progress lines and warnings are about their own internals."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch._dynamo", "torch.export", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def finish_file(path: Path, metadata: ExportMetadata) -> None:
    """Write `metadata` into the ONNX file's metadata_props (replacing what was there) and drop the
    exporter's per-node notes."""
    onnx = export_module("onnx", "kws export")
    model = onnx.load(str(path))
    for node in model.graph.node:  # names and notes are for people reading the graph; a runtime needs none
        del node.metadata_props[:]
        node.doc_string = node.name = ""
    del model.graph.value_info[:]  # intermediate shapes: the runtime infers them
    del model.metadata_props[:]
    for key, value in metadata.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = "kws keyword model: waveform in, class probabilities out"
    onnx.save(model, str(path))


def write_onnx(deployed: DeployedModel, metadata: ExportMetadata, path: Path) -> None:
    """Export `deployed` to `path` (float32) with its metadata."""
    export_module("onnxscript", "kws export --format onnx")
    export_module("onnx", "kws export --format onnx")
    example = torch.zeros(2, WINDOW_SAMPLES)
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            deployed,
            (example,),
            input_names=["audio"],
            output_names=["probs"],
            dynamic_shapes={"audio": {0: torch.export.Dim("batch")}},
            opset_version=OPSET,
            dynamo=True,
            optimize=False,
            verbose=False,
        )
        assert program is not None
        # Constant folding, but only into small tensors: the front end's DFT weights stay products of their
        # small tables (kws.export.frontend), multiplied out by the runtime when it loads the file.
        optimizer = export_module("onnxscript.optimizer", "kws export --format onnx")
        program.model = optimizer.optimize(program.model, output_size_limit=FOLD_OUTPUT_LIMIT)
        program.save(str(path), external_data=False)
    finish_file(path, metadata)


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over `(n, window_samples)` waveforms."""

    def __init__(self, windows: np.ndarray) -> None:
        self.batches = iter(
            [windows[i : i + CALIBRATION_BATCH] for i in range(0, len(windows), CALIBRATION_BATCH)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {"audio": np.ascontiguousarray(batch, dtype=np.float32)}


def front_end_nodes(graph: Any) -> list[str]:
    """The nodes that compute the encoder's input, the MFCC: everything upstream of the encoder's first
    convolution, which is the first Conv downstream of the graph's (one) Log."""
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    position = {node.name: i for i, node in enumerate(graph.node)}
    stack = [n for n in graph.node if n.op_type == "Log"]
    seen: set[str] = set()
    convs: list[Any] = []
    while stack:
        for out in stack.pop().output:
            for node in consumers.get(out, []):
                if node.name not in seen:
                    seen.add(node.name)
                    (convs if node.op_type == "Conv" else stack).append(node)
    first = min(convs, key=lambda node: position[node.name])
    front: dict[str, Any] = {}
    stack = [producer[first.input[0]]] if first.input[0] in producer else []
    while stack:
        node = stack.pop()
        if node.name not in front:
            front[node.name] = node
            stack += [producer[name] for name in node.input if name in producer]
    return list(front)


def write_int8(fp32_path: Path, calibration: np.ndarray, metadata: ExportMetadata, path: Path) -> None:
    """Quantize the float model at `fp32_path` to `path`, calibrated on `calibration` `(n, window)`."""
    quantization = export_module("onnxruntime.quantization", "kws export --quantize int8")
    with tempfile.TemporaryDirectory(dir=Path(path).parent) as tmp, _quiet():
        prepared = Path(tmp) / "prepared.onnx"
        # shape inference and graph clean-up first, as onnxruntime's quantization guide asks
        onnx = export_module("onnx", "kws export --quantize int8")
        dense = onnx.load(str(fp32_path))
        for i, node in enumerate(dense.graph.node):  # the quantizer addresses nodes by name
            node.name = node.name or f"{node.op_type}_{i}"
        onnx.save(dense, str(prepared))
        quantization.quant_pre_process(
            str(prepared), str(prepared), skip_optimization=True, skip_symbolic_shape=True
        )
        front_end = front_end_nodes(onnx.load(str(prepared)).graph)  # these stay float
        quantization.quantize_static(
            str(prepared),
            str(path),
            _Calibration(calibration),
            quant_format=quantization.QuantFormat.QDQ,
            op_types_to_quantize=QUANTIZED_OPS,
            nodes_to_exclude=front_end,
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            # the 99.999th percentile of each activation rather than its extreme: on the demo model 0.1
            # points below float instead of 1.1 (bench/RESULTS.md)
            calibrate_method=quantization.CalibrationMethod.Percentile,
            extra_options={"QuantizeBias": False},  # float biases: a third the bytes of int32 + scale + zero
        )
    finish_file(path, metadata)
