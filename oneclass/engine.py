"""The trainer shared by the deep methods.

A method owns its networks (:class:`oneclass.methods.base.Method`) and trains in named
stages (e.g. autoencoder pretraining, then the one-class objective), each described by a
:class:`Stage` spec: what is trained, with which optimizer, learning rates, schedule,
gradient clipping, frozen modules and frozen batch-norm statistics, for how many epochs
or steps. The trainer owns everything around the loss: device, seeding, batches read
straight from the memory-mapped patch store (on CUDA the next one read and pinned in a
thread), optional AMP, channels-last memory order and torch.compile (:mod:`oneclass.compiled`),
progress, one JSON line per epoch in ``log.jsonl``, a checkpoint after every epoch, resuming, early stopping on
validation AUROC or the validation normals' mean score, a guard against non-finite losses and, under torchrun, data-parallel
training (:mod:`oneclass.distributed`), for every stage alike.

Resuming is exact: the batch order of an epoch is drawn from (seed, stage, epoch), and
the checkpoint holds modules, optimizer, scheduler, scaler and torch RNG states, so an
interrupted run that is resumed ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal

import numpy as np
import torch

from oneclass import distributed
from oneclass.artifacts import CHECKPOINT, load_torch, save_torch
from oneclass.compiled import compiled_loss
from oneclass.compiled import resolve as resolve_compile
from oneclass.data.items import LABELED_ANOMALY, PatchData
from oneclass.errors import OneclassError



class TrainingDiverged(OneclassError):
    pass


def resolve_device(name: str, key: str = "train.device") -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``; errors name ``key``."""
    ranked = distributed.device_for(name, key)
    if ranked is not None:
        return ranked
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise OneclassError(f"{key}: unknown device {name!r} (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OneclassError(f"{key}: {name!r} asked, but no CUDA device is available")
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
    # switched off too: a select grid over train.deterministic fits both in one process
    torch.use_deterministic_algorithms(deterministic)


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


@dataclass
class Stage:
    """One stage of a method's training. ``params`` is a list of parameters, or of
    parameter groups (``{"params": [...], "lr": 1e-4}``) with their own settings."""

    name: str
    params: list
    lr: float
    epochs: int = 1
    steps: int | None = None  # optimizer steps instead of epochs (the last epoch may be partial)
    # counted in epochs, an epoch is at least this many batches (passes repeated, reshuffled):
    # a few hundred items would otherwise give a stage a handful of updates (train.min_epoch_steps)
    min_epoch_steps: int = 0
    weight_decay: float = 0.0
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: float = 0.9  # sgd only
    schedule: Literal["multistep", "step", "cosine", "constant"] = "multistep"
    milestones: tuple[int, ...] = ()  # multistep: epochs after which lr is multiplied by lr_factor
    step_size: int = 1  # step: every step_size epochs (optimizer steps with schedule_per: step)
    schedule_per: Literal["epoch", "step"] = "epoch"  # what the schedule counts
    t_max: int | None = None  # cosine: epochs of a half period (default: the stage's epochs)
    lr_factor: float = 0.1
    clip: float | None = None  # the gradients' global norm is clipped to this
    frozen: tuple[str, ...] = ()  # method modules held fixed: no gradients, eval mode
    frozen_bn: tuple[str, ...] = ()  # method modules whose batch-norm statistics stay fixed
    batch_size: int | None = None  # default: the trainer's (train.batch_size)
    # shuffled: every item once an epoch. balanced: every batch holds anomalies_per_batch
    # labelled anomalies drawn with replacement, the rest of it the other items, each once
    # an epoch (DevNet's 24 + 24 when anomalies are few)
    sampler: Literal["shuffled", "balanced"] = "shuffled"
    anomalies_per_batch: int = 0
    augment: tuple[str, ...] = ()  # oneclass.augment specs, applied to training batches on the device
    keep: Literal["last", "best"] | None = None  # the epoch the stage ends with; None: train.keep

    def make_optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(self.params, lr=self.lr, momentum=self.momentum,
                                   weight_decay=self.weight_decay)
        kind = torch.optim.AdamW if self.optimizer == "adamw" else torch.optim.Adam
        return kind(self.params, lr=self.lr, weight_decay=self.weight_decay)

    def make_schedule(self, optimizer, epochs: int):
        """Stepped once per epoch, after the optimizer (NOTES.md: the reference stepped it
        before)."""
        lr = torch.optim.lr_scheduler
        if self.schedule == "step":
            return lr.StepLR(optimizer, self.step_size, self.lr_factor)
        if self.schedule == "cosine":
            return lr.CosineAnnealingLR(optimizer, self.t_max or max(epochs, 1))
        milestones = list(self.milestones) if self.schedule == "multistep" else []
        return lr.MultiStepLR(optimizer, milestones, self.lr_factor)


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def _restore_cuda_rng(rng: dict, device: torch.device) -> None:
    """The training device's CUDA generator as the checkpoint saved it (older checkpoints
    hold every visible GPU's, by index)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return
    if rng.get("cuda_device") is not None:
        torch.cuda.set_rng_state(rng["cuda_device"], device)
    elif (device.index or 0) < len(rng.get("cuda") or []):
        torch.cuda.set_rng_state(rng["cuda"][device.index or 0], device)


CHECKPOINT_KEYS = ("stage", "epoch", "stages_done", "modules", "optimizer", "scheduler", "scaler", "rng",
                   "throughput")


class Trainer:
    """Runs a method's stages. Building one for training seeds Python, NumPy and torch
    from ``seed``; scoring a finished run needs no trainer and touches no global state."""

    def __init__(self, train, seed: int, run_dir: Path | None = None, resume: bool = False,
                 val: PatchData | None = None, report: Callable[[dict], None] | None = None):
        self.cfg = train
        self.seed = seed
        self.device = resolve_device(train.device)
        self.amp = bool(train.amp) and self.device.type == "cuda"
        self.channels_last = bool(train.channels_last)
        self.prefetch = train.prefetch is True or (train.prefetch == "auto" and self.device.type == "cuda")
        self.compile, self.compile_skipped = resolve_compile(train.compile, self.device)
        self.run_dir = run_dir
        self.val = val
        self.report = report or (lambda record: None)
        self.method = None
        self.stages_done: list[str] = []
        self.throughput: list[float] = []
        self.selected: dict[str, dict] = {}  # stage -> the epoch kept on validation (train.monitor)
        self._member: int | None = None
        self.dropped_members: list[int] = []  # ensemble members that diverged (oneclass.ensemble)
        # whether the validation set decided anything in training (an epoch kept, a stop, a
        # method's choice): where not, fits that differ only in it train one model
        self.val_decides = False
        self._resume = self._load_checkpoint() if resume else None
        # seconds training took before the run was interrupted, and when this part began
        self.seconds_before = float(self._resume.get("seconds", 0.0)) if self._resume else 0.0
        self.began = time.perf_counter()
        if self._resume is not None:
            self._cut_log(self._resume.get("log_bytes"))
        seed_everything(seed, train.deterministic)

    @property
    def seconds(self) -> float:
        """Seconds of training, the interrupted parts' included."""
        return self.seconds_before + time.perf_counter() - self.began

    def _cut_log(self, size: int | None) -> None:
        """log.jsonl as it was at the checkpoint: lines written after it (an epoch cut short
        before its checkpoint, a stage's last lines) are written again as the run goes on."""
        path = None if self.run_dir is None else self.run_dir / "log.jsonl"
        if size is None or path is None or not distributed.is_writer() or not path.is_file():
            return
        if path.stat().st_size > size:
            with open(path, "r+b") as fh:
                fh.truncate(size)

    def spec(self, name: str, params, **settings) -> Stage:
        """A stage with the train section's lr, epochs, weight decay and milestones,
        unless ``settings`` give others."""
        cfg = self.cfg
        base = {"lr": cfg.lr, "epochs": cfg.epochs, "weight_decay": cfg.weight_decay,
                "milestones": tuple(cfg.lr_milestones), "min_epoch_steps": cfg.min_epoch_steps}
        if self._member is not None:  # an ensemble member's stage and module names
            name = f"m{self._member}/{name}"
            for key in ("frozen", "frozen_bn"):
                settings[key] = tuple(f"m{self._member}.{module}" for module in settings.get(key, ()))
        return Stage(name, list(params), **{**base, **settings})

    @property
    def training_member(self) -> int | None:
        """The ensemble member whose stages are being trained, or None."""
        return self._member

    @contextmanager
    def member(self, index: int):
        """Inside: the stages being specified are ensemble member ``index``'s, named
        ``m<index>/<stage>``, its modules ``m<index>.<module>`` (:mod:`oneclass.ensemble`)."""
        self._member = index
        try:
            yield
        finally:
            self._member = None

    def dropped_before(self, index: int) -> bool:
        """Whether ensemble member ``index`` diverged in the run being resumed. If so, its
        stages that finished there count as done here too: batch orders are drawn from
        the number of stages done."""
        if self._resume is None or index not in self._resume.get("dropped_members", []):
            return False
        self.dropped_members.append(index)
        self.stages_done += [name for name in self._resume["stages_done"] if name.startswith(f"m{index}/")]
        return True

    def attach(self, method) -> None:
        """Train ``method``: its modules go to the trainer's device and into checkpoints."""
        self.method = method
        method.to(self.device, self.amp, self.channels_last)

    @property
    def modules(self) -> dict[str, torch.nn.Module]:
        return self.method.modules

    @property
    def resuming(self) -> bool:
        """True until the checkpoint being resumed has been caught up with."""
        return self._resume is not None

    def _load_checkpoint(self) -> dict:
        path = self.run_dir / CHECKPOINT
        if not path.is_file():
            raise OneclassError(f"{self.run_dir}: nothing to resume (no {CHECKPOINT})")
        return load_torch(path, "checkpoint", CHECKPOINT_KEYS)

    def _save_checkpoint(self, stage: str, epoch: int, optimizer, scheduler, scaler, best) -> None:
        if self.run_dir is None or not distributed.is_writer():
            return
        state = {"stage": stage, "epoch": epoch, "stages_done": list(self.stages_done),
                 "modules": {k: m.state_dict() for k, m in self.modules.items()},
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "scaler": scaler.state_dict(), "best": best, "throughput": list(self.throughput),
                 "selected": dict(self.selected),
                 "dropped_members": list(self.dropped_members),
                 "seconds": self.seconds, "log_bytes": _size(self.run_dir / "log.jsonl"),
                 # the training device's generator alone: all visible GPUs' would not restore
                 # where fewer are visible, and a CPU run would start CUDA to read them
                 "rng": {"torch": torch.get_rng_state(),
                         "cuda_device": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda"
                         else None}}
        save_torch(self.run_dir / CHECKPOINT, state)

    def log(self, record: dict) -> None:
        if self.run_dir is not None and distributed.is_writer():
            with open(self.run_dir / "log.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")
        self.report(record)

    # -- batches -------------------------------------------------------------------

    def batches(self, data: PatchData, shuffle_key: tuple, spec: Stage) -> Iterator[dict[str, torch.Tensor]]:
        """An epoch's batches as ``spec`` samples them, drawn by a generator seeded from
        ``shuffle_key``. ``x`` is float in [0, 1] on the device (channels-last where the
        recipe asks); ``roles``/``labels`` come along. With ``train.prefetch`` (by default
        on CUDA) the next batch is read from the store (and pinned, on CUDA) in a thread
        while this one trains. Under torchrun, each rank gets its share of every batch
        (:mod:`oneclass.distributed`)."""
        from oneclass.methods.base import host_pixels, to_device

        def read(take: np.ndarray) -> dict[str, torch.Tensor]:
            pin = self.device.type == "cuda"
            batch = {"x": host_pixels(data, take, pin)}
            for key in ("roles", "labels"):
                values = getattr(data, key)
                if values is not None:
                    batch[key] = torch.from_numpy(np.asarray(values[take]))
            return batch

        rows = _batch_rows(data, spec, spec.batch_size or self.cfg.batch_size,
                           np.random.default_rng([self.seed, *shuffle_key]))
        group = distributed.current()
        if group is not None:
            rows = _dealt(rows, group.rank, group.size)
        host = (read(take) for take in rows)
        for batch in _one_ahead(host) if self.prefetch else host:
            batch["x"] = to_device(batch["x"], self.device, self.channels_last)
            for key in ("roles", "labels"):
                if key in batch:
                    batch[key] = batch[key].to(self.device, non_blocking=True)
            yield batch

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.float16, enabled=self.amp)

    # -- the loop ------------------------------------------------------------------

    def stage(self, spec: Stage, data: PatchData, loss_fn: Callable[[dict], torch.Tensor],
              on_start: Callable[[], None] | None = None,
              scorer: Callable[[torch.Tensor], torch.Tensor] | None = None,
              epoch_stats: Callable[[], dict] | None = None) -> None:
        """Train as ``spec`` says, minimising the batch mean ``loss_fn(batch)``.
        ``on_start`` runs when the stage begins afresh (not when it is resumed). With
        ``scorer`` and a validation set, validation AUROC (and under ``train.monitor:
        normal_score`` the validation normals' mean score) is logged each epoch, and the
        monitored one drives early stopping and ``keep: best`` when configured. ``epoch_stats()`` adds its entries to each
        epoch's log line."""
        from oneclass.augment import parse_augment
        from oneclass.heap import steady_heap

        if self.device.type == "cpu":
            steady_heap()  # activations and gradients reuse the heap, step after step
        name, steps = spec.name, spec.steps
        per_epoch = max(1, _batches_per_epoch(data, spec, spec.batch_size or self.cfg.batch_size, name))
        augment = parse_augment(list(spec.augment), f"stage {name}: augment")
        if self.compile:
            loss_fn = compiled_loss(loss_fn, name)
        epochs = math.ceil(steps / per_epoch) if steps is not None else spec.epochs
        optimizer = spec.make_optimizer()
        scheduler = spec.make_schedule(optimizer, epochs)
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        trained = [p for group in optimizer.param_groups for p in group["params"]]
        start, best = 0, None
        resume = self._resume
        if resume is not None:
            # The checkpoint's modules belong to a finished stage or to the one it was
            # written in; a stage after those starts from what the method's code between
            # stages made of them (e.g. encoder weights copied from a pretrained
            # autoencoder), so restoring there would undo that work.
            at_checkpoint = resume["stage"] == name
            done = name in resume["stages_done"]
            if done or at_checkpoint:
                try:
                    self.method.restore(resume)
                except (RuntimeError, KeyError):
                    raise OneclassError(f"{self.run_dir / CHECKPOINT}: the checkpoint does not fit this run's "
                                        f"method (another run's file?); start again with --overwrite") from None
            if done and not at_checkpoint:
                self.stages_done.append(name)
                return
            self._resume = None  # caught up: what follows runs as the interrupted run did
            torch.set_rng_state(resume["rng"]["torch"])
            _restore_cuda_rng(resume["rng"], self.device)
            self.throughput = list(resume["throughput"])
            self.selected = dict(resume.get("selected", {}))
            if done:  # the last stage finished before the interruption
                self.stages_done.append(name)
                return
            if at_checkpoint:
                start, best = resume["epoch"], resume["best"]
                optimizer.load_state_dict(resume["optimizer"])
                scheduler.load_state_dict(resume["scheduler"])
                if getattr(scheduler, "step_size", spec.step_size) != spec.step_size:  # saved with it
                    raise OneclassError(f"{self.run_dir / CHECKPOINT}: its learning-rate schedule falls every "
                                        f"{scheduler.step_size}, this version's every {spec.step_size} (written "
                                        f"by an older oneclass?); start again with --overwrite")
                if resume["scaler"]:  # empty where it was written without AMP (on a CPU)
                    scaler.load_state_dict(resume["scaler"])
        if start == 0 and on_start is not None:
            on_start()
        patience, monitor = self.cfg.early_stopping, self.cfg.monitor
        track_best = bool(patience) or (spec.keep or self.cfg.keep) == "best"
        if track_best and scorer is not None and self.val is not None:
            self.val_decides = True
        if patience and best is not None and start - best["epoch"] >= patience:
            start = epochs  # the interrupted run had stopped early at its checkpoint's epoch
        stage_index = len(self.stages_done)
        with _frozen([self.modules[k] for k in spec.frozen]):
            # wrapped after on_start, whose work (a centre, a codebook) the wrapper then
            # takes from rank 0
            step_loss = loss_fn if distributed.current() is None else \
                distributed.wrapped(self.modules, trained, self.device, loss_fn)
            for epoch in range(start, epochs):
                self._train_mode(spec)
                began, total, seen = time.perf_counter(), 0.0, 0
                for step, batch in enumerate(self.batches(data, (stage_index, epoch), spec)):
                    if steps is not None and epoch * per_epoch + step >= steps:
                        break
                    batch["x"] = augment(batch["x"])
                    with self._autocast():
                        loss = step_loss(batch)
                    batch_loss, n = self._batch_loss(loss, len(batch["x"]))
                    if not torch.isfinite(batch_loss):
                        where = f" at {self.run_dir / CHECKPOINT}" if self.run_dir and epoch else ""
                        kept = f"; the last good checkpoint (epoch {epoch}) is kept{where}" if epoch else ""
                        raise TrainingDiverged(f"stage {name}, epoch {epoch + 1}: the loss became "
                                               f"{batch_loss.item()} (lower train.lr?){kept}")
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if spec.clip is not None:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(trained, spec.clip)
                    scaler.step(optimizer)
                    scaler.update()
                    if spec.schedule_per == "step":
                        scheduler.step()
                    total += batch_loss.item() * n
                    seen += n
                    self.report({"event": "batch", "stage": name, "epoch": epoch + 1, "epochs": epochs,
                                 "done": step + 1, "total": per_epoch, "unit": "batches"})
                if spec.schedule_per == "epoch":
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
                    record.update(self._val_figures(scorer))  # logged; decides only as above
                    value = record[f"val_{monitor}"]
                    if track_best and (best is None or _better(value, best[monitor], monitor == "normal_score")):
                        best = {monitor: value, "epoch": epoch + 1, **self.method.snapshot()}
                    stop = bool(patience) and epoch + 1 - best["epoch"] >= patience
                # the lines first: the checkpoint records the log's length, and a resumed
                # run cuts the log back to it (no line lost or written twice)
                self.log(record)
                if stop:
                    self.log({"stage": name, "early_stop": epoch + 1, "best_epoch": best["epoch"],
                              f"val_{monitor}": best[monitor]})
                self._save_checkpoint(name, epoch + 1, optimizer, scheduler, scaler, best)
                if stop:
                    break
        if best is not None:
            self.method.restore(best)
            self.selected[name] = {"epoch": best["epoch"], "of": epochs, f"val_{monitor}": best[monitor]}
            self.log({"stage": name, "kept_epoch": best["epoch"], f"val_{monitor}": best[monitor]})
        self.stages_done.append(name)
        self._save_checkpoint(name, epochs, optimizer, scheduler, scaler, None)

    @staticmethod
    def _batch_loss(loss: torch.Tensor, n: int) -> tuple[torch.Tensor, int]:
        """The loss and size of the whole batch: this process's, or under torchrun the
        mean over every rank's share (so that all ranks see the same value, and stop
        together where it is not finite)."""
        if distributed.current() is None:
            return loss, n
        total = distributed.summed(torch.stack([loss.detach().float() * n,
                                                torch.tensor(float(n), device=loss.device)]))
        return total[0] / total[1], int(total[1].item())

    def _train_mode(self, spec: Stage) -> None:
        for name, module in self.modules.items():
            module.train(name not in spec.frozen)
            if name in spec.frozen_bn:
                for layer in module.modules():
                    if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
                        layer.eval()

    def val_auroc(self, scorer) -> float:
        """The validation AUROC, for a method choosing by it (``val_decides``)."""
        self.val_decides = True
        return self._val_auroc(scorer)

    def _val_auroc(self, scorer) -> float:
        return _auroc(self.val.labels, self.method.map(scorer, self.val))

    def _val_figures(self, scorer) -> dict[str, float]:
        """What an epoch logs of the validation set: its AUROC and, where train.monitor
        says so, the mean score of its normals (NaN where a score is not finite)."""
        if self.cfg.monitor == "auroc":
            return {"val_auroc": self._val_auroc(scorer)}
        scores = self.method.map(scorer, self.val)
        normal = scores[self.val.labels == 0]
        mean = float(normal.mean()) if len(normal) and np.isfinite(normal).all() else float("nan")
        return {"val_auroc": _auroc(self.val.labels, scores), "val_normal_score": mean}


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if np.isfinite(scores).all() else float("nan")


def _better(value: float, best: float, lower: bool = False) -> bool:
    """A validation figure better than the best so far (above it, or below where
    ``lower``); one that could not be computed (NaN: the scores were not finite) is never
    better, and any number beats it."""
    return not math.isnan(value) and (math.isnan(best) or (value < best if lower else value > best))


def _batches_per_epoch(data: PatchData, spec: Stage, size: int, name: str) -> int:
    return max(_batches_per_pass(data, spec, size, name), _epoch_floor(spec))


def _epoch_floor(spec: Stage) -> int:
    """The fewest batches an epoch holds: ``min_epoch_steps`` where the stage counts epochs."""
    return spec.min_epoch_steps if spec.steps is None else 0


def _batches_per_pass(data: PatchData, spec: Stage, size: int, name: str) -> int:
    if spec.sampler == "shuffled":
        return math.ceil(len(data) / size)
    anomalies = int((data.roles == LABELED_ANOMALY).sum()) if data.roles is not None else 0
    if not anomalies:
        raise OneclassError(f"stage {name}: the balanced sampler needs labelled anomalies in the "
                            f"training set (split.gamma > 0 or split.labeled_anomalies)")
    if not 0 < spec.anomalies_per_batch < size:
        raise OneclassError(f"stage {name}: anomalies_per_batch must lie in 1..{size - 1} (the batch "
                            f"size is {size}), got {spec.anomalies_per_batch}")
    return math.ceil((len(data) - anomalies) / (size - spec.anomalies_per_batch))


def _batch_rows(data: PatchData, spec: Stage, size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Positions in ``data`` of each batch, sorted (the memmap is read forwards). Where one
    pass is fewer batches than the epoch's floor, the epoch is that many full batches cut
    from passes in new random orders one after another (an item may then sit twice in a
    batch: one that straddles two passes, or any where the set is smaller than a batch)."""
    floor = _epoch_floor(spec)
    if spec.sampler == "shuffled":
        order = _epoch_order(rng, np.arange(len(data)), size, floor)
        for start in range(0, len(order), size):
            yield np.sort(order[start:start + size])
        return
    anomalies = np.flatnonzero(data.roles == LABELED_ANOMALY)
    step = size - spec.anomalies_per_batch
    others = _epoch_order(rng, np.flatnonzero(data.roles != LABELED_ANOMALY), step, floor)
    for start in range(0, len(others), step):
        drawn = rng.choice(anomalies, spec.anomalies_per_batch, replace=True)
        yield np.sort(np.concatenate([others[start:start + step], drawn]))


def _epoch_order(rng: np.random.Generator, items: np.ndarray, size: int, floor: int) -> np.ndarray:
    """An epoch's ``items`` in batches of ``size``: one pass in a random order, or where
    that is fewer than ``floor`` batches, the first ``floor`` x ``size`` of passes one
    after another, each in a new random order."""
    if math.ceil(len(items) / size) >= floor or not len(items):
        return rng.permutation(items)
    count = floor * size
    return np.concatenate([rng.permutation(items) for _ in range(math.ceil(count / len(items)))])[:count]


def _dealt(batches: Iterator[np.ndarray], rank: int, size: int) -> Iterator[np.ndarray]:
    """Rank ``rank``'s share of each batch: items rank, rank + size, ... A batch too small
    to give every rank two items (at most an epoch's last) is left out on all ranks alike:
    a share of one item fails in batch norm over features."""
    for rows in batches:
        if len(rows) >= 2 * size:
            yield rows[rank::size]


def _one_ahead(items: Iterator[dict]) -> Iterator[dict]:
    """``items`` produced one ahead in a thread: the next batch is read while the caller
    trains on this one. Leaving early waits for the one batch in flight."""
    from concurrent.futures import ThreadPoolExecutor

    done = object()
    with ThreadPoolExecutor(1, thread_name_prefix="oneclass-batches") as pool:
        pending = pool.submit(next, items, done)
        while True:
            item = pending.result()
            if item is done:
                return
            pending = pool.submit(next, items, done)
            yield item


@contextmanager
def _frozen(modules: list[torch.nn.Module]) -> Iterator[None]:
    """No gradients for these modules' parameters inside the block; restored after."""
    held = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    for parameter, _ in held:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in held:
            parameter.requires_grad_(flag)
