"""The semi-supervised protocol: a patch store → training, validation and test sets.

Definitions (c-ss-ms-gvae.txt Sec. 4, ss-vq-vae.txt, Ruff et al. 2020):

- the training set has N unlabelled items (assumed normal, but some are in truth
  anomalous: ``contamination`` of the whole training set, as the papers pollute it), L
  labelled normal and M labelled anomalous items; ``gamma = M / (L + M + N)`` (0 is the
  unsupervised case), or M given as a count, ``labeled_anomalies`` (DevNet's few shots);
- labelled anomalies come only from the ``seen_subclasses``; the polluting anomalies and
  the test set hold every subclass (the open-set case);
- the validation set holds inliers and outliers (thresholds, hyperparameters, early
  stopping); the test set is balanced normal/anomalous by default. ``val_subclasses``
  and ``val_anomalies`` make its anomalies few and of limited types, the perceptual-AE
  paper's "small subset of limited types of anomalies" that only chooses
  hyperparameters (perceptual-ae.txt Sec. 3.3): the unchosen ones are unused, not
  moved to another set.

With ``test_sources`` the test pool is the dataset's own test split (MNIST's t10k/
items) instead of ``test_fraction`` of the sources, and ``test_anomaly_share`` thins an
unbalanced test set's anomalies (Ganomaly's MNIST protocol keeps half of them).

With ``group_by: source`` whole source images are dealt to the test, validation and
training pools, so neighbouring (overlapping) patches of one image never straddle two
sets; with ``none`` patches are dealt one by one, which uses the data better but lets
overlapping patches of one image land in training and test (optimistic scores).

The polluting and the labelled anomalies are disjoint, and a request that the pools
cannot meet fails with the numbers (NOTES.md: the public DeepSAD split did neither).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from oneclass.data.items import LABELED_ANOMALY, LABELED_NORMAL, ROLE_NAMES, UNLABELED
from oneclass.errors import OneclassError



class SplitError(OneclassError):
    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key  # the split key at fault, where one is


@dataclass
class Split:
    """Row indices into a patch store. ``train_roles`` is all a method may see of the
    training items' supervision; ground truth stays in the store's index."""

    train: np.ndarray
    train_roles: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seen_subclasses: list[str]
    counts: dict
    test_pool: np.ndarray | None = None  # every patch of the test pool (the test set is drawn from it)

    def members(self) -> dict:
        return {"train": self.train.tolist(), "train_roles": self.train_roles.tolist(),
                "val": self.val.tolist(), "test": self.test.tolist()}


def make_split(labels: np.ndarray, subclasses: list[str], sources: list[str], section,
               seed: int) -> Split:
    """Deal a store's patches (``labels`` 0/1, per-patch ``subclasses`` and ``sources``)
    into the sets ``section`` (a recipe SplitSection) asks for."""
    check_section(section)
    labels = np.asarray(labels).astype(bool)
    subclasses = np.asarray(subclasses, dtype=object)
    rng = np.random.default_rng([section.seed if section.seed is not None else seed, 1729])
    present = sorted(set(subclasses[labels].tolist()))
    seen = _seen(section.seen_subclasses, present, rng)

    groups = np.asarray(sources, dtype=object) if section.group_by == "source" \
        else np.arange(len(labels))
    if section.test_sources is None:
        test_pool, val_pool, train_pool = _deal_groups(groups, labels, subclasses,
                                                       section.test_fraction, section.val_fraction, rng)
    else:
        test_pool, val_pool, train_pool = _deal_by_source(groups, labels, subclasses, sources,
                                                          section, rng)
    test = _test_set(test_pool, labels, section, rng)
    val = _val_of_subclasses(np.sort(val_pool), labels, subclasses, present, seen, section.val_subclasses)
    # grouping by source can starve a set of a label only where some source holds several items
    grouped = section.group_by == "source" and len(set(sources)) < len(labels)
    _need_both(val, labels, "validation", "split.val_fraction", grouped)
    train, roles, train_counts = _train_set(train_pool, labels, subclasses, seen, section, rng)
    if section.val_anomalies is not None:  # drawn last: the other sets are as without it
        anomalous = val[labels[val]]
        kept = rng.permutation(anomalous)[:section.val_anomalies]
        val = np.sort(np.r_[val[~labels[val]], kept])
    counts = {"train": train_counts,
              "val": _label_counts(val, labels), "test": _label_counts(test, labels),
              "pools": {"train": _label_counts(train_pool, labels),
                        "val": _label_counts(val_pool, labels),
                        "test": _label_counts(test_pool, labels)},
              "unused": int(len(labels) - len(train) - len(val) - len(test))}
    return Split(train, roles, val, test, seen, counts, np.sort(test_pool))


def check_section(section) -> None:
    """The split section's keys alone, before any data is read."""
    def bad(key, why):
        raise SplitError(f"split.{key}: {why}", f"split.{key}")

    if not 0 <= section.gamma <= 0.5:
        bad("gamma", f"must lie in [0, 0.5], got {section.gamma}")
    if section.labeled_anomalies is not None:
        if section.gamma:
            bad("labeled_anomalies", f"give either split.gamma ({section.gamma}) or "
                f"split.labeled_anomalies ({section.labeled_anomalies}), not both")
        if section.labeled_anomalies < 0:
            bad("labeled_anomalies", f"must be >= 0, got {section.labeled_anomalies}")
    if not 0 <= section.contamination < 1:
        bad("contamination", f"must lie in [0, 1), got {section.contamination}")
    if section.labeled_normal < 0:
        bad("labeled_normal", f"must be >= 0, got {section.labeled_normal}")
    for key in ("val_fraction", "test_fraction"):
        if not 0 < getattr(section, key) < 1:
            bad(key, f"must lie in (0, 1), got {getattr(section, key)}")
    if not 0 < section.test_anomaly_share <= 1:
        bad("test_anomaly_share", f"must lie in (0, 1], got {section.test_anomaly_share}")
    if section.test_sources is not None and not section.test_sources:
        bad("test_sources", "an empty prefix would put every item in the test pool; "
            "leave it out to deal test items by split.test_fraction")
    if section.test_sources is None and section.val_fraction + section.test_fraction >= 1:
        bad("test_fraction", "val_fraction + test_fraction must leave something to train on")
    request = section.val_subclasses
    if isinstance(request, str) and request != "seen":
        bad("val_subclasses", f"expected a list of subclasses or 'seen', got {request!r}")
    if isinstance(request, list) and not request:
        bad("val_subclasses", "empty list; leave it out to validate on every subclass")
    for key in ("train_size", "test_size", "val_anomalies"):
        if getattr(section, key) is not None and getattr(section, key) <= 0:
            bad(key, f"must be positive, got {getattr(section, key)}")
    if section.test_size == 1:
        bad("test_size", "a test set needs a normal and an anomalous patch at least: 2 or more")
    if section.test_balanced and section.test_size is not None and section.test_size % 2:
        bad("test_size", f"a balanced test set holds as many normal as anomalous patches, so its "
            f"size must be even, got {section.test_size} (or set split.test_balanced: false)")


def _seen(request, present: list[str], rng: np.random.Generator) -> list[str]:
    if not present:
        raise SplitError("the patch store holds no anomalous patches; the protocol needs "
                         "anomalies for validation and testing (lower patches.mask_frac?)")
    if request is None:
        return present
    if request == "half":
        k = max(1, len(present) // 2)
        return sorted(rng.permutation(present)[:k].tolist())
    if isinstance(request, str):
        raise SplitError(f"split.seen_subclasses: expected a list of subclasses or 'half', got {request!r}")
    _check_known(request, present, "split.seen_subclasses")
    if not request:
        raise SplitError("split.seen_subclasses: empty list; leave it out to use every subclass")
    return sorted(set(request))


def _check_known(request: list[str], present: list[str], key: str) -> None:
    unknown = [s for s in request if s not in present]
    if unknown:
        raise SplitError(f"{key}: no anomalous patches of subclass "
                         f"{', '.join(map(repr, unknown))}; the store has {', '.join(present)}")


def _deal_groups(groups: np.ndarray, labels: np.ndarray, subclasses: np.ndarray,
                 test_fraction: float, val_fraction: float, rng) -> tuple[np.ndarray, ...]:
    """Deal whole groups to the test, validation and training pools.

    Groups holding anomalies are ordered by interleaving their kinds (their sets of
    anomaly subclasses, each kind shuffled) and cut by the cumulative share of anomalous
    patches; normal-only groups are shuffled and cut by their share of patches. A group
    goes where the midpoint of its share falls, so every pool gets about its fraction of
    the anomalies, with a mix of kinds."""
    names, inverse = np.unique(groups, return_inverse=True)
    anomalous_per_group = np.bincount(inverse, weights=labels, minlength=len(names))
    size_per_group = np.bincount(inverse, minlength=len(names))
    found: list[set] = [set() for _ in names]
    for g, label, subclass in zip(inverse.tolist(), labels.tolist(), subclasses.tolist()):
        if label:
            found[g].add(subclass)
    kinds: dict[tuple, list[int]] = {}
    for g, subclass_set in enumerate(found):
        if subclass_set:
            kinds.setdefault(tuple(sorted(subclass_set)), []).append(g)
    keys = sorted(kinds)
    shuffled = [rng.permutation(kinds[keys[i]]).tolist() for i in rng.permutation(len(keys))]
    with_anomalies = [g for column in itertools.zip_longest(*shuffled) for g in column if g is not None]
    normal_only = rng.permutation([g for g, f in enumerate(found) if not f]).astype(int)
    pool_of_group = np.full(len(names), 2)  # 0 test, 1 val, 2 train
    bounds = np.array([test_fraction, test_fraction + val_fraction])
    for members, weights in ((np.array(with_anomalies, dtype=int), anomalous_per_group),
                             (normal_only, size_per_group)):
        if len(members):
            weight = weights[members] / weights[members].sum()
            mids = np.cumsum(weight) - weight / 2
            pools = np.searchsorted(bounds, mids, side="right")
            if members is not normal_only:
                _no_empty_pool(pools, weight, mids, np.array([0.0, *bounds, 1.0]))
            pool_of_group[members] = pools
    pool = pool_of_group[inverse]
    return tuple(np.flatnonzero(pool == p) for p in range(3))


def _deal_by_source(groups, labels, subclasses, sources, section, rng) -> tuple[np.ndarray, ...]:
    """The test pool is the dataset's own test split (the items whose source begins with
    ``test_sources``, e.g. MNIST's t10k/); the other groups are dealt to validation
    (``val_fraction`` of them) and training as usual."""
    in_test = np.array([s.startswith(section.test_sources) for s in sources], dtype=bool)
    if not in_test.any() or in_test.all():
        raise SplitError(f"split.test_sources: {in_test.sum()} of {len(in_test)} items have a "
                         f"source beginning with {section.test_sources!r} (e.g. {sources[0]!r}); "
                         f"the test pool needs some and training the rest")
    rest = np.flatnonzero(~in_test)
    _, val_rows, train_rows = _deal_groups(groups[rest], labels[rest], subclasses[rest], 0.0,
                                           section.val_fraction, rng)
    return np.flatnonzero(in_test), rest[val_rows], rest[train_rows]


def _no_empty_pool(pools: np.ndarray, weight: np.ndarray, mids: np.ndarray, edges: np.ndarray) -> None:
    """Give every pool with a share at least one of the groups holding anomalies, while
    there are enough of them: a heavy group can swallow a small pool's whole share (its
    midpoint falls beyond it), leaving the validation set without anomalies. The group
    moved is the lightest one a pool with groups to spare can give (the nearest to the
    empty share among equals), so the pools' shares move as little as they can."""
    for pool in range(len(edges) - 1):
        if (pools == pool).any() or edges[pool + 1] <= edges[pool]:
            continue
        counts = np.bincount(pools, minlength=len(edges) - 1)
        spare = np.flatnonzero(counts[pools] > 1)
        if not len(spare):
            return
        centre = (edges[pool] + edges[pool + 1]) / 2
        pools[spare[np.lexsort((np.abs(mids[spare] - centre), weight[spare]))[0]]] = pool


def _test_set(pool: np.ndarray, labels: np.ndarray, section, rng) -> np.ndarray:
    normal, anomalous = pool[~labels[pool]], pool[labels[pool]]
    _need_both(pool, labels, "test", "split.test_sources" if section.test_sources else "split.test_fraction")
    if section.test_anomaly_share < 1:
        if section.test_balanced:
            raise SplitError("split.test_anomaly_share: thins an unbalanced test set's anomalies; "
                             "set split.test_balanced: false with it")
        # Ganomaly's MNIST protocol: every normal test item and a share of the anomalous ones
        kept = rng.permutation(anomalous)[:max(1, round(section.test_anomaly_share * len(anomalous)))]
        pool = np.sort(np.concatenate([normal, kept]))
        anomalous = kept
    if not section.test_balanced:
        if section.test_size is None:
            return np.sort(pool)
        if section.test_size > len(pool):
            raise SplitError(f"split.test_size: {section.test_size} asked, the test pool has "
                             f"{len(pool)} patches (raise split.test_fraction)")
        # keep the pool's proportions
        n_anom = round(section.test_size * len(anomalous) / len(pool))
        n_anom = min(max(n_anom, 1), section.test_size - 1)
        return np.sort(np.concatenate([rng.permutation(normal)[:section.test_size - n_anom],
                                       rng.permutation(anomalous)[:n_anom]]))
    half = min(len(normal), len(anomalous))
    if section.test_size is not None:
        if section.test_size // 2 > half:
            raise SplitError(f"split.test_size: a balanced test set of {section.test_size} needs "
                             f"{section.test_size // 2} of each label; the test pool has "
                             f"{len(normal)} normal and {len(anomalous)} anomalous patches")
        half = section.test_size // 2
    return np.sort(np.concatenate([rng.permutation(normal)[:half], rng.permutation(anomalous)[:half]]))


def _val_of_subclasses(val: np.ndarray, labels: np.ndarray, subclasses: np.ndarray, present: list[str],
                       seen: list[str], request) -> np.ndarray:
    """The validation rows without the anomalies of subclasses ``request`` leaves out."""
    if request is None:
        return val
    if request == "seen":
        request = seen
    _check_known(request, present, "split.val_subclasses")
    kept = val[~labels[val] | np.isin(subclasses[val], list(request))]
    if not labels[kept].any():
        raise SplitError(f"split.val_subclasses: the validation set holds no anomalous patch of "
                         f"{', '.join(request)} (it has {', '.join(sorted(set(subclasses[val[labels[val]]])))}); "
                         f"name others, or raise split.val_fraction")
    return kept


def _need_both(rows: np.ndarray, labels: np.ndarray, name: str, key: str, grouped: bool = True) -> None:
    n_anom = int(labels[rows].sum())
    if n_anom == 0 or n_anom == len(rows):
        ungroup = ", or split.group_by: none" if grouped else ""
        raise SplitError(f"{key}: the {name} set got {len(rows) - n_anom} normal and {n_anom} "
                         f"anomalous patches; it needs both (more sources or a larger fraction{ungroup})")


def _train_set(pool, labels, subclasses, seen, section, rng):
    normal = rng.permutation(pool[~labels[pool]])
    anomalous = pool[labels[pool]]
    seen_mask = np.isin(subclasses[anomalous], seen)
    labelable = rng.permutation(anomalous[seen_mask])
    gamma, c, n_lab_normal = section.gamma, section.contamination, section.labeled_normal
    shots = section.labeled_anomalies
    if shots is not None and shots > len(labelable):
        seen_text = f" of subclasses {', '.join(seen)}" if section.seen_subclasses is not None else ""
        raise SplitError(f"split.labeled_anomalies: {shots} asked, the training pool holds "
                         f"{len(labelable)} anomalous patches{seen_text} to label")

    def need(total: int) -> tuple[int, int, int, int]:
        m = shots if shots is not None else round(gamma * total)
        n = total - n_lab_normal - m
        polluting = round(c * total)  # a share of the whole training set, as the papers pollute
        return m, n, polluting, n - polluting

    def feasible(total: int) -> bool:
        m, n, polluting, clean = need(total)
        labelled = shots is not None or gamma == 0 or m >= 1  # a gamma that rounds to no label is not that gamma
        return (labelled and n > 0 and clean >= 0 and m <= len(labelable) and m + polluting <= len(anomalous)
                and clean + n_lab_normal <= len(normal))

    if section.train_size is not None:
        total = section.train_size
    else:
        # the largest training set the pool allows: normal items fill (1 - gamma - c) of
        # it (or all but c and the M shots), anomalies gamma + c (or M shots + c)
        if shots is None:
            bounds = [len(normal) / max(1 - gamma - c, 1e-9)]
            if gamma > 0:
                bounds.append(len(labelable) / gamma)
            if gamma + c > 0:
                bounds.append(len(anomalous) / (gamma + c))
        else:
            bounds = [(len(normal) + shots) / (1 - c)]
            if c > 0:
                bounds.append((len(anomalous) - shots) / c)
        total = int(math.floor(min(bounds))) + 1
        while total > 0 and not feasible(total):
            total -= 1
    if total > 0 and shots is None and gamma > 0 and round(gamma * total) < 1:
        raise SplitError(f"split.train_size: gamma {gamma} of {total} training items rounds to no labelled "
                         f"anomaly; it takes at least {next(t for t in itertools.count(1) if round(gamma * t) >= 1)} "
                         f"items (or name a number with split.labeled_anomalies)")
    if total <= 0 or not feasible(total):
        m, n, polluting, clean = need(max(total, 1))
        m = m if shots is not None or gamma == 0 else max(m, 1)
        seen_text = f" of subclasses {', '.join(seen)}" if section.seen_subclasses is not None else ""
        raise SplitError(
            f"split: a training set of {total} at "
            f"{f'{shots} labelled anomalies' if shots is not None else f'gamma {gamma}'} and contamination {c} needs "
            f"{m} labelled anomalies{seen_text}, {polluting} polluting anomalies and "
            f"{clean + n_lab_normal} normal patches; the training pool has {len(labelable)} "
            f"labelable and {len(anomalous)} anomalous in all, and {len(normal)} normal "
            f"(lower split.train_size, split.gamma or split.contamination)")
    m, n, polluting, clean = need(total)
    labeled_anomaly = labelable[:m]
    rest = rng.permutation(np.setdiff1d(anomalous, labeled_anomaly))
    members = {LABELED_NORMAL: normal[:n_lab_normal],
               UNLABELED: np.concatenate([normal[n_lab_normal:n_lab_normal + clean], rest[:polluting]]),
               LABELED_ANOMALY: labeled_anomaly}
    train = np.concatenate(list(members.values()))
    roles = np.concatenate([np.full(len(v), role, dtype=np.int8) for role, v in members.items()])
    order = np.argsort(train, kind="stable")
    counts = {ROLE_NAMES[r]: int(len(v)) for r, v in members.items()}
    counts["polluting"] = int(polluting)
    counts["total"] = int(total)
    counts["gamma"] = m / total
    return train[order], roles[order], counts


def _label_counts(rows: np.ndarray, labels: np.ndarray) -> dict:
    n_anom = int(labels[rows].sum())
    return {"normal": int(len(rows) - n_anom), "anomalous": n_anom}
