"""Training runs end to end: recipe → patch store (cached) → split → method → run folder,
and loading a finished run back to score new patches."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from oneclass import recipe as recipes
from oneclass import registry
from oneclass.artifacts import (CHECKPOINT, MARKER, PARTIAL, RUN_FORMAT, RunFolder, check_destination,
                                check_writable, discard, environment, folder_kind, mark,
                                replace_folder, save_torch, write_image_scores, write_json, write_scores,
                                write_text)
from oneclass.data.datasets.base import Item, Loaded
from oneclass.data.store import PatchStore
from oneclass.errors import OneclassError, OutputError

Report = Callable[[dict], None]


# -- patch stores -------------------------------------------------------------------


def cache_dir() -> Path:
    base = os.environ.get("ONECLASS_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "oneclass"
    return Path(base).expanduser() / "stores"


def make_dataset(config: recipes.Recipe):
    """The dataset plugin named by the recipe, with its options checked."""
    section = config.dataset
    cls = registry.datasets.get(section.name)
    root = Path(section.root).expanduser() if section.root else None
    return cls(root, make_dataset_options(config))


def make_dataset_options(config: recipes.Recipe):
    cls = registry.datasets.get(config.dataset.name)
    return recipes.check_options(cls.Options, config.dataset.options, config.source, "dataset.", config.origins)


def extraction_params(config: recipes.Recipe):
    from oneclass.data.extract import ExtractParams

    p = config.patches
    return ExtractParams(size=p.size, stride=p.stride, mask_frac=p.mask_frac, resize=p.resize,
                         level=p.level, max_per_image=p.max_per_image, channels=p.channels,
                         seed=config.seed, workers=p.workers, whole_image=p.whole_image,
                         mask_threshold=p.mask_threshold)


def store_key(dataset, params) -> str:
    """Hash of what determines a store's content: plugin, options, extraction parameters
    and each source file's path, size and modification time (contents are not read, so
    the key is cheap for whole-slide images; meta.json records their SHA-256)."""
    files = []
    for item in dataset.items():
        for path in item.files():
            stat = Path(path).stat()
            files.append([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns])
    described = {k: v for k, v in asdict(params).items() if k != "workers"}
    if params.max_per_image is None:
        described.pop("seed")  # the seed only draws the kept patches
    key = {"dataset": dataset.name, "root": str(dataset.root.resolve()) if dataset.root else None,
           "options": asdict(dataset.options), "params": described, "files": files,
           "store_format": 1}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def obtain_store(config: recipes.Recipe, report: Report) -> PatchStore:
    """The recipe's patch store: from the cache when an identical one was extracted."""
    from oneclass.data.extract import extract

    dataset = make_dataset(config)
    params = extraction_params(config)
    params.check()
    path = cache_dir() / f"{dataset.name}-{store_key(dataset, params)}"
    cached = (path / "meta.json").is_file()
    if not cached:
        path.parent.mkdir(parents=True, exist_ok=True)
        extract(dataset, params, path, overwrite=True, recipe=config.to_dict())
    report({"event": "store", "path": str(path), "cached": cached})
    return PatchStore.open(path)


def store_hash(store: PatchStore) -> str:
    """Content hash of a store's index and meta (meta holds every source's SHA-256)."""
    digest = hashlib.sha256()
    for name in ("meta.json", "index.csv"):
        digest.update((store.path / name).read_bytes())
    return digest.hexdigest()


# -- training -----------------------------------------------------------------------


def method_class(config: recipes.Recipe):
    """The recipe's method class and its checked parameters.

    A key of the method section that names a method holds that method's own parameters
    (``deep-sad: {pretrain_epochs: 10}``) and applies only when it is the one chosen, so
    one recipe serves several methods (``--set method.name=ss-dcae``); plain keys apply
    to whichever method is chosen and win over its block, key by key inside nested
    mappings too (``--set method.epochs.semi=8`` keeps the block's other stage epochs)."""
    name, source = config.method.name, config.source
    if not name:
        raise OneclassError(f"{source}: method.name: missing; see `oneclass list methods`")
    cls = registry.methods.get(name)
    known = set(registry.methods.names())
    plain = {k: v for k, v in config.method.params.items() if k not in known}
    for key, block in config.method.params.items():
        if key in known and not isinstance(block, dict):
            raise OneclassError(f"{source}: method.{key}: expected a mapping of {key}'s parameters")
    block = config.method.params.get(name) or {}
    origins = config.origins
    recipes.check_options(cls.Params, block, source, f"method.{name}.", origins)
    recipes.check_options(cls.Params, plain, source, "method.", origins)
    return cls, recipes.check_options(cls.Params, _merged(block, plain), source, "method.", origins)


def _merged(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = _merged(base[key], value) if both else value
    return merged


def train_run(config: recipes.Recipe, out: Path, store: PatchStore | None = None,
              resume: bool = False, overwrite: bool = False,
              report: Report | None = None) -> Path:
    """Train one run into ``out`` (built as ``out.partial``); returns ``out``.

    Nothing is deleted or written before the recipe, the destination, the data, the split
    and the method have all been checked; a folder already at ``out`` goes only once the
    new run is complete. A failure leaves ``out.partial`` only where it holds a checkpoint
    to resume from."""
    from oneclass.data.splits import make_split
    from oneclass.engine import PatchData, Trainer
    from oneclass.methods.base import build

    report = report or (lambda event: None)
    cls, params = method_class(config)
    partial = out.with_name(out.name + PARTIAL)
    _check_folder(config, out, partial, resume, overwrite)
    if store is None:
        store = obtain_store(config, report)
    else:
        check_store_matches(store, config)
    if len(store) == 0:
        raise OneclassError(f"{store.path}: the patch store is empty")
    labels = store.labels.astype(np.int64)
    split = make_split(labels, [r["subclass"] for r in store.index], [r["source"] for r in store.index],
                       config.split, config.seed)
    if cls.supervision == "supervised" and not split.counts["train"]["labeled_anomaly"]:
        raise OneclassError(f"method {cls.name}: needs labelled anomalies; set split.gamma > 0 "
                            f"(got {config.split.gamma})")
    report({"event": "split", "counts": split.counts, "seen_subclasses": split.seen_subclasses})
    in_shape = tuple(store.images.shape[1:])
    val = PatchData(store.images, split.val, labels=labels[split.val])
    trainer = Trainer(config.train, config.seed, partial, resume=resume, val=val, report=report)
    method = build(cls, params, in_shape, config.seed, keep_rng=False)  # drawn right after the seeding
    method.trainer = trainer
    if not resume:
        try:
            if partial.exists():
                discard(partial)  # checked to be an unfinished oneclass run
            partial.mkdir(parents=True)
            mark(partial, "run")
        except OSError as exc:
            raise OutputError(f"{partial}: cannot create the run folder: {exc.strerror or exc}") from None
    try:
        _train_into(config, partial, store, split, labels, cls, params, in_shape, val, trainer, method, resume)
        replace_folder(partial, out, "run")
    except BaseException as exc:
        kept = (partial / CHECKPOINT).is_file()
        if not kept:
            discard(partial)
        if isinstance(exc, OSError):
            where = (f"; the unfinished run is kept in {partial}: free space, then resume it "
                     f"with --resume" if kept else "")
            raise OutputError(f"{exc.filename or partial}: cannot write: {exc.strerror or exc}{where}") from None
        raise
    return out


def _train_into(config, partial: Path, store: PatchStore, split, labels, cls, params, in_shape,
                val, trainer, method, resume: bool) -> None:
    from oneclass.engine import PatchData

    if not resume:
        write_text(partial / "recipe.yaml", config.to_yaml())
        write_json(partial / "data.json", {
            "store": str(store.path.resolve()), "store_hash": store_hash(store),
            "image_shape": list(in_shape), "extraction": store.meta.get("params", {}),
            "dataset": store.meta.get("dataset", {}), "seen_subclasses": split.seen_subclasses,
            "counts": split.counts, "members": split.members()})
    write_json(partial / "env.json", environment(trainer.device))
    began = time.perf_counter()
    method.fit(PatchData(store.images, split.train, roles=split.train_roles), val)
    train_seconds = time.perf_counter() - began
    _save_model(partial / "model.pt", cls.name, params, in_shape, method)
    metrics = _score_sets(method, store, split, labels, partial, config.evaluate)
    metrics = {"method": cls.name, "dataset": config.dataset.name, "gamma": config.split.gamma,
               "seed": config.seed, **metrics,
               "train": {"seconds": round(train_seconds, 2), "items": len(split.train),
                         "patches_per_s": round(float(np.mean(trainer.throughput)), 1)
                         if trainer.throughput else None, "device": str(trainer.device)}}
    if method.explain is not None:
        _draw_maps(method, store, split.test, partial, metrics["test"], config.evaluate.pixel_auroc)
    write_json(partial / "metrics.json", metrics)
    (partial / CHECKPOINT).unlink(missing_ok=True)


# recipe keys of the patches section and the store meta's names for them
_STORE_KEYS = ("whole_image", "size", "stride", "mask_frac", "mask_threshold", "resize", "level",
               "max_per_image", "channels")


def check_store_matches(store: PatchStore, config: recipes.Recipe) -> None:
    """A store given with --store must have been cut as the recipe says, or the run's
    recipe.yaml would describe other data than its data.json."""
    made = store.meta.get("params") or {}
    params = extraction_params(config)
    params.check()
    wanted = asdict(params)
    made = {"whole_image": False, **made}  # stores written before whole images existed
    keys = [k for k in _STORE_KEYS if not (k == "channels" and wanted[k] is None)]
    if made.get("max_per_image") is not None:
        keys.append("seed")  # the seed drew the kept patches
    differ = [f"patches.{k} (recipe {wanted[k]!r}, store {made.get(k)!r})" if k != "seed" else
              f"seed (recipe {wanted[k]!r}, store {made.get(k)!r})"
              for k in keys if made.get(k) != wanted[k]]
    dataset = store.meta.get("dataset") or {}
    if dataset.get("name") != config.dataset.name:
        differ.insert(0, f"dataset.name (recipe {config.dataset.name!r}, store {dataset.get('name')!r})")
    else:  # the plugin's options decide which images and labels the store holds
        options = asdict(make_dataset_options(config))
        made_options = dataset.get("options") or {}
        differ[:0] = [f"dataset.{k} (recipe {options[k]!r}, store {made_options.get(k)!r})"
                      for k in options if k in made_options and made_options[k] != options[k]]
    if differ:
        raise OneclassError(f"{store.path}: the store was not cut as {config.source} says: "
                            f"{'; '.join(differ)}; use a matching store or set these keys with --set")


def _check_folder(config, out: Path, partial: Path, resume: bool, overwrite: bool) -> None:
    if resume:
        if not partial.is_dir():
            done = " (it finished: nothing to resume)" if out.is_dir() else ""
            raise OneclassError(f"{partial}: no unfinished run to resume{done}")
        import yaml

        started = yaml.safe_load((partial / "recipe.yaml").read_text())
        now = config.to_dict()
        if started != now:
            changed = sorted(k for k in set(started) | set(now) if started.get(k) != now.get(k))
            raise OneclassError(f"{partial}: the recipe differs from the one this run started "
                                f"with (section {', '.join(changed)}); resume with the same recipe")
        check_writable(partial)
        return
    check_destination(out, "run", overwrite)
    if partial.is_symlink() or partial.exists():
        if not overwrite:
            raise OneclassError(f"{partial}: an unfinished run is there; pass --resume to continue "
                                f"it or --overwrite to start again")
        if folder_kind(partial) != "run":
            raise OneclassError(f"{partial}: not an unfinished oneclass run (no {MARKER} marker); "
                                f"--overwrite only replaces runs: remove it yourself or choose another --out")


def _save_model(path: Path, name: str, params, in_shape, method) -> None:
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
    from oneclass.engine import PatchData
    from oneclass.metrics import check_image_rule, evaluate_scores

    evaluate = evaluate or recipes.EvaluateSection()
    whole = bool((store.meta.get("params") or {}).get("whole_image"))
    if not whole:
        check_image_rule(evaluate.image_score, evaluate.image_topk)
    (partial / "scores").mkdir(exist_ok=True)
    results, images = {}, {}
    for name, rows in (("val", split.val), ("test", split.test)):
        scores = method.score(PatchData(store.images, rows, labels=labels[rows]))
        patch_rows = score_rows(store.index, rows, scores)
        write_scores(partial / "scores" / f"{name}.csv", patch_rows)
        if not whole:
            images[name] = _image_rows(patch_rows, evaluate)
            write_image_scores(partial / "scores" / f"{name}_images.csv", images[name])
        results[name] = (labels[rows], scores)
    metrics = {"test": evaluate_scores(*results["test"], "test", val=results["val"]),
               "val": evaluate_scores(*results["val"], "validation")}
    for name, what in (("test", "test"), ("val", "validation")):
        if whole:
            metrics[name].update(image=None, image_absent="whole-image store: every item is an "
                                 "image, so the item metrics are the image metrics")
        else:
            metrics[name].update(_image_entry(images[name], evaluate, what))
    return metrics


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
    from oneclass.engine import PatchData
    from oneclass.metrics import pixel_auroc as pixel_level

    maps = method.explain(PatchData(store.images, rows))
    (partial / "maps").mkdir(exist_ok=True)
    np.save(partial / "maps" / "test.npy", maps.astype(np.float16))
    if pixel_auroc:
        test_metrics["pixel_auroc"] = pixel_level(store.masks[rows], maps)


def score_rows(index: list[dict], rows: np.ndarray, scores: np.ndarray,
               known_labels: bool = True) -> list[dict]:
    out = []
    for row, score in zip(rows.tolist(), scores.tolist()):
        entry = index[row]
        out.append({"id": entry["id"], "source": entry["source"], "x": entry["x"], "y": entry["y"],
                    "label": entry["label"] if known_labels else None,
                    "subclass": entry["subclass"] if known_labels else None, "score": float(score)})
    return out


# -- loading a run back -------------------------------------------------------------


def load_method(run: RunFolder, device: str = "auto"):
    """The run's trained method, ready to score (weights loaded with weights_only)."""
    import torch

    from oneclass.engine import deterministic_mode, resolve_device
    from oneclass.methods.base import build

    config = recipes.from_dict(run.recipe, str(run.path / "recipe.yaml"))
    cls, params = method_class(config)
    try:
        saved = torch.load(run.path / "model.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- any unreadable checkpoint is one user-facing error
        raise OneclassError(f"{run.path / 'model.pt'}: cannot load the model: {exc}") from None
    if saved.get("format") != RUN_FORMAT or saved.get("method") != cls.name:
        raise OneclassError(f"{run.path / 'model.pt'}: not a {cls.name} model of run format {RUN_FORMAT}")
    method = build(cls, params, tuple(saved["in_shape"]), config.seed)  # global random state untouched
    method.load_state_dict(saved["state"])
    deterministic_mode(config.train.deterministic)
    return method.to(resolve_device(device, "--device"), amp=config.train.amp)


# -- new inputs -----------------------------------------------------------------------


def scoring_input(run: RunFolder, source: str, stdin_lines: list[str] | None = None):
    """(images, index, known_labels) for INPUT: a patch store, an image file or folder
    (cut with the run's extraction parameters), or '-' with image paths in ``stdin_lines``."""
    shape = tuple(run.data["image_shape"])
    path = Path(source)
    if source != "-" and (path / "meta.json").is_file():
        store = PatchStore.open(path)
        got = tuple(store.meta.get("image_shape") or store.images.shape[1:])
        if got != shape:
            raise OneclassError(f"{path}: patches are {_shape(got)} but the run was trained on "
                                f"{_shape(shape)}; extract them as the run did (see its recipe.yaml)")
        return store.images, store.index, True
    if source == "-":
        paths = [Path(line.strip()) for line in stdin_lines or [] if line.strip()]
        if not paths:
            raise OneclassError("-: no image paths on standard input")
    elif path.is_dir():
        from oneclass.data.datasets.base import sorted_images

        folders = [path, *sorted(p for p in path.rglob("*") if p.is_dir())]
        paths = [image for folder in folders for image in sorted_images(folder)]
        if not paths:
            raise OneclassError(f"{path}: no images found")
    elif path.is_file():
        paths = [path]
    else:
        raise OneclassError(f"{path}: no such file, folder or patch store")
    # images are converted to the run's channel count only where its recipe asked for it
    convert = (run.recipe.get("patches") or {}).get("channels") is not None
    return cut_images(paths, run.data["extraction"], shape, convert)


def _shape(shape) -> str:
    return f"{shape[0]} x {shape[1]} x {shape[2]} (channels x height x width)"


@dataclass
class _DecodedImage(Item):
    """An image already in memory, with no mask (labels unknown)."""

    image: np.ndarray = None

    def load(self) -> Loaded:
        return Loaded(self.image, None, [])


def cut_images(paths: list[Path], params: dict, shape: tuple, convert: bool):
    from oneclass.data.extract import ExtractParams, ImageTask, run_image
    from oneclass.data.patches import NORMAL
    from oneclass.data.readers import read_image

    fields = {k: params[k] for k in ("size", "stride", "mask_frac", "resize", "level", "channels",
                                     "whole_image") if k in params}
    extract = ExtractParams(**{**fields, "level": 0, "max_per_image": None})
    extract.check()
    channels = shape[0]
    images, index = [], []
    for path in paths:
        if not path.is_file():
            raise OneclassError(f"{path}: no such image file")
        image = read_image(path)
        if not convert and image.shape[2] != channels:
            raise OneclassError(f"{path}: {image.shape[2]} channel(s), the run was trained on {channels}")
        chunk = run_image(ImageTask(_DecodedImage(str(path), NORMAL, image), extract, channels))
        images.append(chunk.images)
        for x, y in zip(chunk.x.tolist(), chunk.y.tolist()):
            index.append({"id": str(len(index)), "source": str(path), "x": str(x), "y": str(y)})
    pixels = np.concatenate(images) if images else np.zeros((0, *shape), np.uint8)
    if tuple(pixels.shape[1:]) != shape:
        raise OneclassError(f"{paths[0]}: patches come out {_shape(pixels.shape[1:])}, the run "
                            f"expects {_shape(shape)}")
    return pixels, index, False
