"""torch.distributed for influal: one process or many, the same results.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) :func:`init_from_env` joins the process group: gloo for
CPU devices, NCCL for CUDA ones (each rank on ``cuda:LOCAL_RANK``). Without it, every function here is the
one-process identity, so the rest of influal calls them unconditionally.

The pieces the rest of influal uses:
- :func:`shard`: a rank's contiguous part of an id array (``np.array_split`` order, so rank 0 holds the first
  items): the same split on every rank, whatever the array.
- :func:`gather_rows`: the rows each rank computed for its shard, concatenated back into the original order.
- :func:`all_sum`: a tensor summed over the ranks (v, Hessian products, gradients).
- :func:`is_main` / :func:`barrier`: rank 0 alone writes files; the others wait where they read them.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .errors import ConfigError

TIMEOUT = datetime.timedelta(minutes=int(os.environ.get("INFLUAL_DIST_TIMEOUT_MIN", "30")))


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher) as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str = "auto") -> str:
    """Join the process group torchrun describes (idempotent); returns the device this rank should use."""
    if not launched():
        return device
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; run influal as one process")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda and device in ("auto", "cuda"):
        device = f"cuda:{local}"
    if not dist.is_initialized():
        backend = "nccl" if cuda else "gloo"
        if cuda:
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group(backend=backend, timeout=TIMEOUT)
    return "cpu" if not cuda else device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def shard(ids: np.ndarray) -> np.ndarray:
    """This rank's contiguous part of ``ids`` (all of it in one process)."""
    ids = np.asarray(ids)
    if not active():
        return ids
    return np.array_split(ids, world_size())[rank()]


def shard_sizes(n: int) -> list[int]:
    return [len(part) for part in np.array_split(np.arange(n), world_size())]


def _comm_device(tensor: torch.Tensor) -> torch.device:
    return tensor.device if dist.get_backend() == "nccl" else torch.device("cpu")


def all_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the ranks (a new tensor on ``tensor``'s device; itself in one process)."""
    if not active():
        return tensor
    work = tensor.detach().to(_comm_device(tensor)).clone()
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(tensor.device)


def gather_rows(local: torch.Tensor | np.ndarray, total: int) -> torch.Tensor | np.ndarray:
    """The rows of every rank's shard (:func:`shard` of ``total`` items), concatenated in rank order: the rows of
    the whole array, on every rank. Works on tensors [n_r, ...] and numpy arrays."""
    if not active():
        return local
    is_numpy = isinstance(local, np.ndarray)
    tensor = torch.from_numpy(np.ascontiguousarray(local)) if is_numpy else local.detach()
    device = tensor.device
    sizes = shard_sizes(total)
    if tensor.shape[0] != sizes[rank()]:
        raise RuntimeError(f"rank {rank()} holds {tensor.shape[0]} rows of its shard of {sizes[rank()]}")
    comm = tensor.to(_comm_device(tensor)).contiguous()
    # all_gather needs equal shapes: pad every shard to the largest
    longest = max(sizes)
    padded = torch.zeros((longest, *comm.shape[1:]), dtype=comm.dtype, device=comm.device)
    padded[:len(comm)] = comm
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    out = torch.cat([p[:n] for p, n in zip(parts, sizes)]).to(device)
    return out.numpy() if is_numpy else out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (a small picklable object: a decision, a list of names)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_agree(value: Any) -> bool:
    """Whether every rank holds the same (picklable) value."""
    if not active():
        return True
    values = [None] * world_size()
    dist.all_gather_object(values, value)
    return all(v == values[0] for v in values)
