"""Distributed helpers for DDP under `torchrun`. In a single process every function is a no-op (or returns
the single-process answer), so the training loop has no `if ddp:` forks.

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; `init` reads them. NCCL is used
when training on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from kws.errors import KWSError


def env_world_size() -> int:
    """World size from the launcher's environment (1 without torchrun), usable before `init`."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))


def init(device_type: str) -> None:
    """Join the process group when launched by torchrun with more than one process."""
    if env_world_size() > 1 and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend=backend)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on the process that writes files and prints (rank 0)."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all processes, in place; returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """`obj` of rank `src` on every process."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `model` when distributed, else `model` itself."""
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    # The CPU path's depthwise weights (c, 1, k) get gradients whose stride differs from the bucket's only
    # in the size-1 dimension: the same memory order, so DDP's warning about it means nothing here.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return DistributedDataParallel(model, device_ids=device_ids)


def destroy() -> None:
    if is_distributed():
        dist.destroy_process_group()


T = TypeVar("T")


def agree(error: KWSError | None) -> None:
    """A barrier that also shares failures: when any process passes an error, every process raises one.

    Without it a process that stops alone (a run dir it refuses, a bad clip) leaves the others waiting at the
    next collective until the process group times out, which across nodes can be half an hour. The process
    that failed raises its own error; the others raise the first error by rank, marked with `from_rank` so
    that the CLI prints it once (on the process that had it)."""
    if not is_distributed():
        if error is not None:
            raise error
        return
    errors: list[KWSError | None] = [None] * world_size()
    dist.all_gather_object(errors, error)
    if error is not None:
        raise error
    for source, other in enumerate(errors):
        if other is not None:
            other.from_rank = source
            raise other


def run_where(should_run: bool, fn: Callable[[], T]) -> T | None:
    """`fn()` on the processes where `should_run` (None elsewhere), then `agree` on its KWSError, if any."""
    result, error = None, None
    if should_run:
        try:
            result = fn()
        except KWSError as exc:
            error = exc
    agree(error)
    return result


def in_turn(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 first, then on the first process of every other node, then on the rest.

    For work that fills a cache on first use (the packed datasets): rank 0 builds it; on a shared file system
    the others find it ready, and on node-local disks each node builds its own copy once. A KWSError in any
    turn stops every process (`agree`)."""
    if not is_distributed():
        return fn()
    first_of_node = local_rank() == 0
    result = None
    for mine in (is_main(), first_of_node and not is_main(), not first_of_node):
        out = run_where(mine, fn)
        if mine:
            result = out
    return result  # type: ignore[return-value]
