"""What a method is: a scikit-learn-like estimator with torch inside.

A method class declares its recipe parameters as a dataclass ``Params`` (checked like
recipe keys: ``method.<key>``) and is constructed from (params, input shape) alone: its
constructor builds its networks and registers them with :meth:`Method.add`, so its whole
learned state is ``state_dict()``, a flat mapping of tensors that loads with
``torch.load(weights_only=True)``. It implements ``fit(train, val)`` and ``score(data)``
(higher = more anomalous), and may implement ``embed(data)`` (latent vectors, for t-SNE)
and ``explain(data)`` (per-pixel maps, for pixel-level AUROC).

Training goes through ``self.trainer`` (:class:`oneclass.engine.Trainer`), which runs
each of the method's stages from a :class:`oneclass.engine.Stage` spec and owns device,
seeding, batches, progress, checkpoints, resuming, early stopping and AMP. A caller sets
the trainer before ``fit`` (``oneclass train`` does, with the run folder); without one,
``fit`` trains with a plain trainer built from the ``train`` section's defaults.

Build methods with :func:`build`: it draws the initial weights from the seed without
touching the caller's global random state.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, ClassVar, Iterator

import numpy as np
import torch

from oneclass import distributed
from oneclass.data.items import PatchData
from oneclass.engine import keep_global_rng
from oneclass.errors import OneclassError
from oneclass.heap import steady_heap

if TYPE_CHECKING:
    from oneclass.engine import Trainer

INFER_BATCH = 256  # items per batch when scoring, embedding or explaining
# On the CPU a batch is also held to this many bytes for its largest activation: glibc
# serves blocks under its mmap threshold (32 MiB at most) from the heap and reuses them,
# while larger ones (and heap tops over the trim threshold, twice the mmap threshold) are
# mapped and unmapped every batch. Deep SAD's first layer at 256 patches of 32 x 32 is
# exactly 32 MiB: scoring made ~5 million page faults on the nanofibre grid and ran
# 1.35-1.6x slower than with the thresholds raised (benchmarks/score.py).
CPU_BATCH_BYTES = 8 << 20
PROBE_ITEMS = 8  # the first batch on the CPU, whose activations size the others


class Method:
    name: ClassVar[str] = ""
    #: "unsupervised" methods ignore labelled anomalies; "supervised" ones need them
    supervision: ClassVar[str] = "semi-supervised"
    #: what ``fit`` uses the validation set for, shown by ``oneclass list methods -v``
    uses_validation: ClassVar[str] = ("early stopping on validation AUROC or the normals' mean score "
                                   "(train.early_stopping, train.monitor)")

    @dataclass
    class Params:
        pass

    @classmethod
    def ignored_params(cls) -> tuple[str, ...]:
        """Parameters of ``Params`` this method does not use (a variant sharing its
        family's Params); ``oneclass list methods -v`` leaves them out."""
        return ()

    @classmethod
    def ignored_at(cls, params: "Method.Params") -> dict[str, str]:
        """Parameters unused at these values of the others, each with the reason
        (``{"dsa": "dsa_p is 0"}``): select refuses grid points that differ only there."""
        return {}

    def __init__(self, params: "Method.Params", in_shape: tuple[int, int, int]):
        self.params = params
        self.in_shape = tuple(in_shape)
        self.modules: dict[str, torch.nn.Module] = {}
        self.device = torch.device("cpu")
        self.amp = False
        self.channels_last = False
        self.infer_batch = INFER_BATCH  # items per batch when scoring (oneclass score --batch-size)
        self._trainer: Trainer | None = None

    # -- networks -----------------------------------------------------------------

    def add(self, name: str, module: torch.nn.Module) -> torch.nn.Module:
        """Make ``module`` part of the model: on its device, in every checkpoint and in
        ``state_dict()``."""
        self.modules[name] = module.to(self.device, memory_format=self._memory_format)
        return module

    def to(self, device: torch.device | str, amp: bool = False, channels_last: bool = False) -> "Method":
        """Modules to ``device``; ``amp``: float16 autocast on CUDA; ``channels_last``: 4-d
        weights and inputs in NHWC memory order (same values, other kernels)."""
        self.device = torch.device(device)
        self.amp = amp and self.device.type == "cuda"
        self.channels_last = channels_last
        for module in self.modules.values():
            module.to(self.device, memory_format=self._memory_format)
        return self

    @property
    def _memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def snapshot(self) -> dict:
        """A copy of every module's state, for :meth:`restore`."""
        return {"modules": {k: copy.deepcopy(m.state_dict()) for k, m in self.modules.items()}}

    def restore(self, state: dict) -> None:
        for key, module in self.modules.items():
            if key in state["modules"]:
                module.load_state_dict(state["modules"][key])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{name}.{key}": value for name, module in self.modules.items()
                for key, value in module.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, module in self.modules.items():
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    # -- training -----------------------------------------------------------------

    @property
    def trainer(self) -> "Trainer":
        if self._trainer is None:
            from oneclass.engine import Trainer
            from oneclass.recipe import TrainSection

            self.trainer = Trainer(TrainSection(device=str(self.device)), seed=0)
        return self._trainer

    @trainer.setter
    def trainer(self, trainer: "Trainer") -> None:
        self._trainer = trainer
        trainer.attach(self)

    def prepare(self, val: PatchData | None) -> "Trainer":
        """The trainer, with ``val`` (when given) as the validation set it scores each epoch;
        each ``fit`` starts with it."""
        trainer = self.trainer
        if val is not None:
            trainer.val = val
        return trainer

    def fit(self, train: PatchData, val: PatchData | None = None) -> None:
        raise NotImplementedError

    def run_info(self) -> dict:
        """What a run's records should say of this fit beyond its parameters (e.g. where
        pretrained weights came from); ``oneclass train`` writes it to metrics.json."""
        return {}

    # -- inference ----------------------------------------------------------------

    def score(self, data: PatchData) -> np.ndarray:
        raise NotImplementedError

    embed = None  # (data) -> (n, d) array, where a method has a latent space
    explain = None  # (data) -> (n, H, W) array, where a method draws anomaly maps

    @torch.no_grad()
    def map(self, fn: Callable[[torch.Tensor], torch.Tensor], data: PatchData,
            batch_size: int | None = None) -> np.ndarray:
        """Apply ``fn`` to every batch of ``data`` in eval mode; outputs in row order. On
        the CPU the batches after a first small one are cut to keep the largest module
        output under CPU_BATCH_BYTES (an item's output does not depend on its batch).
        Batches hold ``infer_batch`` items (``oneclass score --batch-size``), or
        ``batch_size`` where a method asks fewer (large images); a batch that does not fit
        in memory is refused with the size that does (:class:`BatchTooLarge`). Under
        torchrun each rank maps its slice of ``data`` and all receive every output
        (:mod:`oneclass.distributed`: nothing padded, nothing dropped)."""
        if distributed.current() is None:
            return self._map_here(fn, data, batch_size)
        mine = data.subset(np.arange(len(data))[distributed.share(len(data))])
        return distributed.gathered(self._map_here(fn, mine, batch_size))

    def _map_here(self, fn: Callable[[torch.Tensor], torch.Tensor], data: PatchData,
                  batch_size: int | None) -> np.ndarray:
        for module in self.modules.values():
            module.eval()
        batch_size = self.infer_batch if batch_size is None else min(batch_size, self.infer_batch)

        def attempt(rows: np.ndarray) -> torch.Tensor:
            x = batch_pixels(data, rows, self.device, self.channels_last)
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.amp):
                return fn(x).float().cpu()

        def run(rows: np.ndarray) -> torch.Tensor:
            out = _unless_out_of_memory(attempt, rows)
            if out is None:
                raise BatchTooLarge(len(rows), largest_fitting(attempt, rows), self.device)
            return out

        out, start = [], 0
        if self.device.type == "cpu":
            steady_heap()
            if len(data) > PROBE_ITEMS:
                start = min(PROBE_ITEMS, batch_size)
                with largest_output(self.modules.values()) as largest:
                    out.append(run(np.arange(start)))
                batch_size = cpu_batch_size(largest[0], start, batch_size)
        for start in range(start, len(data), batch_size):
            out.append(run(np.arange(start, min(start + batch_size, len(data)))))
        return torch.cat(out).numpy() if out else np.zeros((0,), dtype=np.float32)


class BatchTooLarge(OneclassError):
    """A scoring batch that does not fit in the device's memory; ``fits``: the largest
    that did when halved (0: not even one item)."""

    def __init__(self, asked: int, fits: int, device: torch.device):
        self.asked, self.fits = asked, fits
        fitting = f"a batch of {fits} does" if fits else "not even one item does"
        super().__init__(f"a scoring batch of {asked} items does not fit in {device.type} memory; {fitting}")


def _unless_out_of_memory(attempt: Callable[[np.ndarray], torch.Tensor], rows: np.ndarray) -> torch.Tensor | None:
    """``attempt(rows)``, or None where it ran out of memory (CUDA's out-of-memory error,
    a subclass of RuntimeError, or the CPU allocator's); other errors pass through."""
    try:
        return attempt(rows)
    except RuntimeError as exc:
        if isinstance(exc, torch.OutOfMemoryError) or "can't allocate memory" in str(exc):
            return None
        raise


def largest_fitting(attempt: Callable[[np.ndarray], torch.Tensor], rows: np.ndarray) -> int:
    """The batch size, halving from ``len(rows)``, at which ``attempt`` runs (0: none)."""
    size = len(rows) // 2
    while size >= 1:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if _unless_out_of_memory(attempt, rows[:size]) is not None:
            return size
        size //= 2
    return 0


def cpu_batch_size(largest_bytes: int, probe: int, asked: int) -> int:
    """The CPU batch whose largest module output stays under CPU_BATCH_BYTES, given that
    a batch of ``probe`` items made one of ``largest_bytes``; at most ``asked``."""
    return max(1, min(asked, CPU_BATCH_BYTES * probe // max(largest_bytes, 1)))


@contextmanager
def largest_output(modules) -> Iterator[list[int]]:
    """Inside, ``largest[0]`` holds the byte size of the largest tensor any submodule of
    ``modules`` has output."""
    largest = [0]

    def hook(module, args, output):
        for tensor in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(tensor, torch.Tensor):
                largest[0] = max(largest[0], tensor.numel() * tensor.element_size())

    handles = [m.register_forward_hook(hook) for top in modules for m in top.modules()]
    try:
        yield largest
    finally:
        for handle in handles:
            handle.remove()


def batch_pixels(data: PatchData, take: np.ndarray, device: torch.device,
                 channels_last: bool = False) -> torch.Tensor:
    """Items ``take`` (sorted positions in ``data``) as float in [0, 1] on ``device``."""
    return to_device(host_pixels(data, take, device.type == "cuda"), device, channels_last)


def host_pixels(data: PatchData, take: np.ndarray, pin: bool = False) -> torch.Tensor:
    """Items ``take`` (sorted positions in ``data``) read from the store as uint8, in
    page-locked memory with ``pin`` (for an asynchronous copy to CUDA)."""
    pixels = torch.from_numpy(np.ascontiguousarray(data.images[data.rows[take]]))
    return pixels.pin_memory() if pin else pixels


def to_device(pixels: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """uint8 pixels → float in [0, 1] on ``device``, NHWC in memory with ``channels_last``."""
    x = pixels.to(device, non_blocking=True).float().div_(255)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def build(cls: type[Method], params, in_shape: tuple[int, int, int], seed: int = 0,
          keep_rng: bool = True) -> Method:
    """``cls(params, in_shape)`` with initial weights drawn from ``seed``. With
    ``keep_rng`` (building to load or to score) the global random state is left as it
    was; training builds right after its trainer seeded the global state, so keep_rng is
    False there and the weights are the same either way."""
    if not keep_rng:
        return cls(params, in_shape)
    with keep_global_rng():
        # the CPU generator alone, where the weights are drawn: torch.manual_seed would also
        # queue the seed for a CUDA not yet initialised, which keeps the last one queued,
        # so building members S..S+R-1 left the GPU's generator at S+R-1, not the run's S
        torch.random.default_generator.manual_seed(seed)
        return cls(params, in_shape)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the items where ``mask`` holds; 0 (keeping the graph's dtype and device)
    when none does, so a batch without one kind of item adds nothing to a loss."""
    return values[mask].mean() if mask.any() else values.new_zeros(())
