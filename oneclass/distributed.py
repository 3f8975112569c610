"""Data-parallel training under ``torchrun``: one process per GPU (or several on a CPU).

``torchrun --nproc_per_node=N -m oneclass train RECIPE`` starts N copies of the command;
torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) makes each one a
rank of a process group (NCCL on CUDA, gloo on the CPU), and every rank runs the whole
run with the same seed, so each draws the same split, the same initial weights and the
same batch order. What the ranks share:

- Training (:class:`oneclass.engine.Trainer`): each global batch of ``train.batch_size``
  items is dealt out, rank r taking items r, r + N, ...; each stage's trained modules are
  wrapped in DistributedDataParallel, which averages the gradients, so the N processes
  take the optimizer steps one process would take on the whole batch. The learning rate,
  the schedule and the steps per epoch do not depend on N.
- Inference (:meth:`oneclass.methods.base.Method.map`: validation AUROC, scores, the
  Deep SAD centre, ...): the items are cut into N contiguous slices of sizes differing by
  at most one, and the outputs gathered back in order. Nothing is padded or dropped, so
  every item is scored exactly once (torch's DistributedSampler pads with repeats, which
  moves AUROC), and every rank holds all scores, so early stopping and keep: best choose
  the same epoch on every rank.
- Files: rank 0 alone writes the run folder, the checkpoints and the log. A checkpoint
  holds the plain modules, not the wrapper, so a run resumes under any N, one process
  included.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from oneclass.errors import OneclassError


@dataclass(frozen=True)
class Group:
    rank: int
    size: int
    local_rank: int


_GROUP: Group | None = None


def current() -> Group | None:
    """The process group this process trains in, or None (one process)."""
    return _GROUP


def launched() -> Group | None:
    """What torchrun's environment says this process is, or None outside torchrun (or at
    one process, which needs no group)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return None
        return Group(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    except (KeyError, ValueError) as exc:
        raise OneclassError(f"torchrun's environment is incomplete or malformed ({exc}): "
                            f"WORLD_SIZE, RANK and LOCAL_RANK must be integers") from None


@contextmanager
def joined(device: str) -> Iterator[Group | None]:
    """Inside: this process is a rank of torchrun's group (NCCL where ``device`` means
    CUDA and CUDA is here, gloo otherwise); outside torchrun, nothing changes."""
    global _GROUP
    group = launched()
    if group is None:
        yield None
        return
    import torch.distributed as dist

    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        if group.local_rank >= torch.cuda.device_count():
            raise OneclassError(f"torchrun: local rank {group.local_rank} but {torch.cuda.device_count()} "
                                f"CUDA device(s) here; start at most that many processes per node")
        torch.cuda.set_device(group.local_rank)
    try:
        dist.init_process_group("nccl" if cuda else "gloo")
    except (RuntimeError, ValueError) as exc:  # WORLD_SIZE set, but no torchrun rendezvous
        raise OneclassError(f"WORLD_SIZE={group.size}: cannot join the process group "
                            f"({str(exc).splitlines()[0]}); start with torchrun, or unset WORLD_SIZE") from None
    _GROUP = group
    try:
        yield group
    finally:
        _GROUP = None
        dist.destroy_process_group()


def device_for(name: str, key: str) -> torch.device | None:
    """Under torchrun with CUDA, the GPU of this rank that ``train.device`` = ``name``
    (auto or cuda) means; None where the device does not depend on the rank."""
    group = _GROUP
    if group is None:
        return None
    if name.startswith("cuda:"):
        raise OneclassError(f"{key}: {name!r} under torchrun, where each process takes the GPU of its "
                            f"local rank; use cuda or auto (and CUDA_VISIBLE_DEVICES to choose GPUs)")
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", group.local_rank)
    return None


def is_writer() -> bool:
    """Whether this process writes files: rank 0, or the only process."""
    return _GROUP is None or _GROUP.rank == 0


def share(n: int) -> slice:
    """This rank's contiguous slice of ``n`` items for inference (all of them at N = 1)."""
    group = _GROUP
    if group is None:
        return slice(0, n)
    return slice(n * group.rank // group.size, n * (group.rank + 1) // group.size)


def gathered(part: np.ndarray) -> np.ndarray:
    """Every rank's ``part`` (of :func:`share`'s slices), concatenated in rank order."""
    filled = [p for p in every_rank(part) if len(p)]
    return np.concatenate(filled) if filled else part


def summed(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over the ranks (a new tensor; the same one at N = 1)."""
    if _GROUP is None:
        return values
    import torch.distributed as dist

    total = values.detach().clone()
    dist.all_reduce(total)
    return total


def broadcast_(tensor: torch.Tensor) -> None:
    """Overwrite ``tensor`` with rank 0's (for state a method changes outside the
    optimizer, which would otherwise drift apart between the ranks)."""
    if _GROUP is not None:
        import torch.distributed as dist

        dist.broadcast(tensor, 0)


def from_rank0(value):
    """Rank 0's ``value`` on every rank (any picklable object; ``value`` at N = 1)."""
    if _GROUP is None:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, 0)
    return box[0]


def every_rank(value) -> list:
    """Each rank's ``value``, in rank order (``[value]`` at N = 1)."""
    if _GROUP is None:
        return [value]
    import torch.distributed as dist

    values: list = [None] * _GROUP.size
    dist.all_gather_object(values, value)
    return values


def barrier() -> None:
    if _GROUP is not None:
        import torch.distributed as dist

        dist.barrier()


def wrapped(modules: dict[str, torch.nn.Module], trained: list[torch.nn.Parameter], device: torch.device,
            loss_fn):
    """``loss_fn`` as the forward of a DistributedDataParallel module holding the
    modules that own ``trained`` (and any trained parameter outside them), so the
    gradients of ``trained`` are averaged over the ranks in the backward pass.
    Parameters of those modules that the stage does not train are left to each rank
    (none has a gradient to share); the modules' buffers (batch-norm statistics) are
    rank 0's at every step."""
    from torch.nn.parallel import DistributedDataParallel

    ids = {id(p) for p in trained}
    owners = {name: m for name, m in modules.items() if any(id(p) in ids for p in m.parameters())}
    owned = {id(p) for m in owners.values() for p in m.parameters()}
    loose = [p for p in trained if id(p) not in owned]
    holder = _StageModule(owners, loose, trained, loss_fn)
    ignored = [name for name, p in holder.named_parameters() if id(p) not in ids]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(holder, ignored)
    return DistributedDataParallel(holder, device_ids=[device.index] if device.type == "cuda" else None)


class _StageModule(torch.nn.Module):
    def __init__(self, owners: dict[str, torch.nn.Module], loose: list[torch.nn.Parameter],
                 trained: list[torch.nn.Parameter], loss_fn):
        super().__init__()
        self.owners = torch.nn.ModuleList(owners.values())  # names may hold dots (ensemble members)
        self.loose = torch.nn.ParameterList(loose)
        self.trained = [p for p in trained if p.requires_grad]
        self.loss_fn = loss_fn

    def forward(self, batch: dict) -> torch.Tensor:
        # A share may leave a trained parameter out of the loss (the gVAE's classifier
        # where a rank's share holds no labelled anomaly); DDP waits for a gradient of
        # every one. Zero times each is in the graph, so each gets one (0 where unused)
        # without DDP's search for unused parameters, a walk of the graph at every step.
        loss = self.loss_fn(batch)
        return loss + 0.0 * sum(p.flatten()[0] for p in self.trained)
