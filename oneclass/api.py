"""The toolkit from Python, without the CLI (the scikit-learn habit)::

    from oneclass import api

    config = api.load_recipe("recipes/demo.yaml", ["train.epochs=5"])
    store = api.patch_store(config)            # extracted once, then cached
    sets = api.split(store, config)            # train (roles only), val and test (labels)
    method = api.method_from_recipe(config, store)
    method.fit(sets.train, sets.val)
    print(api.auroc(sets.test, method.score(sets.test)))
    print(method.score(api.cut_images(["scan.png"], store)))   # higher = more anomalous

Each step is what ``oneclass train`` does, with the same seeding: the same recipe and
seed give the same scores here and on the command line. A method's learned state is
``method.state_dict()``; ``oneclass.methods.base.build`` makes an untrained twin to load
it into.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oneclass import recipe as recipes
from oneclass.data.store import PatchStore
from oneclass.data.items import PatchData

__all__ = ["Sets", "auroc", "cut_images", "load_recipe", "method_from_recipe", "patch_store", "split"]


@dataclass
class Sets:
    train: PatchData  # with roles (what a method may see), no labels
    val: PatchData  # with labels
    test: PatchData  # with labels
    counts: dict  # the split's counts, as data.json records them


def load_recipe(path: str | Path | None, overrides: list[str] = ()) -> recipes.Recipe:
    """A checked recipe; ``overrides`` are ``section.key=value`` strings as for ``--set``."""
    return recipes.load(path, list(overrides))


def patch_store(config: recipes.Recipe) -> PatchStore:
    """The recipe's patch store, extracted into the cache on first use."""
    from oneclass.stores import obtain_store

    return obtain_store(config, lambda event: None)


def split(store: PatchStore, config: recipes.Recipe) -> Sets:
    """The recipe's split of ``store`` into training, validation and test items."""
    from oneclass.data.splits import make_split

    labels = store.labels.astype(np.int64)
    made = make_split(labels, [r["subclass"] for r in store.index], [r["source"] for r in store.index],
                      config.split, config.seed)
    return Sets(PatchData(store.images, made.train, roles=made.train_roles),
                PatchData(store.images, made.val, labels=labels[made.val]),
                PatchData(store.images, made.test, labels=labels[made.test]), made.counts)


def method_from_recipe(config: recipes.Recipe, store: PatchStore):
    """The recipe's method for ``store``'s items, ready to ``fit``: its networks drawn
    from the recipe's seed, trained as the ``train`` section says (device, batch size,
    lr, epochs), with no run folder (no checkpoints or logs)."""
    from oneclass.engine import Trainer
    from oneclass.training import build_method, method_class

    cls, params = method_class(config)
    trainer = Trainer(config.train, config.seed)  # seeds, as `oneclass train` does before building
    method = build_method(config, cls, params, tuple(store.images.shape[1:]), keep_rng=False)
    method.trainer = trainer
    return method


def cut_images(paths: list[str | Path], store: PatchStore) -> PatchData:
    """Image files cut into items as ``store`` was cut (size, stride, resize, channels,
    whole images), ready to score."""
    from oneclass.scoring import cut_images as cut

    images, _, _ = cut([Path(p) for p in paths], store.meta["params"], tuple(store.images.shape[1:]))
    return PatchData(images, np.arange(len(images)))


def auroc(data: PatchData, scores: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` against ``data``'s labels."""
    from oneclass.metrics import auroc as area

    return area(data.labels, scores)
