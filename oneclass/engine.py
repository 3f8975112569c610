"""The training loop shared by the deep methods.

A method trains in named stages (e.g. autoencoder pretraining, then the one-class
objective). The engine owns everything around the loss: device, seeding, batches read
straight from the memory-mapped patch store, optional AMP, lr milestones, progress, one
JSON line per epoch in ``log.jsonl``, a checkpoint after every epoch, resuming, early
stopping on validation AUROC and a guard against non-finite losses.

Resuming is exact: the batch order of an epoch is drawn from (seed, stage, epoch), and
the checkpoint holds modules, optimizer, scheduler, scaler and torch RNG states, so an
interrupted run that is resumed ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from oneclass.artifacts import CHECKPOINT, save_torch
from oneclass.errors import OneclassError



class TrainingDiverged(OneclassError):
    pass


@dataclass
class PatchData:
    """Rows of a patch store's image array; ``roles`` (training) or ``labels`` (validation)."""

    images: np.ndarray  # (N, C, H, W) uint8, usually a memmap
    rows: np.ndarray
    roles: np.ndarray | None = None
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, keep: np.ndarray) -> "PatchData":
        pick = lambda a: None if a is None else a[keep]  # noqa: E731
        return PatchData(self.images, self.rows[keep], pick(self.roles), pick(self.labels))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise OneclassError(f"train.device: unknown device {name!r} (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OneclassError(f"train.device: {name!r} asked, but no CUDA device is available")
    return device


def seed_everything(seed: int, deterministic: bool) -> None:
    """One seed for Python, NumPy and torch; cuDNN in its deterministic mode."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    deterministic_mode(deterministic)


def deterministic_mode(deterministic: bool) -> None:
    """cuDNN without autotuning, in its deterministic mode; with ``deterministic``, torch's
    deterministic algorithms too. Touches no random number generator."""
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)


@contextmanager
def keep_global_rng() -> Iterator[None]:
    """Put the global Python, NumPy and torch generators (and CUDA's, where CUDA is
    already initialised) back as they were on leaving the block.

    Building a method draws its initial weights from torch's global generator; wrap a
    build whose weights are about to be replaced by loaded ones (scoring a finished run)
    so that loading leaves a caller's random state alone."""
    python, numpy = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(python)
            np.random.set_state(numpy)


class Engine:
    def __init__(self, train, seed: int, run_dir: Path | None = None, resume: bool = False,
                 val: PatchData | None = None, report: Callable[[dict], None] | None = None,
                 seed_global: bool = True):
        """``seed_global`` (training): seed the global generators now, before the method
        built on this engine draws its initial weights, so that a recipe and a seed give
        the same weights. An engine for scoring a finished run (``seed_global=False``)
        leaves them alone; batch order never depends on them (it is drawn from ``seed``)."""
        self.cfg = train
        self.seed = seed
        self.device = resolve_device(train.device)
        self.amp = bool(train.amp) and self.device.type == "cuda"
        self.run_dir = run_dir
        self.val = val
        self.report = report or (lambda record: None)
        self.modules: dict[str, torch.nn.Module] = {}
        self.stages_done: list[str] = []
        self.throughput: list[float] = []
        self._resume = self._load_checkpoint() if resume else None
        if seed_global:
            seed_everything(seed, train.deterministic)
        else:
            deterministic_mode(train.deterministic)

    # -- modules and checkpoints -------------------------------------------------

    def track(self, name: str, module: torch.nn.Module) -> torch.nn.Module:
        """Put a module on the device and into every checkpoint."""
        self.modules[name] = module.to(self.device)
        return module

    @property
    def resuming(self) -> bool:
        """True until the checkpoint being resumed has been caught up with."""
        return self._resume is not None

    def snapshot(self) -> dict:
        """A copy of every tracked module's state, for :meth:`restore`."""
        return {"modules": {k: copy.deepcopy(m.state_dict()) for k, m in self.modules.items()}}

    def restore(self, state: dict) -> None:
        for key, module in self.modules.items():
            if key in state["modules"]:
                module.load_state_dict(state["modules"][key])

    def _load_checkpoint(self) -> dict:
        path = self.run_dir / CHECKPOINT
        if not path.is_file():
            raise OneclassError(f"{self.run_dir}: nothing to resume (no {CHECKPOINT})")
        return torch.load(path, map_location="cpu", weights_only=True)

    def _save_checkpoint(self, stage: str, epoch: int, optimizer, scheduler, scaler, best) -> None:
        if self.run_dir is None:
            return
        state = {"stage": stage, "epoch": epoch, "stages_done": list(self.stages_done),
                 "modules": {k: m.state_dict() for k, m in self.modules.items()},
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "scaler": scaler.state_dict(), "best": best, "throughput": list(self.throughput),
                 "rng": {"torch": torch.get_rng_state(),
                         "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}}
        save_torch(self.run_dir / CHECKPOINT, state)

    def log(self, record: dict) -> None:
        if self.run_dir is not None:
            with open(self.run_dir / "log.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")
        self.report(record)

    # -- batches -------------------------------------------------------------------

    def batches(self, data: PatchData, shuffle_key: tuple | None = None,
                batch_size: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Batches in store order, or shuffled by a generator seeded from ``shuffle_key``.
        ``x`` is float in [0, 1] on the device; ``roles``/``labels`` come along."""
        size = batch_size or self.cfg.batch_size
        order = np.arange(len(data))
        if shuffle_key is not None:
            order = np.random.default_rng([self.seed, *shuffle_key]).permutation(len(data))
        for start in range(0, len(order), size):
            take = np.sort(order[start:start + size])  # sorted rows read the memmap forwards
            pixels = torch.from_numpy(np.ascontiguousarray(data.images[data.rows[take]]))
            if self.device.type == "cuda":
                pixels = pixels.pin_memory()
            batch = {"x": pixels.to(self.device, non_blocking=True).float().div_(255)}
            for key in ("roles", "labels"):
                values = getattr(data, key)
                if values is not None:
                    batch[key] = torch.from_numpy(np.asarray(values[take])).to(self.device)
            yield batch

    @torch.no_grad()
    def map(self, fn: Callable[[torch.Tensor], torch.Tensor], data: PatchData) -> np.ndarray:
        """Apply ``fn`` to every batch in eval mode; outputs concatenated in row order."""
        for module in self.modules.values():
            module.eval()
        out = []
        for batch in self.batches(data, batch_size=max(self.cfg.batch_size, 256)):
            with self._autocast():
                out.append(fn(batch["x"]).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0,), dtype=np.float32)

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.float16, enabled=self.amp)

    # -- the loop ------------------------------------------------------------------

    def stage(self, name: str, data: PatchData, loss_fn: Callable[[dict], torch.Tensor],
              params, epochs: int, lr: float, weight_decay: float,
              on_start: Callable[[], None] | None = None,
              scorer: Callable[[torch.Tensor], torch.Tensor] | None = None,
              steps: int | None = None, epoch_stats: Callable[[], dict] | None = None) -> None:
        """Train ``params`` for ``epochs`` on ``data``, minimising the batch mean
        ``loss_fn(batch)``. ``on_start`` runs when the stage begins afresh (not when it is
        resumed). With ``scorer`` and a validation set, validation AUROC is logged each
        epoch and drives early stopping when configured. ``steps`` counts optimizer steps
        instead (``epochs`` is then ignored; the last epoch may be partial).
        ``epoch_stats()`` adds its entries to each epoch's log line."""
        params = list(params)
        per_epoch = max(1, math.ceil(len(data) / self.cfg.batch_size))
        if steps is not None:
            epochs = math.ceil(steps / per_epoch)
        optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        # step after the optimizer (NOTES.md: the reference stepped it before)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, self.cfg.lr_milestones, 0.1)
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        start, best = 0, None
        resume = self._resume
        if resume is not None:
            self.restore(resume)
            if name in resume["stages_done"]:
                self.stages_done.append(name)
                return
            self._resume = None
            torch.set_rng_state(resume["rng"]["torch"])
            if resume["rng"]["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(resume["rng"]["cuda"])
            self.throughput = list(resume["throughput"])
            if resume["stage"] == name:
                start, best = resume["epoch"], resume["best"]
                optimizer.load_state_dict(resume["optimizer"])
                scheduler.load_state_dict(resume["scheduler"])
                scaler.load_state_dict(resume["scaler"])
        if start == 0 and on_start is not None:
            on_start()
        patience = self.cfg.early_stopping
        stage_index = len(self.stages_done)
        for epoch in range(start, epochs):
            for module in self.modules.values():
                module.train()
            began, total, seen = time.perf_counter(), 0.0, 0
            for step, batch in enumerate(self.batches(data, shuffle_key=(stage_index, epoch))):
                if steps is not None and epoch * per_epoch + step >= steps:
                    break
                with self._autocast():
                    loss = loss_fn(batch)
                if not torch.isfinite(loss):
                    where = f" at {self.run_dir / CHECKPOINT}" if self.run_dir and epoch else ""
                    kept = f"; the last good checkpoint (epoch {epoch}) is kept{where}" if epoch else ""
                    raise TrainingDiverged(f"stage {name}, epoch {epoch + 1}: the loss became "
                                           f"{loss.item()} (lower train.lr?){kept}")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                n = len(batch["x"])
                total += loss.item() * n
                seen += n
                self.report({"event": "batch", "stage": name, "epoch": epoch + 1, "epochs": epochs,
                             "done": seen, "total": len(data)})
            scheduler.step()
            seconds = time.perf_counter() - began
            self.throughput.append(seen / seconds if seconds > 0 else 0.0)
            record = {"stage": name, "epoch": epoch + 1, "epochs": epochs, "loss": total / max(seen, 1),
                      "lr": optimizer.param_groups[0]["lr"], "seconds": round(seconds, 3),
                      "patches_per_s": round(self.throughput[-1], 1)}
            if epoch_stats is not None:
                record.update(epoch_stats())
            stop = False
            if scorer is not None and self.val is not None:
                record["val_auroc"] = self.val_auroc(scorer)
                if patience:
                    if best is None or record["val_auroc"] > best["auroc"]:
                        best = {"auroc": record["val_auroc"], "epoch": epoch + 1, **self.snapshot()}
                    stop = epoch + 1 - best["epoch"] >= patience
            self._save_checkpoint(name, epoch + 1, optimizer, scheduler, scaler, best)
            self.log(record)
            if stop:
                self.log({"stage": name, "early_stop": epoch + 1, "best_epoch": best["epoch"],
                          "val_auroc": best["auroc"]})
                break
        if best is not None:
            self.restore(best)
        self.stages_done.append(name)
        self._save_checkpoint(name, epochs, optimizer, scheduler, scaler, None)

    def val_auroc(self, scorer) -> float:
        from sklearn.metrics import roc_auc_score

        scores = self.map(scorer, self.val)
        if not np.isfinite(scores).all():
            return float("nan")
        return float(roc_auc_score(self.val.labels, scores))
