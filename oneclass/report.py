"""Evaluation of score tables and runs: per-input metrics, mean +- std over repeats
grouped by (dataset, method, gamma), and paired Wilcoxon tests between methods.

Image level: a patch run's scores/test_images.csv (patch scores aggregated per source
image at training, by the recipe's ``evaluate.image_score``) gives image AUROC/AUPRC
beside the patch ones; a patch run written before those tables existed is aggregated
here from scores/test.csv by its recipe's rule, and a score table with a ``source``
column by the default rule (topk_mean, k = 0.1). Image metrics are left out where
every item already is an image (whole-image runs, tables with one row per source) and
where the images hold one class only."""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from oneclass import recipe as recipes
from oneclass import registry
from oneclass.artifacts import ScoreTable, open_run, parse_scores
from oneclass.errors import OneclassError
from oneclass.select import SELECT_FILE, read_record
from oneclass.metrics import (aggregate_images, check_image_rule, describe_rule, evaluate_scores,
                              image_metrics, image_rule, wilcoxon)

# the aggregation used for score tables given to evaluate (EvaluateSection's defaults)
TABLE_IMAGE_SCORE, TABLE_IMAGE_TOPK = "topk_mean", 0.1


@dataclass
class Result:
    name: str
    metrics: dict
    dataset: str = ""
    method: str = ""
    gamma: float | None = None  # None: a score table, or a few-shot run (shots)
    seed: int | None = None
    selection: dict | None = None  # a run's select.json (oneclass.select)
    shots: int | None = None  # a few-shot run's labelled anomalies (split.labeled_anomalies)
    root: str | None = None  # a run's dataset.root: runs of one plugin on other data differ
    recipe: dict | None = field(default=None, repr=False)  # a run's recipe.yaml

    def flat(self) -> dict:
        m = self.metrics
        row = {"input": self.name, "dataset": self.dataset, "method": self.method,
               "gamma": self.gamma, "labeled_anomalies": self.shots, "seed": self.seed, "n": m["n"],
               "anomalous": m["anomalous"],
               "auroc": m["auroc"], "auprc": m["auprc"], "pixel_auroc": m.get("pixel_auroc"),
               "pixel_auroc_per_item": m.get("pixel_auroc_per_item")}
        image = m.get("image") or {}
        row.update({"images": image.get("n"), "anomalous_images": image.get("anomalous"),
                    "image_auroc": image.get("auroc"), "image_auprc": image.get("auprc"),
                    "image_score": describe_rule(image["aggregation"]) if image else None})
        for key in ("at_equal_error", "at_val_threshold"):
            short = "eer" if key == "at_equal_error" else "val"
            for k, v in (m.get(key) or {}).items():
                if k not in ("sensitivity", "specificity"):
                    row[f"{short}_{k}"] = v
        return row


@dataclass
class Group:
    dataset: str
    method: str
    gamma: float | None
    shots: int | None = None
    results: list[Result] = field(default_factory=list)

    def summary(self) -> dict:
        out = {"dataset": self.dataset, "method": self.method, "gamma": self.gamma,
               "labeled_anomalies": self.shots, "n": len(self.results)}
        for key in ("auroc", "auprc", "pixel_auroc", "pixel_auroc_per_item", "image_auroc", "image_auprc"):
            values = [v for v in (_metric(r.metrics, key) for r in self.results) if v is not None]
            out[f"{key}_mean"] = float(np.mean(values)) if values else None
            out[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else (0.0 if values else None)
            out[f"{key}_n"] = len(values)
        accuracies = [r.metrics["at_val_threshold"]["accuracy"] for r in self.results
                      if "at_val_threshold" in r.metrics]
        out["val_threshold_accuracy_mean"] = float(np.mean(accuracies)) if accuracies else None
        return out


def _metric(metrics: dict, key: str):
    """A patch metric (``auroc``), or an image one (``image_auroc``: metrics["image"]["auroc"])."""
    if key.startswith("image_"):
        return (metrics.get("image") or {}).get(key[len("image_"):])
    return metrics.get(key)


def load_inputs(inputs: list[str], stdin_text: str | None = None, name_variants: bool = True) -> list[Result]:
    """Each input's result. Runs of one dataset plugin on other roots get the root in their
    dataset's name; with ``name_variants``, runs of one method trained with other settings
    (a user's ``--set method.eta=2`` beside the default) get those in their method's name,
    so that neither is averaged nor paired with the other."""
    results, seen = [], set()
    for item in inputs:
        path = Path(item)
        if item != "-" and path.exists():
            if path.resolve() in seen:
                continue  # the same run or table named twice ("run", "./run/") counts once
            seen.add(path.resolve())
        if item == "-":
            results.append(_from_table(parse_scores(stdin_text or "", "-")))
        elif path.is_dir():
            results.append(_from_run(path))
        elif path.is_file():
            try:
                text = path.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise OneclassError(f"{path}: cannot read: {exc}") from None
            results.append(_from_table(parse_scores(text, str(path))))
        else:
            raise OneclassError(f"{path}: no such run folder or score file")
    _name_data(results)
    if name_variants:
        _name_variants(results)
    return results


def _name_data(results: list[Result]) -> None:
    """Where runs of one dataset plugin read different roots (MVTec's leather and grid),
    each dataset name gets its root's folder name (or the whole root) so that they are
    grouped and paired apart."""
    roots: dict[str, set[str]] = {}
    for r in results:
        if r.root is not None:
            roots.setdefault(r.dataset, set()).add(r.root)
    for r in results:
        found = roots.get(r.dataset, set())
        if r.root is not None and len(found) > 1:
            short = {Path(root).name for root in found}
            r.dataset = f"{r.dataset} ({Path(r.root).name if len(short) == len(found) else r.root})"


# recipe keys that say where, how fast or under which name a run trained, or that the
# grouping reads on its own (dataset root, gamma, shots): runs differing only there are
# repeats of one setting
_NOT_SETTINGS = {"seed", "description", "dataset.root", "split.gamma", "split.labeled_anomalies",
                 "patches.workers", "train.prefetch"}


def _name_variants(results: list[Result]) -> None:
    """Runs of one method on one dataset and gamma whose recipes differ in more than seed
    and speed get the keys that differ in their method's name: ``deep-sad (eta=2.0)``."""
    buckets: dict[tuple, list[Result]] = {}
    for r in results:
        if r.recipe is not None:
            buckets.setdefault((r.dataset, r.method, r.gamma, r.shots), []).append(r)
    for runs in buckets.values():
        settings = [_settings(r.recipe) for r in runs]
        if all(s == settings[0] for s in settings):
            continue
        settings = [_settings(r.recipe, effective=True) for r in runs]  # defaults filled in
        differ = sorted(k for k in set().union(*settings) if len({s.get(k, "unset") for s in settings}) > 1)
        for r, s in zip(runs if differ else [], settings):
            named = (f"{k.removeprefix('method.')}={s.get(k, 'unset')}" for k in differ)
            r.method = f"{r.method} ({', '.join(named)})"


def _settings(recipe: dict, effective: bool = False) -> dict[str, str]:
    """A run's recipe as key path → value text, less :data:`_NOT_SETTINGS` and the other
    methods' blocks. ``effective``: every section's defaults filled in and the method's
    parameters as it was built with them (its block and plain keys merged), so that a
    key left at its default and one set to it compare equal."""
    name = (recipe.get("method") or {}).get("name")
    if effective:
        try:
            from oneclass.training import method_class  # imports torch: only where runs differ

            config = recipes.from_dict(recipe)
            recipe = config.to_dict(full=True)
            recipe["method"] = {"name": name, **asdict(method_class(config)[1])}
        except OneclassError:  # a plugin not installed here, an older recipe: as written
            pass
    others = set(registry.methods.names()) - {name}
    # what the run chose on validation (select.grid) differs by seed by design
    chosen = set((recipe.get("select") or {}).get("grid") or {})
    chosen |= {"method." + k.removeprefix(f"method.{name}.") for k in chosen if k.startswith(f"method.{name}.")}
    flat: dict[str, str] = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if (path in _NOT_SETTINGS or path in chosen or (prefix == "method." and key in others)
                    or any(path.startswith(k + ".") for k in chosen)):
                continue
            if isinstance(value, dict) and value:
                walk(value, path + ".")
            else:
                flat[path] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    walk(recipe, "")
    return flat


def _from_table(table: ScoreTable) -> Result:
    known = table.known
    if not known.any():
        raise OneclassError(f"{table.name}: no row has a label; evaluation needs ground truth")
    metrics = evaluate_scores(table.labels[known], table.scores[known], table.name)
    metrics["image"] = _table_images(table)
    return Result(table.name, metrics, method=Path(table.name).stem if table.name != "-" else "-")


def _from_run(path: Path) -> Result:
    run = open_run(path)
    test, val = run.scores("test"), run.scores("val")
    metrics = evaluate_scores(test.labels, test.scores, str(path / "scores/test.csv"),
                              val=(val.labels, val.scores))
    for key in ("pixel_auroc", "pixel_auroc_per_item"):
        value = run.metrics.get("test", {}).get(key)
        if value is not None:
            metrics[key] = value
    metrics["image"] = _run_images(run, test)
    split = run.recipe.get("split") or {}
    selection = read_record(path / SELECT_FILE) if (path / SELECT_FILE).is_file() else None
    shots = split.get("labeled_anomalies")  # then split.gamma is 0 and says nothing
    dataset = run.recipe.get("dataset") or {}
    root = dataset.get("root")
    return Result(str(path), metrics, dataset=dataset.get("name", ""),
                  root=os.path.normpath(root) if isinstance(root, str) else root, recipe=run.recipe,
                  method=(run.recipe.get("method") or {}).get("name", ""),
                  gamma=split.get("gamma") if shots is None else None, seed=run.recipe.get("seed"),
                  selection=selection, shots=shots)


def _table_images(table: ScoreTable) -> dict | None:
    """Image metrics of a score table whose rows name their source image, aggregated by
    the default rule; None without sources, with one row per source (the row metrics
    already are image metrics) or with one class among the images."""
    sources = table.sources
    if sources is None or any(s is None for s in sources) or len(set(sources)) == len(sources):
        return None
    rows = aggregate_images(sources, table.labels.tolist(), table.subclasses, table.scores,
                            TABLE_IMAGE_SCORE, TABLE_IMAGE_TOPK)
    found, _ = image_metrics([r["label"] for r in rows], [r["score"] for r in rows],
                             image_rule(TABLE_IMAGE_SCORE, TABLE_IMAGE_TOPK), table.name)
    return found


def _run_images(run, test: ScoreTable) -> dict | None:
    """Image metrics of a run: from scores/test_images.csv; for a patch run written before
    image tables existed, from scores/test.csv aggregated by the recipe's rule; None for
    whole-image runs and where the test images hold one class only."""
    if run.whole_image:
        return None
    section = run.recipe.get("evaluate") or {}
    how, k = section.get("image_score", TABLE_IMAGE_SCORE), section.get("image_topk", TABLE_IMAGE_TOPK)
    recorded = (run.metrics.get("test") or {}).get("image") or {}
    rule = recorded.get("aggregation") or image_rule(how, k)
    table = run.image_scores("test")
    if table is not None:
        labels, scores, name = table.labels.tolist(), table.scores, table.name
    elif test.sources is not None and all(s is not None for s in test.sources):
        check_image_rule(how, k)
        rows = aggregate_images(test.sources, test.labels.tolist(), test.subclasses, test.scores, how, k)
        labels, scores, name = [r["label"] for r in rows], [r["score"] for r in rows], test.name
    else:
        return None
    found, _ = image_metrics(labels, scores, rule, name)
    return found


def group(results: list[Result]) -> list[Group]:
    groups: dict[tuple, Group] = {}
    for r in results:
        key = (r.dataset, r.method, r.gamma, r.shots)
        groups.setdefault(key, Group(*key)).results.append(r)
    return sorted(groups.values(), key=lambda g: (g.dataset, g.method, -1 if g.gamma is None else g.gamma,
                                                  -1 if g.shots is None else g.shots))


def compare_methods(results: list[Result]) -> list[dict]:
    """Paired Wilcoxon signed-rank tests of test AUROC between every two methods, one per
    dataset and gamma (or number of labelled anomalies), pairing runs of the same seed:
    a method better at one gamma and worse at another is not averaged into one test."""
    cells: dict[tuple, dict[str, dict[int, float]]] = {}  # (dataset, gamma, shots) -> method -> seed -> AUROC
    first: dict[tuple, str] = {}
    for r in results:
        if r.seed is None:
            continue  # a bare score table has nothing to pair on
        cell = (r.dataset, r.gamma, r.shots)
        if (r.method, *cell, r.seed) in first:
            raise OneclassError(f"{first[(r.method, *cell, r.seed)]} and {r.name}: two runs of {r.method} on "
                                f"{r.dataset} with one gamma, seed {r.seed} and the same settings; name one of them "
                                f"(methods are compared on runs paired by seed)")
        first[(r.method, *cell, r.seed)] = r.name
        cells.setdefault(cell, {}).setdefault(r.method, {})[r.seed] = r.metrics["auroc"]
    out = []
    for (dataset, gamma, shots), methods in sorted(cells.items(), key=lambda item: str(item[0])):
        for a, b in itertools.combinations(sorted(methods), 2):
            seeds = sorted(set(methods[a]) & set(methods[b]))
            if len(seeds) < 2:
                continue
            test = wilcoxon([methods[a][s] for s in seeds], [methods[b][s] for s in seeds])
            out.append({"dataset": dataset, "gamma": gamma, "labeled_anomalies": shots,
                        "method_a": a, "method_b": b, **test})
    return out
