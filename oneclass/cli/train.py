"""``oneclass train``: a recipe → one or more run folders."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from oneclass import recipe as recipes
from oneclass.cli.common import SET
from oneclass.cli.console import err
from oneclass.errors import OneclassError


def train(
    recipe: Path = typer.Argument(..., help="A YAML recipe (see recipes/)."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Run folder; with --repeats, the folder of seed-S runs. "
        "[default: runs/RECIPE-METHOD-gammaG-seedS, shotsN for split.labeled_anomalies, "
        "-ensembleR with --ensemble]"),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the (first) run. [default: the recipe's]"),
    repeats: int = typer.Option(1, "--repeats", "-r", min=1, help="Run seeds S, S+1, ..., S+R-1."),
    ensemble: bool = typer.Option(False, "--ensemble", help="With --repeats R: one run whose model "
                                  "is the ensemble of the R seeds' models, trained on one split and "
                                  "scored by their mean validation-standardised score (train.ensemble=R)."),
    store: Optional[Path] = typer.Option(None, "--store", help="Use this patch store instead of "
                                         "extracting (or reusing the cached store of) the recipe's dataset."),
    resume: bool = typer.Option(False, "--resume", help="Continue the unfinished run(s) at --out "
                                "from their last checkpoint; with --repeats, seeds already finished are "
                                "listed and seeds not begun are trained."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing run folders."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (train.device)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Nothing on stderr but errors."),
    set_: Optional[list[str]] = SET,
) -> None:
    """Train a recipe's method and write a run folder.

    The recipe's dataset is cut into patches once and the store cached (see Environment,
    ONECLASS_CACHE); --store uses a store cut as the recipe says instead. The store is
    split into training, validation and test sets, the method fitted and the sets scored.
    A run folder (see Files) is built as OUT.partial and renamed when complete. Each run
    folder's path is printed on stdout, one per line, so `run=$(oneclass train r.yaml)`
    works; progress goes to stderr.

    A recipe's select: section (grid of method.* and train.* values, folds, metric)
    first trains every grid point on the training set and scores it on held-out folds of
    the validation set; the point with the best mean is then trained as the run, and the
    figures are kept in select.json. Test items are not used to choose.

    Under torchrun (torchrun --nproc_per_node=N -m oneclass train RECIPE) the run trains
    data-parallel: each batch is dealt out to the N processes and their gradients
    averaged, validation and scoring split the items among them (none padded or dropped),
    and rank 0 alone writes the run folder; it resumes under any N.
    """
    values = {"train.device": device} if device else {}
    if ensemble:
        if repeats < 2:
            raise OneclassError("--ensemble: needs --repeats R with R >= 2 (the ensemble's members)")
        values["train.ensemble"], repeats = repeats, 1
    config = recipes.load(recipe, set_ or [], values, {"train.device": "--device",
                                                        "train.ensemble": "--repeats/--ensemble"})
    from oneclass.sweep import set_twice

    clash = set_twice(config.select.grid, set_ or [], config.method.name)
    if clash:  # the grid's values would win without a word
        raise OneclassError(f"{config.where('select.grid')}: select.grid {clash[0]}: also set by --set "
                            f"{clash[1]!r}; drop one")
    from oneclass import distributed  # torch, which the module's import must not pull in

    with distributed.joined(config.train.device):
        _train_repeats(config, recipe, out, seed, repeats, store, resume, overwrite, device, ensemble,
                       quiet or not distributed.is_writer(), set_)


def _train_repeats(config, recipe: Path, out: Path | None, seed: int | None, repeats: int, store: Path | None,
                   resume: bool, overwrite: bool, device: str | None, ensemble: bool, quiet: bool,
                   set_: list[str] | None) -> None:
    from oneclass import distributed
    from oneclass.artifacts import PARTIAL
    from oneclass.data.store import PatchStore
    from oneclass.training import check_same_recipe, train_run

    first = config.seed if seed is None else seed
    recipes.check_seeds(first, repeats, "--seed" if seed is not None else f"{recipe}: seed")
    patch_store = PatchStore.open(store) if store else None
    for k in range(repeats):
        config.seed = first + k
        target = _run_path(config, recipe, out, repeats)
        shots = config.split.labeled_anomalies
        labels = f"{shots} labelled anomalies" if shots is not None else f"gamma {config.split.gamma}"
        members = config.train.ensemble
        seeds = f"seeds {config.seed}-{config.seed + members - 1} ensembled" if members > 1 else f"seed {config.seed}"
        header = f"[bold]run[/] {target} ({config.method.name}, {labels}, {seeds})"
        resume_this = resume
        if resume and repeats > 1:  # each seed as it stands: finished, unfinished or not begun
            resume_this = target.with_name(target.name + PARTIAL).exists()
            if not resume_this and target.is_dir():
                check_same_recipe(target, config, "this finished run", "choose another --out")
                if distributed.is_writer():
                    print(target, flush=True)  # finished before: listed, not trained again
                continue
        reporter = None if quiet else _Reporter(header)
        try:
            path = train_run(config, target, store=patch_store, resume=resume_this, overwrite=overwrite,
                             report=reporter)
        except KeyboardInterrupt:
            # the command that goes on: this seed resumed, then the later ones (with --repeats)
            again = ["--out", str(target.parent), "--seed", str(first), "--repeats", str(repeats)] if repeats > 1 else \
                ["--out", str(target), "--seed", str(config.seed)]
            _interrupted(target, [str(recipe), *again,
                                  *(["--store", str(store)] if store else []),
                                  *(["--device", device] if device else []),
                                  *(["--repeats", str(config.train.ensemble), "--ensemble"] if ensemble else []),
                                  *(f"--set={item}" for item in set_ or [])])
        finally:
            if reporter is not None:
                reporter.close()
        if not quiet:
            _summary(path)
        if distributed.is_writer():
            print(path, flush=True)


def _interrupted(target: Path, args: list[str]) -> None:
    """Ctrl-C: one line saying what is kept and the command that goes on, exit 130."""
    import shlex
    import signal
    import sys

    from oneclass import distributed
    from oneclass.artifacts import CHECKPOINT, PARTIAL
    from oneclass.select import SELECT_FILE, SELECT_PROGRESS

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while this one is handled: still 130
    if not distributed.is_writer():  # rank 0 says it
        raise SystemExit(130)
    partial = target.with_name(target.name + PARTIAL)
    again = shlex.join(["oneclass", "train", *args, "--resume"])
    if (partial / CHECKPOINT).is_file():
        print(f"oneclass: interrupted; the checkpoint is {partial / CHECKPOINT}; resume with: {again}",
              file=sys.stderr)
    elif (partial / SELECT_FILE).is_file():
        print(f"oneclass: interrupted; the hyperparameter selection is kept in {partial / SELECT_FILE}; "
              f"resume with: {again}", file=sys.stderr)
    elif (partial / SELECT_PROGRESS).is_file():
        print(f"oneclass: interrupted; the selection's finished fits are kept in {partial / SELECT_PROGRESS}; "
              f"resume with: {again}", file=sys.stderr)
    elif partial.is_dir():  # a resumed selection cut before its first fit: still the run to resume
        print(f"oneclass: interrupted; the unfinished run is kept in {partial}; resume with: {again}",
              file=sys.stderr)
    else:
        print("oneclass: interrupted before the first checkpoint; nothing was kept", file=sys.stderr)
    raise SystemExit(130)


def _run_path(config, recipe: Path, out: Path | None, repeats: int) -> Path:
    from oneclass.artifacts import named_folder

    if out is None:
        shots = config.split.labeled_anomalies
        labels = f"shots{shots}" if shots is not None else f"gamma{config.split.gamma:g}"
        members = f"-ensemble{config.train.ensemble}" if config.train.ensemble > 1 else ""
        out = Path("runs") / f"{recipe.stem}-{config.method.name}-{labels}"
        if repeats == 1:
            return out.with_name(f"{out.name}-seed{config.seed}{members}")
        out = out.with_name(out.name + members)  # an ensemble's repeats apart from one model's
    if repeats == 1:
        return named_folder(out)
    if out.exists() and not out.is_dir():
        raise OneclassError(f"{out}: not a folder (with --repeats, --out holds one run per seed)")
    return out / f"seed-{config.seed}"


class _Reporter:
    """Progress on stderr: a line per epoch, and on a terminal a bar within the epoch.
    The run's header line comes with its first event, so a request refused before any
    work leaves nothing but the error line."""

    def __init__(self, header: str):
        self.header = header
        self.bar = None
        self.task = None

    def __call__(self, event: dict) -> None:
        if self.header:
            err.print(self.header)
            self.header = None
        if event.get("event") == "batch":
            if err.is_terminal:
                self._advance(event)
            return
        _report(event)

    def _advance(self, event: dict) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        if self.bar is None:
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=err, transient=True)
            self.bar.start()
            self.task = self.bar.add_task("", total=event["total"])
        self.bar.update(self.task, completed=event["done"], total=event["total"],
                        description=f"{event['stage']} {event['epoch']}/{event['epochs']}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _report(event: dict) -> None:
    kind = event.get("event")
    if kind == "store":
        err.print(f"patch store {event['path']}" + (" (cached)" if event["cached"] else " (extracted)"))
    elif kind == "store_wait":
        err.print(f"patch store {event['path']}: another job is cutting it; waiting for it")
    elif kind == "split":
        c = event["counts"]
        t = c["train"]
        err.print(f"split: train {t['total']} = {t['unlabeled']} unlabelled ({t['polluting']} polluting) "
                  f"+ {t['labeled_normal']} labelled normal + {t['labeled_anomaly']} labelled anomalies "
                  f"(gamma {t['gamma']:.3f}, seen: {', '.join(event['seen_subclasses'])}); "
                  f"val {c['val']['normal']}+{c['val']['anomalous']}; "
                  f"test {c['test']['normal']}+{c['test']['anomalous']} (normal+anomalous); "
                  f"unused {c['unused']}")
    elif kind in ("select", "selected"):
        metric = next(k for k in ("auroc", "auprc") if k in event)
        value = "diverged" if event[metric] != event[metric] else f"{event[metric]:.4f}"
        where = f"fold {event['fold']}/{event['folds']}" if kind == "select" else "chosen, mean"
        err.print(f"  select {event['point']}: {where} {metric} {value}")
    elif "loss" in event:  # an epoch: its loss, then whatever else the method logged
        extra = "".join(f"  {_name(k)} {_value(v)}" for k, v in event.items() if k not in _EPOCH_KEYS)
        err.print(f"  {event['stage']} {event['epoch']}/{event['epochs']}  loss {event['loss']:.5g}{extra}"
                  f"  {event['patches_per_s']:.0f} patches/s")
    else:  # any other record (a skipped stage, a tuning step, an early stop): its fields
        fields = ", ".join(f"{_name(k)} {_value(v)}" for k, v in event.items() if k != "stage")
        err.print(f"  {event.get('stage', '')}: {fields}")


_EPOCH_KEYS = {"stage", "epoch", "epochs", "loss", "lr", "seconds", "patches_per_s"}


def _name(key: str) -> str:
    return key.replace("_auroc", " AUROC").replace("_", " ")


def _value(value) -> str:
    if isinstance(value, dict):
        return "(" + ", ".join(f"{_name(k)} {_value(v)}" for k, v in value.items()) + ")"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.4g}"
    return str(value)


def _summary(path: Path) -> None:
    import json

    metrics = json.loads((path / "metrics.json").read_text())
    test = metrics["test"]
    at_val = test["at_val_threshold"]
    err.print(f"test AUROC {test['auroc']:.4f}  AUPRC {test['auprc']:.4f}  accuracy at the "
              f"validation threshold {at_val['accuracy']:.3f}  "
              f"({metrics['train']['patches_per_s']:.0f} patches/s on {metrics['train']['device']})")
