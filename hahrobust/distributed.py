"""Several processes through PyTorch's own distributed engine (``torchrun``): who does which part, and how
the parts come back together so that the result equals the single-process one.

Two ways of splitting the work, both defined on the *global* batches a single process would see:

- **evaluation** (``sparsity``, ``snr``, ``noise-sweep``, ``attack``, per-epoch test accuracy): batch ``b``
  goes whole to rank ``b mod world_size``. Every batch is computed exactly as one process computes it (same
  images, same batch size, per-image noise and attack seeds), and per-batch partial results are gathered
  and added up *in batch order* (:class:`BatchSum`), so the floats equal the single-process ones, not just
  the integers.
- **training**: every global batch is cut into ``world_size`` contiguous slices, one per rank, and
  DistributedDataParallel averages the gradients; each rank's loss is weighted by its share of the batch
  (:meth:`Shard.loss_scale`), so the averaged gradient is the gradient of the whole batch's mean loss even
  when the last batch does not divide evenly. Data order and augmentation are drawn for the whole batch
  from the (seed, epoch) generator before slicing, so they do not depend on the number of processes.

Outside ``torchrun`` (no process group) everything here is the identity: one process, rank 0 of 1.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from hahrobust.errors import HahrobustError
from hahrobust.torchrun import launched_by_torchrun

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's place among ``world_size`` processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 prints, shows progress and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def owns(self, batch: int) -> bool:
        """Evaluation: does this rank compute global batch number ``batch``?"""
        return batch % self.world_size == self.rank

    def own_count(self, batches: int) -> int:
        """How many of ``batches`` evaluation batches this rank computes (its progress bar's total)."""
        return len(range(self.rank, batches, self.world_size))

    def slice(self, n: int) -> slice:
        """Training: this rank's contiguous part of a global batch of ``n`` images (sizes differ by ≤ 1)."""
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def loss_scale(self, local: int, total: int) -> float:
        """Weight of this rank's mean loss over ``local`` of the batch's ``total`` images: DDP averages
        gradients over ranks, so ``world_size · local / total`` makes that average the whole batch's mean."""
        return self.world_size * local / total


SINGLE = Shard()


def current() -> Shard:
    """The shard of this process: from the initialised default process group, else rank 0 of 1."""
    if dist.is_available() and dist.is_initialized():
        return Shard(dist.get_rank(), dist.get_world_size())
    return SINGLE


def init_from_env() -> Shard:
    """Join the process group torchrun describes in the environment (a no-op outside torchrun).

    Backends: gloo for CPU tensors (and for the gathered Python objects), plus NCCL for CUDA tensors when
    CUDA is available, in one group (``cpu:gloo,cuda:nccl``). Each process then takes GPU ``LOCAL_RANK``
    (see :func:`hahrobust.devices.resolve_device`).
    """
    if not launched_by_torchrun():
        return current()
    if not dist.is_available():
        raise HahrobustError("torchrun launched this process, but this torch build has no torch.distributed")
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda and local_rank() < torch.cuda.device_count():  # (a CPU run may start more ranks than GPUs)
            torch.cuda.set_device(local_rank())
        timeout = datetime.timedelta(minutes=float(os.environ.get("HAHROBUST_DIST_TIMEOUT_MIN", "30")))
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=timeout)
    return current()


def local_rank() -> int:
    """This process's index on its node (torchrun's LOCAL_RANK; 0 outside torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def require_single_process(what: str) -> None:
    """Refuse to run ``what`` under torchrun (for work that is not split across processes)."""
    if current().distributed:
        raise HahrobustError(f"{what} runs in one process; start it without torchrun")


def shutdown(*, clean: bool = True) -> None:
    """Leave the process group; after a barrier when ``clean``, so no rank exits while another still
    needs it (after an error there is no barrier: the other ranks may never reach it)."""
    if dist.is_available() and dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()


def gather(items: dict[int, T], shard: Shard | None = None) -> dict[int, T]:
    """Every rank's ``{batch number: item}`` merged, on every rank, in batch order."""
    shard = shard or current()
    if not shard.distributed:
        return dict(sorted(items.items()))
    parts: list[dict[int, T] | None] = [None] * shard.world_size
    dist.all_gather_object(parts, items)
    merged: dict[int, T] = {}
    for part in parts:
        merged.update(part or {})
    return dict(sorted(merged.items()))


class BatchSum:
    """Per-batch partial sums of a fixed-shape CPU tensor, added up in batch order over all ranks.

    Adding the same partials in the same order as a single process makes the float total bit-identical to
    the single-process one (a plain ``all_reduce`` would add in a different order).
    """

    def __init__(self, zeros: torch.Tensor, shard: Shard | None = None) -> None:
        self.zeros = zeros.cpu()
        self.shard = shard or current()
        self.parts: dict[int, torch.Tensor] = {}

    def add(self, key: int, part: torch.Tensor) -> None:
        """Record one batch's partial sum; ``key`` orders the batches (e.g. the batch's first image index)."""
        self.parts[key] = part.detach().to("cpu", self.zeros.dtype)

    def total(self) -> torch.Tensor:
        total = self.zeros.clone()
        for part in gather(self.parts, self.shard).values():
            total += part
        return total


def all_sum(values: Iterable[float], shard: Shard | None = None) -> list[float]:
    """Element-wise sum of a few numbers (counts, loss sums for logging) over all ranks, in float64."""
    shard = shard or current()
    tensor = torch.tensor(list(values), dtype=torch.float64)
    if shard.distributed:
        dist.all_reduce(tensor)
    return tensor.tolist()


def broadcast(value: T, shard: Shard | None = None) -> T:
    """Rank 0's ``value`` on every rank (e.g. a decision only rank 0 can take, such as a file's state)."""
    shard = shard or current()
    if not shard.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[return-value]


def on_rank0(action: Callable[[], T], shard: Shard | None = None) -> T | None:
    """``action()`` on rank 0 alone (files are rank 0's; other nodes may not even see them): its result there,
    None elsewhere. A one-line :class:`HahrobustError` it raises stops every rank with that line (a rank
    stopping alone would leave the others waiting)."""
    shard = shard or current()
    result, problem = None, None
    if shard.is_main:
        try:
            result = action()
        except HahrobustError as exc:
            problem = str(exc)
    problem = broadcast(problem, shard)
    if problem is not None:
        raise HahrobustError(problem)
    return result


def barrier(shard: Shard | None = None) -> None:
    if (shard or current()).distributed:
        dist.barrier()
