"""``train.compile``: each stage's loss through ``torch.compile`` (TorchDynamo + Inductor).

Whether this torch build can compile on the training device is found out once, before
any training, by compiling and differentiating a two-operation probe: Inductor needs a
working C++ compiler on the CPU and Triton on CUDA, and a build or platform without them
fails only when the first graph is compiled, with a many-line traceback. ``compile:
true`` turns that failure into one line naming the key; ``compile: try`` trains in eager
mode instead and records why (metrics.json, ``train.compiled``).

Only the loss is compiled (forward and, through AOTAutograd, backward); optimizer steps,
scoring and validation stay eager. Compilation happens in the first steps of each stage
and again when a batch of another size comes (the last one of an epoch); the benchmark
(benchmarks/train.py) reports that time apart from steady-state throughput.
"""

from __future__ import annotations

import functools
import logging
from typing import Callable

import torch

from oneclass.errors import OneclassError

KEY = "train.compile"


def compile_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is torch.compile failing (not the code it compiles)."""
    from torch._dynamo.exc import TorchDynamoException

    return isinstance(exc, TorchDynamoException)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@functools.lru_cache(maxsize=None)
def can_compile(device: torch.device) -> str | None:
    """None where torch.compile works on ``device``; otherwise why not, in one line.
    Found out once per process and device."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        return "TorchDynamo does not support this Python or platform"
    # cpp_extension warns that no CUDA runtime is found on CPU-only machines: not ours to show
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    probe = torch.compile(lambda x: (x * 2).sin().sum())
    x = torch.ones(4, device=device, requires_grad=True)
    try:
        probe(x).backward()
    except Exception as exc:  # noqa: BLE001 - any failure means: cannot compile here
        return first_line(exc)
    finally:
        torch._dynamo.reset()
    return None


def compiled_loss(loss_fn: Callable, stage: str) -> Callable:
    """``loss_fn`` compiled; a compilation failure later (an operation Inductor cannot
    lower) is one line naming the stage and the key."""
    # fallback_random: random draws inside the graph (the gVAE's signs, dropout) come from
    # torch's generator as in eager mode, not Inductor's own, so a compiled run draws the
    # same numbers as an eager one and resumes from the checkpoint's generator state
    compiled = torch.compile(loss_fn, options={"fallback_random": True})

    def run(batch):
        try:
            return compiled(batch)
        except Exception as exc:
            if compile_failure(exc):
                raise OneclassError(f"stage {stage}: torch.compile failed ({first_line(exc)}); "
                                    f"set {KEY}: false") from None
            raise

    return run


def resolve(mode, device: torch.device) -> tuple[bool, str | None]:
    """(compile?, why not) for ``train.compile`` = ``mode`` (false, true or "try"):
    refused in one line where it cannot, unless ``mode`` is "try"."""
    if mode is False:
        return False, None
    why = can_compile(device)
    if why is None:
        return True, None
    if mode == "try":
        return False, why
    raise OneclassError(f"{KEY}: this torch build cannot compile on {device.type} ({why}); "
                        f"set {KEY}: try to fall back to eager mode, or false")
