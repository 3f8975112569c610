"""Patch stores for recipes: extracted once per distinct dataset, extraction parameters
and source files, and cached (``ONECLASS_CACHE``); a store given by hand must match the
recipe it is trained with."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from oneclass import distributed
from oneclass import recipe as recipes
from oneclass import registry
from oneclass.data.store import PatchStore
from oneclass.errors import OneclassError

Report = Callable[[dict], None]


def cache_dir() -> Path:
    base = os.environ.get("ONECLASS_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "oneclass"
    return Path(base).expanduser() / "stores"


def make_dataset(config: recipes.Recipe):
    """The dataset plugin named by the recipe, with its options checked."""
    section = config.dataset
    cls = registry.datasets.get(section.name)
    root = Path(section.root).expanduser() if section.root else None
    if root is not None and not cls.needs_root:
        raise OneclassError(f"{config.where('dataset.root')}: dataset.root: dataset {section.name!r} makes its "
                            f"images and reads no folder; name your images' dataset with dataset.name "
                            f"(--dataset; `oneclass list datasets`)")
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
                         mask_threshold=p.mask_threshold, bits=p.bits)


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
    if params.bits is None:
        described.pop("bits")  # the stores cut before bits existed keep their keys
    key = {"dataset": dataset.name, "root": str(dataset.root.resolve()) if dataset.root else None,
           "options": asdict(dataset.options), "params": described, "files": files,
           "store_format": 1}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def obtain_store(config: recipes.Recipe, report: Report, wait: bool = False) -> PatchStore:
    """The recipe's patch store: from the cache when an identical one was extracted. With
    ``wait`` another process (torchrun's rank 0) is extracting it: wait until it is there
    (the store's meta.json is written last, by a rename). Jobs started together on a cold
    cache (a sweep's, a job array's) cut the store once: the first holds its lock while
    the others wait, then read what it cut."""
    from oneclass.data.extract import extract

    dataset = make_dataset(config)
    params = extraction_params(config)
    params.check()
    path = cache_dir() / f"{dataset.name}-{store_key(dataset, params)}"
    _check_cache_shared(path)
    cached = (path / "meta.json").is_file()
    while wait and not (path / "meta.json").is_file():
        time.sleep(0.5)
    if not cached and not wait:
        with _cutting(path, report):
            cached = (path / "meta.json").is_file()  # cut by the job that held the lock
            if not cached:
                extract(dataset, params, path, overwrite=True, recipe=config.to_dict())
    report({"event": "store", "path": str(path), "cached": cached})
    return PatchStore.open(path)


def _check_cache_shared(path: Path) -> None:
    """Under torchrun, rank 0 cuts the store and the other ranks wait for it in their own
    cache folder, which on another node may be another disk: they would wait forever.
    Before any cutting, rank 0 leaves a file of a name drawn for this job beside the
    stores, and every rank says whether it sees that file or the store already cut."""
    if distributed.current() is None:
        return
    marker = path.parent / f".torchrun-{distributed.from_rank0(secrets.token_hex(8))}"
    problem = ""
    if distributed.is_writer():
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError as exc:  # a read-only cache that holds the store is fine
            problem = f"rank 0 cannot write there ({exc.strerror or exc})"
    distributed.barrier()  # the others look only once rank 0 has written it
    try:
        seen = distributed.every_rank(marker.is_file() or (path / "meta.json").is_file())
    finally:
        if distributed.is_writer():
            marker.unlink(missing_ok=True)
    blind = [str(rank) for rank, ok in enumerate(seen) if not ok]
    if blind and not seen[0]:
        raise OneclassError(f"ONECLASS_CACHE ({path.parent.parent}): {problem or 'rank 0 cannot write there'}; "
                            f"the patch store is cut into it")
    if blind:
        raise OneclassError(f"ONECLASS_CACHE ({path.parent.parent}): rank(s) {', '.join(blind)} do not "
                            f"see what rank 0 writes there; across nodes, put the cache on a file system "
                            f"every node shares (rank 0 cuts the patch store into it once), or pass --store")


def lock_file(path: Path) -> Path:
    """The lock a cached store is cut under (beside the stores, not among them)."""
    return path.parent.parent / "locks" / f"{path.name}.lock"


@contextmanager
def _cutting(path: Path, report: Report):
    """Hold ``path``'s lock (an advisory flock, released when the process ends, however
    it ends). Without one (no fcntl on Windows, a file system that refuses locks) each
    job cuts the store itself and the last rename wins: the same content, cut again."""
    try:
        import fcntl
    except ImportError:
        fcntl = None
    lock = lock_file(path)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fh = open(lock, "a")
    except OSError:  # an unwritable cache: extraction says so, naming the place
        yield
        return
    with fh:
        if fcntl is not None:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                report({"event": "store_wait", "path": str(path)})
                fcntl.flock(fh, fcntl.LOCK_EX)
            except OSError:  # e.g. ENOLCK on an NFS mount without a lock daemon
                pass
        yield


def store_hash(store: PatchStore) -> str:
    """Content hash of a store's index and meta (meta holds every source's SHA-256)."""
    digest = hashlib.sha256()
    for name in ("meta.json", "index.csv"):
        digest.update((store.path / name).read_bytes())
    return digest.hexdigest()


# recipe keys of the patches section and the store meta's names for them
_STORE_KEYS = ("whole_image", "size", "stride", "mask_frac", "mask_threshold", "bits", "resize", "level",
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
