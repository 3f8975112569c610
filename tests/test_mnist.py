"""The mnist dataset plugin: idx parsing, one-vs-rest labels, train files, provenance, errors."""

import gzip
import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import shared

from oneclass import recipe as recipes
from oneclass.data.datasets import mnist as M
from oneclass.data.datasets.mnist import MNISTDataset
from oneclass.data.extract import ExtractParams, extract
from oneclass.data.items import NORMAL
from oneclass.data.store import PatchStore
from oneclass.errors import OneclassError

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "mnist.yaml"
T10K = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9, 0, 6, 3]  # 13 images; no 8
TRAIN = [5, 0, 4, 1, 9, 8]


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    head = bytes([0, 0, 0x08, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return head + array.tobytes()


def digits_images(labels: list[int], seed: int) -> np.ndarray:
    """Distinct images: random pixels, with the label and the index written in the corner."""
    images = np.random.default_rng(seed).integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
    images[:, 0, 0] = labels
    images[:, 0, 1] = np.arange(len(labels))
    return images


def write_split(folder: Path, split: str, labels: list[int], gz: bool = True, images: bool = True,
                seed: int = 0) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    pixels = digits_images(labels, seed)
    suffix = ".gz" if gz else ""
    opener = gzip.open if gz else open
    with opener(folder / f"{split}-labels-idx1-ubyte{suffix}", "wb") as fh:
        fh.write(idx_bytes(np.array(labels)))
    if images:
        with opener(folder / f"{split}-images-idx3-ubyte{suffix}", "wb") as fh:
            fh.write(idx_bytes(pixels))
    return pixels


def dataset(root: Path, **options) -> MNISTDataset:
    return MNISTDataset(root, MNISTDataset.Options(**options))


@pytest.fixture
def t10k(tmp_path) -> tuple[Path, np.ndarray]:
    pixels = write_split(tmp_path / "raw", "t10k", T10K)
    return tmp_path, pixels


def one_line_error(excinfo, *needles: str) -> str:
    text = str(excinfo.value)
    assert "\n" not in text and isinstance(excinfo.value, OneclassError)
    for needle in needles:
        assert needle in text, text
    return text


# -- items ------------------------------------------------------------------------------

def test_t10k_items_labels_subclasses_and_pixels(t10k):
    root, pixels = t10k
    items = dataset(root).items()
    assert [i.source for i in items] == [f"t10k/{k:05d}" for k in range(len(T10K))]
    assert [i.subclass for i in items] == [NORMAL if d == 0 else f"digit-{d}" for d in T10K]
    for item, digit, expected in zip(items, T10K, pixels):
        loaded = item.load()
        assert loaded.image.shape == (28, 28, 1) and loaded.image.dtype == np.uint8
        assert np.array_equal(loaded.image[:, :, 0], expected)
        if digit == 0:
            assert loaded.labels is None and loaded.categories == []
        else:  # wholly anomalous
            assert loaded.labels.shape == (28, 28) and loaded.labels.dtype == np.uint8
            assert (loaded.labels == 1).all() and loaded.categories == [f"digit-{digit}"]
    assert dataset(root).subclasses() == [f"digit-{d}" for d in (1, 2, 3, 4, 5, 6, 7, 9)]


@pytest.mark.parametrize("where", ["parent", "raw"])
def test_plain_files_and_either_root(tmp_path, where):
    pixels = write_split(tmp_path / "raw", "t10k", T10K, gz=False)
    root = tmp_path if where == "parent" else tmp_path / "raw"
    items = dataset(root, normal_classes=[4, 9]).items()
    assert len(items) == len(T10K)
    assert [i.subclass == NORMAL for i in items] == [d in (4, 9) for d in T10K]
    assert np.array_equal(items[7].load().image[:, :, 0], pixels[7])


def test_plain_file_wins_over_gz(tmp_path):
    write_split(tmp_path / "raw", "t10k", T10K, gz=True, seed=1)
    plain = write_split(tmp_path / "raw", "t10k", T10K, gz=False, seed=2)
    item = dataset(tmp_path).items()[3]
    assert item.pair.images_path.name == "t10k-images-idx3-ubyte"
    assert np.array_equal(item.load().image[:, :, 0], plain[3])


def test_train_files_are_used_when_present(t10k):
    root, pixels = t10k
    train = write_split(root / "raw", "train", TRAIN, seed=5)
    items = dataset(root).items()
    assert [i.source for i in items[:len(TRAIN)]] == [f"train/{k:05d}" for k in range(len(TRAIN))]
    assert len(items) == len(TRAIN) + len(T10K)
    assert [i.digit for i in items] == TRAIN + T10K
    assert np.array_equal(items[4].load().image[:, :, 0], train[4])
    assert np.array_equal(items[len(TRAIN) + 4].load().image[:, :, 0], pixels[4])
    assert "digit-8" in dataset(root).subclasses()  # only in train
    assert len(dataset(root, use_train=False).items()) == len(T10K)


def test_train_labels_without_images_are_ignored(t10k):
    root, _ = t10k
    write_split(root / "raw", "train", TRAIN, images=False)
    items = dataset(root).items()
    assert len(items) == len(T10K) and all(i.source.startswith("t10k/") for i in items)


def test_items_share_the_parsed_arrays_and_pickle_small(t10k):
    root, pixels = t10k
    items = dataset(root).items()
    assert items[0].load() is not None and items[1].pair.images() is items[0].pair.images()
    blob = pickle.dumps(items[5])
    assert len(blob) < 2000  # the arrays stay out of the pickle
    again = pickle.loads(blob)
    assert np.array_equal(again.load().image[:, :, 0], pixels[5])


def test_max_per_class_is_a_seeded_draw_per_digit(tmp_path):
    labels = [d for d in range(10) for _ in range(6)][::-1]
    write_split(tmp_path / "raw", "t10k", labels)
    picked = [i.index for i in dataset(tmp_path, max_per_class=2).items()]
    assert picked == sorted(picked) and len(picked) == 20
    assert sorted(labels[k] for k in picked) == sorted(list(range(10)) * 2)
    assert picked == [i.index for i in dataset(tmp_path, max_per_class=2).items()]
    assert picked != [i.index for i in dataset(tmp_path, max_per_class=2, seed=1).items()]
    assert len(dataset(tmp_path, max_per_class=100).items()) == len(labels)


# -- extraction and provenance -------------------------------------------------------------

def test_extract_hashes_each_file_once_and_records_the_index(t10k, monkeypatch):
    root, pixels = t10k
    calls = []
    real = M.file_record
    monkeypatch.setattr(M, "file_record", lambda path, base: calls.append(path) or real(path, base))
    store_path, meta = extract(dataset(root, normal_classes=[1]), ExtractParams(size=28), root / "store")
    assert len(calls) == 2  # images and labels file, once each
    sha = hashlib.sha256((root / "raw/t10k-images-idx3-ubyte.gz").read_bytes()).hexdigest()
    record = meta["sources"][9]
    assert record["source"] == "t10k/00009" and record["subclass"] == "digit-9"
    assert record["files"][0] == {"path": "raw/t10k-images-idx3-ubyte.gz",
                                  "size": (root / "raw/t10k-images-idx3-ubyte.gz").stat().st_size,
                                  "sha256": sha, "index": 9}
    assert record["files"][1]["path"] == "raw/t10k-labels-idx1-ubyte.gz" and record["files"][1]["index"] == 9
    store = PatchStore.open(store_path)
    assert np.array_equal(store.images[:, 0], pixels)
    assert [r["label"] for r in store.index] == ["0" if d == 1 else "1" for d in T10K]
    assert [r["subclass"] for r in store.index] == [NORMAL if d == 1 else f"digit-{d}" for d in T10K]
    assert (store.masks.reshape(len(T10K), -1).min(1) == store.masks.reshape(len(T10K), -1).max(1)).all()
    assert [int(m.max()) for m in store.masks] == [0 if d == 1 else 1 for d in T10K]


def test_extract_with_workers_matches(t10k):
    root, _ = t10k
    one, _ = extract(dataset(root), ExtractParams(size=28, resize=32), root / "one")
    two, _ = extract(dataset(root), ExtractParams(size=28, resize=32, workers=2), root / "two")
    assert np.array_equal(PatchStore.open(one).images, PatchStore.open(two).images)


# -- options and recipes ------------------------------------------------------------------

def test_recipe_and_set_with_a_list_value_reach_the_options():
    config = recipes.load(RECIPE, ["dataset.normal_classes=[3, 5]"])
    assert config.dataset.name == "mnist" and config.patches.resize == 32
    options = recipes.check_options(MNISTDataset.Options, config.dataset.options, config.source, "dataset.")
    assert options.normal_classes == [3, 5]
    config = recipes.load(RECIPE, ["dataset.normal_classes=[3]", "split.seen_subclasses=[digit-7]"])
    assert config.dataset.options["normal_classes"] == [3] and config.split.seen_subclasses == ["digit-7"]
    with pytest.raises(OneclassError, match=r"dataset\.normal_classes\[0\]: expected an integer"):
        recipes.check_options(MNISTDataset.Options, {"normal_classes": ["three"]}, "r.yaml", "dataset.")


@pytest.mark.parametrize("normal,needle", [
    ([10], "10 is not a digit"), ([-1], "-1 is not a digit"), ([], "empty"),
    (list(range(10)), "all ten"), ([8], "no images of digit 8"),
])
def test_bad_normal_classes(t10k, normal, needle):
    root, _ = t10k
    with pytest.raises(OneclassError) as excinfo:
        dataset(root, normal_classes=normal).items()
    one_line_error(excinfo, "dataset.normal_classes", needle)


# -- broken files ---------------------------------------------------------------------------

def test_wrong_magic_names_the_file(t10k):
    root, _ = t10k
    labels = root / "raw/t10k-labels-idx1-ubyte.gz"
    images = root / "raw/t10k-images-idx3-ubyte.gz"
    images.write_bytes(labels.read_bytes())  # a labels file where the images should be
    with pytest.raises(OneclassError) as excinfo:
        dataset(root).items()
    one_line_error(excinfo, str(images), "magic number 0x00000801", "expected 0x00000803")


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_images_file_names_the_file(tmp_path, gz):
    write_split(tmp_path / "raw", "t10k", T10K, gz=gz)
    images = tmp_path / "raw" / ("t10k-images-idx3-ubyte" + (".gz" if gz else ""))
    images.write_bytes(images.read_bytes()[:-40])
    items = dataset(tmp_path).items()  # the header is whole: listing works, loading does not
    with pytest.raises(OneclassError) as excinfo:
        items[0].load()
    one_line_error(excinfo, str(images), "truncated")
    with pytest.raises(OneclassError) as excinfo:
        extract(dataset(tmp_path), ExtractParams(size=28), tmp_path / "store")
    one_line_error(excinfo, str(images))
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("content,needle", [
    (b"\x00\x00\x08", "no header"), (b"\x00\x00\x08\x01\x00", "header cut short"),
    (b"not gzip at all", "not a gzip file"),
])
def test_broken_labels_file_names_the_file(t10k, content, needle):
    root, _ = t10k
    labels = root / "raw/t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(content) if needle != "not a gzip file" else content)
    with pytest.raises(OneclassError) as excinfo:
        dataset(root).items()
    one_line_error(excinfo, str(labels), needle)


def test_count_mismatch_and_missing_files(tmp_path):
    write_split(tmp_path / "raw", "t10k", T10K)
    with gzip.open(tmp_path / "raw/t10k-labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(idx_bytes(np.array(T10K[:5])))
    with pytest.raises(OneclassError) as excinfo:
        dataset(tmp_path).items()
    one_line_error(excinfo, "t10k-images-idx3-ubyte.gz", "13 images", "5 labels")
    (tmp_path / "raw/t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(OneclassError) as excinfo:
        dataset(tmp_path).items()
    one_line_error(excinfo, "t10k-labels-idx1-ubyte.gz", "missing")
    (tmp_path / "raw/t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(OneclassError) as excinfo:
        dataset(tmp_path).items()
    one_line_error(excinfo, str(tmp_path), "no MNIST idx files")


def test_labels_beyond_nine_are_refused(tmp_path):
    write_split(tmp_path / "raw", "t10k", [1, 2, 12])
    with pytest.raises(OneclassError) as excinfo:
        dataset(tmp_path).items()
    one_line_error(excinfo, "t10k-labels-idx1-ubyte.gz", "label 12")


# -- the real data ---------------------------------------------------------------------------

def test_real_t10k_counts_match_the_labels_file():
    root = shared("mnist")
    with gzip.open(root / "raw/t10k-labels-idx1-ubyte.gz", "rb") as fh:
        labels = np.frombuffer(fh.read()[8:], dtype=np.uint8)
    items = [i for i in dataset(root, normal_classes=[3]).items() if i.source.startswith("t10k/")]
    assert len(items) == 10_000 == len(labels)
    counts = {}
    for item in items:
        counts[item.subclass] = counts.get(item.subclass, 0) + 1
    expected = {(NORMAL if d == 3 else f"digit-{d}"): int((labels == d).sum()) for d in range(10)}
    assert counts == expected
    first = items[0].load()
    assert first.image.shape == (28, 28, 1) and first.categories == [f"digit-{labels[0]}"]


def test_the_papers_protocol_tests_on_t10k_and_trains_on_train(tmp_path, monkeypatch):
    """Ganomaly's MNIST protocol with the train files present: the normal digit's t10k
    items and half of the other t10k items are the test set; training and validation come
    from the train files only."""
    from oneclass import api
    monkeypatch.setenv("ONECLASS_CACHE", str(tmp_path / "cache"))
    train_labels = [d for d in range(10) for _ in range(8)]
    t10k_labels = [d for d in range(10) for _ in range(4)]
    write_split(tmp_path / "raw", "train", train_labels, seed=1)
    write_split(tmp_path / "raw", "t10k", t10k_labels, seed=2)
    config = api.load_recipe(RECIPE, [f"dataset.root={tmp_path}", "dataset.normal_classes=[3]",
                                      "split.test_sources=t10k/", "split.test_balanced=false",
                                      "split.test_anomaly_share=0.5", "split.gamma=0", "split.contamination=0"])
    store = api.patch_store(config)
    sets = api.split(store, config)
    sources = np.array([r["source"] for r in store.index])
    digits = np.array([int(r["subclass"][-1]) if r["subclass"].startswith("digit") else 3 for r in store.index])
    test, train, val = sets.test.rows, sets.train.rows, sets.val.rows
    assert all(s.startswith("t10k/") for s in sources[test])
    assert all(s.startswith("train/") for s in np.concatenate([sources[train], sources[val]]))
    assert (digits[test] == 3).sum() == 4 and (digits[test] != 3).sum() == 18  # half of 36
    assert set(digits[train]) == {3}  # gamma 0, no pollution: the normal digit only
