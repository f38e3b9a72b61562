"""Where and in what precision training runs: device choice, mixed-precision dtype, CPU threads."""

from __future__ import annotations

import contextlib
import os

import torch

from kws.errors import TrainingError
from kws.train import distributed

AMP_DTYPES: dict[str, torch.dtype | None] = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


def pick_device(name: str) -> torch.device:
    """`auto` | `cpu` | `cuda` | `cuda:N`: the device of this process (`cuda` is `cuda:LOCAL_RANK` under
    torchrun). The one device chooser of `kws train` and `kws evaluate`."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    kind, _, number = name.partition(":")
    if kind in ("cuda", "gpu") and (number == "" or number.isdigit()):
        if not torch.cuda.is_available():
            raise TrainingError(
                f"--device {name} was asked for, but CUDA is not available here (no CUDA GPU, or a CPU-only "
                "torch build); use --device cpu or --device auto"
            )
        index = int(number) if number else distributed.local_rank()
        if index >= torch.cuda.device_count():
            fix = (
                "lower --nproc_per_node"
                if not number
                else f"use a GPU number below {torch.cuda.device_count()}"
            )
            raise TrainingError(
                f"{name if number else f'process {index} of this node'} needs GPU {index}, but only "
                f"{torch.cuda.device_count()} are visible; {fix}"
            )
        return torch.device("cuda", index)
    raise TrainingError(f"unknown device {name!r}; use auto, cpu or cuda")


def pick_precision(precision: str, device: torch.device) -> tuple[str, str | None]:
    """The precision to use and a warning when it differs from the one asked for."""
    if precision not in AMP_DTYPES:
        raise TrainingError(f"unknown precision {precision!r}; use 32, bf16 or 16")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        name = torch.cuda.get_device_name(device)
        return "16", f"{name} does not support bfloat16; training in float16 with loss scaling instead"
    return precision, None


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[object]:
    """Mixed precision for the model's forward pass (features stay float32, see kws.features)."""
    dtype = AMP_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def set_cpu_threads() -> int:
    """Share the cores among the processes of this node (torchrun starts one per GPU or per CPU slot)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // distributed.local_world_size())
    torch.set_num_threads(threads)
    return threads
