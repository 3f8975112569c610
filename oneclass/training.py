"""``oneclass train`` as a library: recipe → patch store (cached) → split → method →
run folder (see :mod:`oneclass.artifacts` for its files)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from oneclass import recipe as recipes
from oneclass import registry
from oneclass.artifacts import (CHECKPOINT, MARKER, PARTIAL, RUN_FORMAT, check_destination, check_writable,
                                discard, environment, folder_kind, mark, named_folder, read_json,
                                read_recipe_copy, refuse_foreign, replace_folder, save_torch, write_image_scores,
                                write_json, write_scores, write_text)
from oneclass.data.store import PatchStore
from oneclass.errors import OneclassError, OutputError
from oneclass.scoring import score_rows
from oneclass.select import SELECT_FILE, SELECT_PROGRESS, apply_choice, grid_points, read_record, run_selection
from oneclass.stores import Report, check_store_matches, obtain_store, store_hash


def method_class(config: recipes.Recipe):
    """The recipe's method class and its checked parameters.

    A key of the method section that names a method holds that method's own parameters
    (``deep-sad: {pretrain_epochs: 10}``) and applies only when it is the one chosen, so
    one recipe serves several methods (``--set method.name=ss-dcae``); plain keys apply
    to whichever method is chosen and win over its block, key by key inside nested
    mappings too (``--set method.epochs.semi=8`` keeps the block's other stage epochs); a
    ``--set`` of a block key that the file's plain key overrides is refused rather than
    ignored. The other methods' blocks are checked by :func:`check_other_blocks`."""
    name, source = config.method.name, config.source
    if not name:
        raise OneclassError(f"{source}: method.name: missing; see `oneclass list methods`")
    try:
        cls = registry.methods.get(name)
    except OneclassError as exc:
        raise OneclassError(f"{config.where('method.name')}: {exc}") from None
    known = set(registry.methods.names())
    plain = {k: v for k, v in config.method.params.items() if k not in known}
    for key, block in config.method.params.items():
        if key in known and not isinstance(block, dict):
            raise OneclassError(f"{source}: method.{key}: expected a mapping of {key}'s parameters")
    block = config.method.params.get(name) or {}
    origins = config.origins
    recipes.check_options(cls.Params, block, source, f"method.{name}.", origins)
    recipes.check_options(cls.Params, plain, source, "method.", origins)
    _refuse_a_shadowed_set(plain, block, name, origins, source)
    return cls, recipes.check_options(cls.Params, merge_nested(block, plain), source, "method.", origins)


def check_other_blocks(config: recipes.Recipe) -> None:
    """The blocks of the methods a training recipe does not choose, checked as the chosen
    one's are: a typo there would otherwise wait until a sweep or a later --set chooses
    that method. (Scoring leaves them alone: a finished run needs its own method only.)"""
    known = set(registry.methods.names())
    for other in sorted(known & set(config.method.params) - {config.method.name}):
        recipes.check_options(registry.methods.get(other).Params, config.method.params[other], config.source,
                              f"method.{other}.", config.origins)


def _refuse_a_shadowed_set(plain: dict, block: dict, name: str, origins: dict[str, str], source: str) -> None:
    """A ``--set method.NAME.KEY`` that a plain ``method.KEY`` in the file overrides would
    change nothing: refused, naming both (a run's recipe.yaml must rebuild the same model,
    so the documented order, plain over block, stays)."""
    prefix = f"method.{name}."
    set_keys = []
    for key, where in origins.items():
        if where.startswith("--set") and key == prefix[:-1]:  # the whole block
            set_keys += [(prefix + k, where) for k in block]
        elif where.startswith("--set") and key.startswith(prefix):
            set_keys.append((key, where))
    for key, where in set_keys:
        path = key[len(prefix):].split(".")
        node = plain
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        plain_key = "method." + ".".join(path)
        if node is not None and recipes.origin(origins, plain_key, source) == source:
            raise OneclassError(f"{where}: {source} sets {plain_key}, which wins over {key} (a plain key "
                                f"applies to whichever method is chosen); set {plain_key} instead")


def build_method(config: recipes.Recipe, cls, params, in_shape, keep_rng: bool = True):
    """The recipe's method with initial weights from its seed: ``cls`` itself, or with
    ``train.ensemble: R`` an :class:`oneclass.ensemble.Ensemble` of R members."""
    from oneclass.methods.base import build

    if config.train.ensemble > 1:
        from oneclass.ensemble import Ensemble

        return Ensemble(cls, params, in_shape, config.train.ensemble, config.seed)
    return build(cls, params, in_shape, config.seed, keep_rng=keep_rng)


def merge_nested(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = merge_nested(base[key], value) if both else value
    return merged


def train_run(config: recipes.Recipe, out: Path, store: PatchStore | None = None,
              resume: bool = False, overwrite: bool = False,
              report: Report | None = None) -> Path:
    """Train one run into ``out`` (built as ``out.partial``); returns ``out``.

    Nothing is deleted or written before the recipe, the destination, the data, the split
    and the method have all been checked; a folder already at ``out`` goes only once the
    new run is complete. A failure leaves ``out.partial`` only where it holds a checkpoint
    to resume from, or a finished run that could not be moved to ``out``."""
    from oneclass import distributed
    from oneclass.data.splits import SplitError, check_section as check_split_section, make_split
    from oneclass.data.items import PatchData
    from oneclass.compiled import resolve as resolve_compile
    from oneclass.engine import Trainer, resolve_device

    out = named_folder(out)
    try:  # before a store is extracted, which may take long
        check_split_section(config.split)
    except SplitError as exc:
        raise OneclassError(f"{config.where(exc.key)}: {exc}" if exc.key else str(exc)) from None
    writer = distributed.is_writer()  # under torchrun, rank 0 writes and the others train along
    report = report if report and writer else (lambda event: None)
    cls, params = method_class(config)
    check_other_blocks(config)
    grid_points(config)  # a select.grid is checked before any work
    if config.select.grid and distributed.current() is not None:
        raise OneclassError(f"{config.where('select.grid')}: select.grid: not under torchrun; choose the "
                            f"hyperparameters in one process, then train the choice with torchrun")
    device = resolve_device(config.train.device, f"{config.where('train.device')}: train.device")  # CUDA asked, none here
    resolve_compile(config.train.compile, device)  # compile: true where this torch build cannot
    partial = out.with_name(out.name + PARTIAL)
    _check_folder(config, out, partial, resume, overwrite)
    moved_only = resume and _finished(partial)  # seen by every rank before rank 0 moves it
    distributed.barrier()  # every rank has checked the folder before rank 0 changes it
    if moved_only:
        if writer:
            _move_into_place(partial, out)
        return out
    if store is None:  # rank 0 extracts the store (or finds it cached), the others wait for it
        store = obtain_store(config, report, wait=not writer)
    else:
        check_store_matches(store, config)
    if len(store) == 0:
        raise OneclassError(f"{store.path}: the patch store is empty")
    if resume:
        _check_same_store(partial, store)
    labels = store.labels.astype(np.int64)
    split = make_split(labels, [r["subclass"] for r in store.index], [r["source"] for r in store.index],
                       config.split, config.seed)
    if cls.supervision == "supervised" and not split.counts["train"]["labeled_anomaly"]:
        raise OneclassError(f"method {cls.name}: needs labelled anomalies; set split.gamma > 0 "
                            f"(got {config.split.gamma})")
    report({"event": "split", "counts": split.counts, "seen_subclasses": split.seen_subclasses})
    in_shape = tuple(store.images.shape[1:])
    val = PatchData(store.images, split.val, labels=labels[split.val])
    ours = resume  # the partial folder is this job's to remove
    if config.select.grid:
        if not resume:  # the selection's finished fits are kept in it as they finish
            _create_partial(partial, overwrite, config)
            ours = True
        try:
            selection = _selection(config, partial, resume, store, split, val, in_shape, report)
        except BaseException:
            if not resume and not any((partial / name).is_file() for name in (SELECT_PROGRESS, SELECT_FILE)):
                discard(partial)  # not one fit finished: nothing to resume
            raise
        config = apply_choice(config, selection, partial / SELECT_FILE)
        cls, params = method_class(config)
    # a run interrupted after its selection but before its first checkpoint resumes from
    # the selection (select.json) and trains from the start
    trainer = Trainer(config.train, config.seed, partial, resume=resume and (partial / CHECKPOINT).is_file(),
                      val=val, report=report)
    method = build_method(config, cls, params, in_shape, keep_rng=False)  # drawn right after the seeding
    method.trainer = trainer
    if not writer:
        import tempfile

        with tempfile.TemporaryDirectory(prefix=f"oneclass-rank{distributed.current().rank}-") as scratch:
            _train_into(config, Path(scratch), store, split, labels, cls, params, in_shape, val, trainer,
                        method, resume)
        return out
    finished = False
    try:
        if not ours:
            _create_partial(partial, overwrite)
            ours = True
        _train_into(config, partial, store, split, labels, cls, params, in_shape, val, trainer, method, resume)
        finished = True
        _move_into_place(partial, out)
    except BaseException as exc:
        kept = finished or any((partial / name).is_file() for name in (CHECKPOINT, SELECT_FILE, SELECT_PROGRESS))
        if ours and not kept:
            discard(partial)
        if isinstance(exc, OSError):
            where = (f"; the finished run is kept in {partial}: move it to {out} yourself" if finished else
                     f"; the unfinished run is kept in {partial}: free space, then resume it "
                     f"with --resume" if kept else "")
            raise OutputError(f"{exc.filename or partial}: cannot write: {exc.strerror or exc}{where}") from None
        raise
    return out


def _create_partial(partial: Path, overwrite: bool, selecting: recipes.Recipe | None = None) -> None:
    """The unfinished run's folder, marked; for a run that selects hyperparameters first
    (``selecting``), with the recipe it started from, which --resume checks."""
    try:
        if overwrite and partial.exists():
            discard(partial)  # checked to be an unfinished oneclass run
        partial.mkdir(parents=True)  # fails where another job made it since the check
    except FileExistsError:
        raise OneclassError(f"{partial}: another job started this run meanwhile; give each job its "
                            f"own --out") from None
    except OSError as exc:
        raise OutputError(f"{partial}: cannot create the run folder: {exc.strerror or exc}") from None
    try:  # a Ctrl-C right after mkdir leaves nothing either
        mark(partial, "run")
        if selecting is not None:
            write_text(partial / "recipe.yaml", selecting.to_yaml())
    except BaseException:  # write_json says a failed write in one line naming the file
        discard(partial)
        raise


def _check_same_store(partial: Path, store: PatchStore) -> None:
    """A resumed run must train on the store it started on: its split members (data.json)
    are rows of that store."""
    if not (partial / "data.json").is_file():
        return  # interrupted before it was written: nothing trained on the store yet
    started = read_json(partial / "data.json").get("store_hash")
    if started is not None and started != store_hash(store):
        raise OneclassError(f"{partial}: the patch store changed since this run started (its images "
                            f"or extraction differ); start again with --overwrite")


def _selection(config, partial: Path, resume: bool, store: PatchStore, split, val, in_shape,
               report: Report) -> dict:
    """The select section's choice: run now, or read back from the run being resumed."""
    from oneclass.data.items import PatchData

    progress = partial / SELECT_PROGRESS
    if resume and (partial / SELECT_FILE).is_file():
        progress.unlink(missing_ok=True)  # cut between select.json and this file's removal
        return read_record(partial / SELECT_FILE)
    train = PatchData(store.images, split.train, roles=split.train_roles)
    sources = [store.index[int(row)]["source"] for row in split.val]
    selection = run_selection(config, train, val, sources, in_shape, report, progress,
                              {"store_hash": store_hash(store)})
    write_json(partial / SELECT_FILE, selection)
    progress.unlink(missing_ok=True)  # select.json holds every fit's value
    return selection


def _train_into(config, partial: Path, store: PatchStore, split, labels, cls, params, in_shape,
                val, trainer, method, resume: bool) -> None:
    from oneclass import distributed
    from oneclass.data.items import PatchData

    if not (resume and (partial / "data.json").is_file()):  # a selection's run writes them after it
        write_text(partial / "recipe.yaml", config.to_yaml())
        write_json(partial / "data.json", {
            "store": str(store.path.resolve()), "store_hash": store_hash(store),
            "image_shape": list(in_shape), "extraction": store.meta.get("params", {}),
            "dataset": store.meta.get("dataset", {}), "seen_subclasses": split.seen_subclasses,
            "counts": split.counts, "members": split.members()})
    write_json(partial / "env.json", environment(trainer.device))
    method.fit(PatchData(store.images, split.train, roles=split.train_roles), val)
    train_seconds = trainer.seconds  # an interrupted run's earlier parts included
    save_model(partial / "model.pt", cls.name, params, in_shape, method)
    metrics = _score_sets(method, store, split, labels, partial, config.evaluate)
    info = method.run_info()
    metrics = {"method": cls.name, "dataset": config.dataset.name, "gamma": config.split.gamma,
               "seed": config.seed, **metrics,
               "train": {"seconds": round(train_seconds, 2), "items": len(split.train),
                         "patches_per_s": round(float(np.mean(trainer.throughput)), 1)
                         if trainer.throughput else None, "device": str(trainer.device),
                         "compiled": trainer.compile,
                         **({"processes": group.size} if (group := distributed.current()) else {}),
                         **({"compile_skipped": trainer.compile_skipped} if trainer.compile_skipped else {}),
                         **({"selected": trainer.selected} if trainer.selected else {}),
                         **({"method": info} if info else {})}}
    if method.explain is not None:
        _draw_maps(method, store, split.test, partial, metrics["test"], config.evaluate.pixel_auroc)
    write_json(partial / "metrics.json", metrics)  # last: a partial folder holding it is finished


def _finished(partial: Path) -> bool:
    return (partial / "metrics.json").is_file()


def _move_into_place(partial: Path, out: Path) -> None:
    """A finished run to ``out``; its checkpoint goes only then, so that a Ctrl-C while the
    folder moves leaves a partial run that ``--resume`` can still finish (by moving it)."""
    replace_folder(partial, out, "run")
    (out / CHECKPOINT).unlink(missing_ok=True)


def check_same_recipe(folder: Path, config: recipes.Recipe, what: str, otherwise: str) -> None:
    """Refuse ``folder`` (a run, finished or not) unless it was made with ``config``'s recipe."""
    started = read_recipe_copy(folder / "recipe.yaml")
    started = recipes.text_keys(started)  # a record written before keys were read as text
    if started is None:
        raise OneclassError(f"{folder / 'recipe.yaml'}: missing or damaged, so {what} cannot be checked "
                            f"against the recipe; {otherwise}")
    # recipe.yaml holds the select section's choice once the run trains on it, and the
    # recipe as given while it selects (and for a moment after select.json is written)
    chosen = folder / SELECT_FILE
    allowed = [config.to_dict()]
    if chosen.is_file() and config.select.grid:
        allowed.insert(0, apply_choice(config, read_record(chosen), chosen).to_dict())
    now = allowed[0]
    if started not in allowed:
        changed = sorted(k for k in set(started) | set(now) if started.get(k) != now.get(k))
        raise OneclassError(f"{folder}: the recipe differs from the one {what} was made with "
                            f"(section {', '.join(changed)}); use the same recipe, or {otherwise}")


def _check_folder(config, out: Path, partial: Path, resume: bool, overwrite: bool) -> None:
    if resume:
        if not partial.is_dir():
            done = " (it finished: nothing to resume)" if out.is_dir() else ""
            raise OneclassError(f"{partial}: no unfinished run to resume{done}")
        check_same_recipe(partial, config, "the unfinished run", "start again with --overwrite")
        check_writable(partial)
        if _finished(partial):  # interrupted while it was moved into place: train_run moves it
            return
        from oneclass.artifacts import load_torch
        from oneclass.engine import CHECKPOINT_KEYS

        selecting = config.select.grid and not (partial / "data.json").is_file()  # its fits resume
        if (partial / CHECKPOINT).is_file() or not ((partial / SELECT_FILE).is_file() or selecting):
            load_torch(partial / CHECKPOINT, "checkpoint", CHECKPOINT_KEYS)  # damaged: refused before any work
        return
    check_destination(out, "run", overwrite)
    if partial.is_symlink() or partial.exists():
        if not overwrite:
            raise OneclassError(f"{partial}: an unfinished run is there; pass --resume to continue "
                                f"it or --overwrite to start again")
        if folder_kind(partial) != "run":
            raise OneclassError(f"{partial}: not an unfinished oneclass run (no {MARKER} marker); "
                                f"--overwrite only replaces runs: remove it yourself or choose another --out")
        refuse_foreign(partial, "run", "move them out first, or choose another --out")


def save_model(path: Path, name: str, params, in_shape, method) -> None:
    save_torch(path, {"format": RUN_FORMAT, "method": name, "params": asdict(params),
                      "in_shape": list(in_shape), "state": method.state_dict()})


def _score_sets(method, store: PatchStore, split, labels: np.ndarray, partial: Path,
                evaluate: recipes.EvaluateSection | None = None) -> dict:
    """Score validation and test into scores/*.csv; test metrics use the validation threshold.

    A patch-level run also writes scores/{val,test}_images.csv, one row per source image
    with its patches' scores aggregated by ``evaluate.image_score``, and records image
    AUROC/AUPRC as ``image`` in each set's metrics (null, with ``image_absent`` saying
    why, where the images hold one class only). A whole-image store's items already are
    images: no image tables, ``image`` null."""
    from oneclass.data.items import PatchData
    from oneclass.metrics import check_image_rule, evaluate_scores

    evaluate = evaluate or recipes.EvaluateSection()
    whole = bool((store.meta.get("params") or {}).get("whole_image"))
    if not whole:
        check_image_rule(evaluate.image_score, evaluate.image_topk)
    (partial / "scores").mkdir(exist_ok=True)
    results, images = {}, {}
    # an image is scored from all its patches: the balanced test set keeps a few of a normal
    # image's patches and all of a defect's (pure noise scored 0.68 image AUROC by max);
    # split.test_pool holds them all
    pools = {"val": split.val, "test": split.test if split.test_pool is None else split.test_pool}
    for name, rows in (("val", split.val), ("test", split.test)):
        scores = method.score(PatchData(store.images, rows, labels=labels[rows]))
        patch_rows = score_rows(store.index, rows, scores)
        write_scores(partial / "scores" / f"{name}.csv", patch_rows)
        results[name] = (labels[rows], scores)
        if whole or _split_images(store, split, pools[name]):
            continue
        rest = np.setdiff1d(pools[name], rows)
        if len(rest):
            patch_rows += score_rows(store.index, rest, method.score(PatchData(store.images, rest)))
        images[name] = _image_rows(patch_rows, evaluate)
        write_image_scores(partial / "scores" / f"{name}_images.csv", images[name])
    metrics = {"test": evaluate_scores(*results["test"], "test", val=results["val"]),
               "val": evaluate_scores(*results["val"], "validation")}
    for name, what in (("test", "test"), ("val", "validation")):
        if whole:
            metrics[name].update(image=None, image_absent="whole-image store: every item is an "
                                 "image, so the item metrics are the image metrics")
        elif name not in images:
            metrics[name].update(image=None, image_absent=f"{_split_images(store, split, pools[name])} {what} "
                                 f"image(s) have patches in other sets too (split.group_by: none): an image "
                                 f"score needs all its patches")
        else:
            metrics[name].update(_image_entry(images[name], evaluate, what))
    return metrics


def _split_images(store: PatchStore, split, rows: np.ndarray) -> int:
    """How many of the images ``rows`` come from have patches in another set as well."""
    sources = [r["source"] for r in store.index]
    here = {sources[i] for i in rows.tolist()}
    member = np.zeros(len(sources), bool)
    member[rows] = True
    elsewhere = {sources[i] for i in np.concatenate([split.train, split.val, split.test]).tolist() if not member[i]}
    return len(here & elsewhere)


def _image_rows(patch_rows: list[dict], evaluate: recipes.EvaluateSection) -> list[dict]:
    """Score rows of one set → one row per source image (artifacts.IMAGE_COLUMNS)."""
    from oneclass.metrics import aggregate_images

    return aggregate_images([r["source"] for r in patch_rows], [int(r["label"]) for r in patch_rows],
                            [r["subclass"] for r in patch_rows], [r["score"] for r in patch_rows],
                            evaluate.image_score, evaluate.image_topk)


def _image_entry(image_rows: list[dict], evaluate: recipes.EvaluateSection, what: str) -> dict:
    """``{"image": metrics}``, or ``{"image": None, "image_absent": why}``."""
    from oneclass.metrics import image_metrics, image_rule

    found, why = image_metrics([r["label"] for r in image_rows], [r["score"] for r in image_rows],
                               image_rule(evaluate.image_score, evaluate.image_topk), f"{what} images")
    return {"image": found} if found is not None else {"image": None, "image_absent": why}


def _draw_maps(method, store: PatchStore, rows: np.ndarray, partial: Path, test_metrics: dict,
               pixel_auroc: bool) -> None:
    from oneclass.data.items import PatchData
    from oneclass.metrics import pixel_auroc as pixel_level
    from oneclass.metrics import pixel_auroc_per_image

    maps = method.explain(PatchData(store.images, rows))
    (partial / "maps").mkdir(exist_ok=True)
    np.save(partial / "maps" / "test.npy", maps.astype(np.float16))
    if pixel_auroc:
        masks = store.masks[rows]
        test_metrics["pixel_auroc"] = pixel_level(masks, maps)  # pooled over every pixel
        if test_metrics["pixel_auroc"] is None:
            test_metrics["pixel_absent"] = "the test items' masks hold one class only (no masks?): image level only"
        per_item, items = pixel_auroc_per_image(masks, maps)
        test_metrics["pixel_auroc_per_item"] = per_item
        test_metrics["pixel_auroc_items"] = items
