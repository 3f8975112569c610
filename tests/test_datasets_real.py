"""Extraction on the shared real data, checked against counts computed independently."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import oneclass, shared
from oneclass.data.store import PatchStore


def _expected(mask: np.ndarray, size: int, stride: int, frac: float) -> tuple[int, int]:
    """Plain loop over corners 0, stride, ... while the patch fits: (patches, anomalous)."""
    total = anomalous = 0
    for y in range(0, mask.shape[0] - size + 1, stride):
        for x in range(0, mask.shape[1] - size + 1, stride):
            total += 1
            anomalous += mask[y:y + size, x:x + size].sum() / (size * size) >= frac
    return total, anomalous


@pytest.mark.parametrize("size,stride,frac", [(128, 64, 0.05), (100, 37, 0.3)])
def test_nanofibre_counts_match_a_plain_loop(tmp_path, size, stride, frac):
    root = shared("nanofibre")
    result = oneclass("extract-patches", "--dataset", "nanofibre", "--root", root, "--size", size,
                      "--stride", stride, "--mask-frac", frac, "--resize", 32, "--out", tmp_path / "s")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "s")
    store = PatchStore.open(tmp_path / "s")
    by_source = {}
    for row in store.index:
        by_source.setdefault(row["source"], []).append(int(row["label"]))
    for image in sorted((root / "Normal").glob("*.tif")):
        mask = np.zeros(np.asarray(Image.open(image)).shape, dtype=bool)
        total, _ = _expected(mask, size, stride, frac)
        assert by_source[f"Normal/{image.name}"] == [0] * total
    for gt in sorted((root / "Anomalous" / "gt").glob("*_gt.png")):
        mask = np.asarray(Image.open(gt)).astype(bool)
        total, anomalous = _expected(mask, size, stride, frac)
        labels = by_source[f"Anomalous/images/{gt.name.replace('_gt.png', '.tif')}"]
        assert (len(labels), sum(labels)) == (total, anomalous)
    assert store.images.shape == (len(store), 1, 32, 32) and store.images.dtype == np.uint8
    assert store.masks.shape == (len(store), 32, 32)
    meta = store.meta
    assert meta["params"]["size"] == size and len(meta["sources"]) == 17
    assert all(len(f["sha256"]) == 64 for s in meta["sources"] for f in s["files"])
    subclasses = {r["subclass"] for r in store.index if r["label"] == "1"}
    assert subclasses == {"defect"}


def test_nanofibre_patch_pixels_are_the_area_average_of_the_source(tmp_path):
    root = shared("nanofibre")
    result = oneclass("extract-patches", "-d", "nanofibre", "--root", root, "--size", 128,
                      "--stride", 128, "--resize", 32, "--out", tmp_path / "s", "-q")
    assert result.returncode == 0, result.stderr
    store = PatchStore.open(tmp_path / "s")
    row = next(r for r in store.index if r["source"].endswith("ITIA1103.tif") and r["x"] == "256")
    image = np.asarray(Image.open(root / row["source"])).astype(float)
    y, x = int(row["y"]), int(row["x"])
    block = image[y:y + 128, x:x + 128].reshape(32, 4, 32, 4).mean(axis=(1, 3))
    assert np.abs(store.images[int(row["id"]), 0] - block).max() <= 0.5 + 1e-6


def test_busi_merges_several_masks(tmp_path):
    root = shared("busi/Dataset_BUSI_with_GT")
    from oneclass.data.datasets.busi import BUSIDataset

    items = {i.source: i for i in BUSIDataset(root, BUSIDataset.Options()).items()}
    item = items["benign/benign (4).png"]
    assert [p.name for p in item.mask_paths] == ["benign (4)_mask.png", "benign (4)_mask_1.png"]
    # the second mask is RGBA: its colour channels carry the mask, alpha is opaque
    merged = np.asarray(Image.open(item.mask_paths[0])).astype(bool) | (
        np.asarray(Image.open(item.mask_paths[1]))[..., 0] > 0)
    loaded = item.load()
    assert (loaded.labels.astype(bool) == merged).all() and loaded.categories == ["benign"]
    assert {i.subclass for i in items.values()} == {"good", "benign", "malignant"}
    assert not any("mask" in s for s in items)
    result = oneclass("extract-patches", "-d", "busi", "--root", root.parent, "--size", 64,
                      "--mask-frac", 0.5, "--resize", 32, "--channels", 1, "--out", tmp_path / "b", "-q")
    assert result.returncode == 0, result.stderr
    store = PatchStore.open(tmp_path / "b")
    assert store.images.shape[1:] == (1, 32, 32)
    assert {r["subclass"] for r in store.index} == {"good", "benign", "malignant"}
    assert all(r["subclass"] == "good" for r in store.index if r["source"].startswith("normal"))


def test_mvtec_layout_subclasses_and_missing_masks(tmp_path):
    root = shared("mvtec/leather")
    result = oneclass("extract-patches", "-d", "mvtec", "--root", root, "--size", 256,
                      "--resize", 64, "--out", tmp_path / "m", "-q")
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if "without a mask" in line]
    assert len(warning) == 1 and warning[0].startswith(f"oneclass: warning: {root}: skipped 9 anomalous image(s)")
    store = PatchStore.open(tmp_path / "m")
    assert store.images.shape[1:] == (3, 64, 64)
    sources = {r["source"] for r in store.index}
    assert len(sources) == 4 + 4 + 11  # train/good + test/good + masked defects
    anomalous = {r["subclass"] for r in store.index if r["label"] == "1"}
    assert anomalous == {"color", "cut", "fold", "glue", "poke"}
    for row in store.index:
        if row["label"] == "1":
            assert row["source"].split("/")[1] == row["subclass"]
    strict = oneclass("extract-patches", "-d", "mvtec", "--root", root, "--size", 256,
                      "--set", "dataset.missing_masks=error", "--out", tmp_path / "m2", "-q")
    assert strict.returncode == 2 and "_mask.png: mask of test/" in strict.stderr
    assert not (tmp_path / "m2").exists()


def test_malaria_json_schema_on_a_synthetic_smear(tmp_path):
    entries = json.loads(shared("malaria-annotations/test.json").read_text())
    # keep the real schema: one real entry, re-pointed at an image made here at its size
    entry = next(e for e in entries if {"ring", "trophozoite"} <= {o["category"] for o in e["objects"]})
    rows, cols = entry["image"]["shape"]["r"], entry["image"]["shape"]["c"]
    (tmp_path / "images").mkdir()
    name = entry["image"]["pathname"].rsplit("/", 1)[1].replace(".jpg", ".png")
    entry["image"]["pathname"] = f"/images/{name}"
    Image.fromarray(np.full((rows, cols, 3), 200, dtype=np.uint8)).save(tmp_path / "images" / name)
    (tmp_path / "test.json").write_text(json.dumps([entry]))
    from oneclass.data.datasets.malaria import MalariaDataset

    with pytest.warns(UserWarning, match=r"dataset\.anomalous: 'schizont', 'gametocyte' named in no object"):
        (item,) = MalariaDataset(tmp_path, MalariaDataset.Options()).items()  # one entry: two categories absent
    loaded = item.load()
    infected = [o for o in entry["objects"] if o["category"] in ("ring", "trophozoite", "schizont", "gametocyte")]
    for obj in infected:
        lo, hi = obj["bounding_box"]["minimum"], obj["bounding_box"]["maximum"]
        assert loaded.labels[lo["r"], lo["c"]] > 0
    red = [o for o in entry["objects"] if o["category"] == "red blood cell"]
    healthy_only = np.zeros_like(loaded.labels, dtype=bool)
    for obj in red:
        lo, hi = obj["bounding_box"]["minimum"], obj["bounding_box"]["maximum"]
        healthy_only[lo["r"]:hi["r"], lo["c"]:hi["c"]] = True
    for obj in infected:
        lo, hi = obj["bounding_box"]["minimum"], obj["bounding_box"]["maximum"]
        healthy_only[lo["r"]:hi["r"], lo["c"]:hi["c"]] = False
    assert not loaded.labels[healthy_only].any()
    assert set(loaded.categories) <= {"ring", "trophozoite", "schizont", "gametocyte"}
    result = oneclass("extract-patches", "-d", "malaria", "--root", tmp_path, "--size", 170,
                      "--stride", 85, "--mask-frac", 0.5, "--out", tmp_path / "s", "-q")
    assert result.returncode == 0, result.stderr
    store = PatchStore.open(tmp_path / "s")
    assert {r["subclass"] for r in store.index if r["label"] == "1"} <= set(loaded.categories)
    assert any(r["label"] == "1" for r in store.index)
