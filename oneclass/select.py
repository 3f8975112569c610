"""Hyperparameters chosen with a few labelled anomalies, for any method (the recipe's
``select:`` section).

The perceptual-autoencoder paper (perceptual-ae.txt, Sec. 3.3) sets a method up with a
small validation set holding anomalies of limited variety, choosing its hyperparameters
by ROC AUC. Here every point of ``select.grid`` (the product of its value lists, over
``method.*`` and ``train.*`` keys) is trained ``select.folds`` times on the run's training
set: fit k sees the validation set without fold k (for early stopping and ``train.keep:
best``), and fold k, never seen by that fit, is scored. The point with the best mean of
the held-out folds' ``select.metric`` is the run's (ties: the first in grid order); the run
then trains it as usual, with the whole validation set. Test items are never used.

Folds are stratified by label and grouped by source image (no image's patches on both
sides), drawn from the run's seed. Every fit starts from the run's seed, so the chosen
point's run is the same as a run of that point alone. ``select.json`` in the run folder
records every point's fold values, mean and std, and the choice; ``oneclass evaluate``
shows them.

The paper leaves open how the folds are formed (the authors' code splits the training
normals into folds and spreads the anomalous validation slides over them); we fold the
validation set only, so the training set is the same for every fit. A fit in which the
validation set decides nothing (no ``keep: best``, no early stopping, no choice of the
method's own on it) is then the same model for every fold: it is trained once and
scores each held-out fold (DPA's recipe without early stopping: 4 fits, not 12).
"""

from __future__ import annotations

import copy
import gc
import itertools
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

from oneclass import recipe as recipes
from oneclass.artifacts import read_json, write_json
from oneclass.data.items import PatchData
from oneclass.errors import OneclassError

SELECT_FILE = "select.json"
# the fits a selection has finished, written after each one, so that an interrupted run
# resumes its selection where it stopped (each fit seeds itself: skipping the finished
# ones changes none of the others); removed once select.json is written
SELECT_PROGRESS = "select-progress.json"


@dataclass
class Point:
    values: dict[str, Any]  # grid key -> value
    config: recipes.Recipe  # the run's recipe with these values

    def label(self) -> str:
        return ", ".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in self.values.items())


def grid_points(config: recipes.Recipe) -> list[Point]:
    """Every combination of ``select.grid``'s values (the last key varying fastest), each
    checked as the run's recipe would be; [] without a grid. Mistakes raise one line
    naming the key."""
    from oneclass import registry
    from oneclass.training import method_class

    grid = config.select.grid
    if not grid:
        return []
    where = config.where("select.grid")
    cls, _ = method_class(config)
    params = [f.name for f in fields(cls.Params)]
    train_keys = [f.name for f in fields(recipes.TrainSection)]
    for key, values in grid.items():
        parts = str(key).split(".")
        blame = f"{where}: select.grid: {key}"
        if parts[0] == "method" and len(parts) >= 3 and parts[1] in registry.methods.names():
            if parts[1] != cls.name:
                raise OneclassError(f"{blame}: the run's method is {cls.name}, not {parts[1]}")
            param = parts[2]
        elif parts[0] == "method" and len(parts) >= 2:
            param = parts[1]
        elif parts[0] == "train" and len(parts) == 2:
            if parts[1] not in train_keys:
                raise OneclassError(f"{blame}: train has no key {parts[1]!r}; it has {', '.join(train_keys)}")
            param = None
        else:
            raise OneclassError(f"{blame}: only method and train keys can be searched (the data, "
                                f"split and seed stay those of the run), e.g. method.{cls.name}.{params[0]}")
        if param is not None and param not in params:
            raise OneclassError(f"{blame}: {cls.name} has no parameter {param!r}; it has {', '.join(params)}")
        if param in cls.ignored_params():
            raise OneclassError(f"{blame}: {cls.name} does not use {param} (a parameter of its family "
                                f"that this variant ignores); every grid point would train the same model")
        if not isinstance(values, list) or not values:
            raise OneclassError(f"{blame}: expected a non-empty list of values to try, got {values!r}")
    combinations = list(itertools.product(*grid.values()))
    if len(combinations) < 2:
        raise OneclassError(f"{where}: select.grid has one point ({_describe(grid)}); give some key "
                            f"at least two values, or drop the select section")
    points, effective = [], {}
    for combination in combinations:
        values = dict(zip(grid, combination))
        data = copy.deepcopy(config.to_dict())  # to_dict shares the method blocks with config
        for key, value in values.items():
            recipes._set_path(data, key.split("."), value, f"select.grid: {key}")
        origins = {**config.origins, **{key: f"{where}: select.grid" for key in values}}
        point = Point(values, recipes.from_dict(data, config.source, origins))
        _, params = method_class(point.config)  # each value checked as the method's parameter
        for key in values:
            name = key.split(".")[1]
            if key.startswith("train.") and getattr(params, name, None) is not None:
                raise OneclassError(f"{where}: select.grid: {key}: {cls.name} uses its own {name} "
                                    f"(method.{cls.name}.{name}: {getattr(params, name)}), not {key}; search "
                                    f"method.{cls.name}.{name} instead, or set it to null")
        unused = cls.ignored_at(params)
        used = {k: v for k, v in asdict(params).items() if k not in unused}
        same = effective.setdefault(repr((used, asdict(point.config.train))), point)
        if same is not point:
            why = [f"{cls.name} ignores {key.rsplit('.', 1)[-1]} when {unused[key.rsplit('.', 1)[-1]]}"
                   for key in values if key.rsplit(".", 1)[-1] in unused]
            raise OneclassError(f"{where}: select.grid: the points {same.label()} and {point.label()} train the "
                                f"same model: " + ("; ".join(why) if why else
                                f"a value does not reach the method (a plain method.KEY in the recipe "
                                f"wins over method.{cls.name}.KEY)"))
        points.append(point)
    return points


def _describe(grid: dict) -> str:
    return ", ".join(f"{key}: {values}" for key, values in grid.items())


def make_folds(labels: np.ndarray, sources: list[str], folds: int, seed: int, where: str) -> list[np.ndarray]:
    """Positions of each held-out fold in the validation set, stratified by ``labels`` and
    grouped by ``sources``; refuses too few anomalous (or normal) items or images."""
    from sklearn.model_selection import StratifiedGroupKFold

    for label, kind in ((1, "labelled anomalies"), (0, "normal items")):
        items = int((labels == label).sum())
        images = len({s for s, y in zip(sources, labels) if y == label})
        if items < folds or images < folds:
            raise OneclassError(f"{where}: select.folds: {folds} folds need at least {folds} validation "
                                f"{kind} from {folds} images; the validation set has {items} "
                                f"(from {images} images); lower select.folds or raise split.val_fraction"
                                f"{' (or split.val_anomalies)' if label else ''}")
    groups = np.unique(np.asarray(sources), return_inverse=True)[1]
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed % 2**32)
    held = [np.sort(test) for _, test in splitter.split(np.zeros(len(labels)), labels, groups)]
    for k, positions in enumerate(held):
        if len(np.unique(labels[positions])) < 2:
            raise OneclassError(f"{where}: select.folds: fold {k + 1} of {folds} holds only one class "
                                f"(too few validation images per class); lower select.folds")
    return held


def _metric(name: str, labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score, roc_auc_score

    if not np.isfinite(scores).all():
        return float("nan")
    return float((roc_auc_score if name == "auroc" else average_precision_score)(labels, scores))


def run_selection(config: recipes.Recipe, train: PatchData, val: PatchData, val_sources: list[str],
                  in_shape: tuple[int, int, int], report: Callable[[dict], None],
                  kept: Path | None = None, stamp: dict | None = None) -> dict:
    """Train and score every grid point on every fold; the record ``select.json`` holds.
    With ``kept`` (a file in the unfinished run), each finished fit's value is kept
    there, and the fits it already holds are not trained again; ``stamp`` (the store's
    hash) must be the one they were kept with."""
    import torch

    from oneclass.engine import Trainer, TrainingDiverged
    from oneclass.training import build_method, method_class

    points = grid_points(config)
    where = config.where("select")
    folds = make_folds(val.labels, val_sources, config.select.folds, config.seed, where)
    metric = config.select.metric
    made = {"metric": metric, "fold_sizes": [len(f) for f in folds], **(stamp or {})}
    finished = _read_progress(kept, made)
    records = []
    for i, point in enumerate(points):
        cls, params = method_class(point.config)
        values: dict[int, float] = {}
        for k, held in enumerate(folds):
            key = _fit_key(point, k)
            if k in values:  # scored by an earlier fold's model (below)
                continue
            if key in finished:
                value = finished[key]
                values[k] = float("nan") if value is None else value
                continue
            rest = np.setdiff1d(np.arange(len(val)), held)
            fit_val = val.subset(rest)
            tag = f"select {i + 1}/{len(points)} fold {k + 1}/{len(folds)}"

            def progress(event, tag=tag):  # the fits' batches drive the bar; their epochs stay quiet
                if event.get("event") == "batch":
                    report({**event, "stage": f"{tag} {event['stage']}"})

            trainer = Trainer(point.config.train, point.config.seed, None, val=fit_val, report=progress)
            method = build_method(point.config, cls, params, in_shape, keep_rng=False)
            method.trainer = trainer
            scored = [k]
            try:
                method.fit(train, fit_val)
                if not trainer.val_decides:
                    # nothing in this fit read the validation set (no kept epoch, no stop, no
                    # choice of the method's): the other folds' fits would be this same
                    # model, so it scores their held-out folds too, untrained again
                    scored += [j for j in range(k + 1, len(folds)) if _fit_key(point, j) not in finished]
                for j in scored:
                    held_out = val.subset(folds[j])
                    values[j] = _metric(metric, held_out.labels, method.score(held_out))
            except TrainingDiverged:  # this point's loss blew up: it cannot be chosen
                values[k] = float("nan")
                scored = [k]
            del method, trainer  # they refer to each other: free the fit's memory (GPU) now
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            for j in scored:
                report({"event": "select", "point": point.label(), "fold": j + 1, "folds": len(folds),
                        metric: values[j]})
                if kept is not None:
                    finished[_fit_key(point, j)] = values[j] if np.isfinite(values[j]) else None
            if kept is not None:
                write_json(kept, {**made, "fits": finished})
        values = [values[k] for k in range(len(folds))]
        done = all(np.isfinite(values))  # a diverged fold (null in the record) rules the point out
        records.append({"values": point.values, "folds": [v if np.isfinite(v) else None for v in values],
                        "mean": float(np.mean(values)) if done else None,
                        "std": float(np.std(values, ddof=1)) if done else None})
    means = [-np.inf if r["mean"] is None else r["mean"] for r in records]
    if not np.isfinite(max(means)):
        raise OneclassError(f"{where}: every grid point diverged (non-finite scores); nothing to choose")
    best = int(np.argmax(means))
    report({"event": "selected", "point": points[best].label(), metric: records[best]["mean"]})
    return {"metric": metric, "folds": len(folds), "fold_sizes": [len(f) for f in folds],
            "fold_anomalies": [int(val.labels[f].sum()) for f in folds],
            "grid": {key: list(values) for key, values in config.select.grid.items()},
            "points": records, "chosen": best, "values": records[best]["values"]}


def _fit_key(point: Point, fold: int) -> str:
    return json.dumps([point.values, fold], sort_keys=True)


def _read_progress(path: Path | None, made: dict) -> dict[str, float | None]:
    """The finished fits an interrupted selection kept: fit key → its held-out value;
    ``made`` (metric, fold sizes, store hash) must be what they were kept with."""
    if path is None or not path.is_file():
        return {}
    found = read_json(path)
    fits = found.get("fits") if isinstance(found, dict) else None
    if not isinstance(fits, dict) or not all(v is None or isinstance(v, (int, float)) for v in fits.values()):
        raise OneclassError(f"{path}: damaged; start the run again with --overwrite")
    if {k: found.get(k) for k in made} != made:
        raise OneclassError(f"{path}: kept with another patch store, other folds or another metric than "
                            f"this run's; start the run again with --overwrite")
    return dict(fits)


RECORD_KEYS = ("metric", "folds", "fold_sizes", "fold_anomalies", "grid", "points", "chosen", "values")


def read_record(path: Path) -> dict:
    """A run's select.json, checked; a damaged or foreign file is one OneclassError line."""
    record = read_json(path)
    if not isinstance(record, dict) or any(key not in record for key in RECORD_KEYS):
        raise OneclassError(f"{path}: not a oneclass selection record (expected the keys "
                            f"{', '.join(RECORD_KEYS)})")
    return record


def apply_choice(config: recipes.Recipe, record: dict, where: Path) -> recipes.Recipe:
    """The run's recipe with the chosen point's values (``record`` read from ``where``)."""
    for point in grid_points(config):
        if point.values == record["values"]:
            return point.config
    raise OneclassError(f"{where}: the chosen point {record['values']} is not in the recipe's select.grid "
                        f"(the recipe's grid changed?)")
