"""Dataset plugins on hand-made folders: what a user's own layout gives (followed links,
hidden folders, masks beside an image or in a tree), and the layouts that would have
mislabelled images silently (misplaced anomalous images, a lesion image without its mask,
a mistyped malaria category, an image listed twice) fail in one line naming the file or
key, or warn."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oneclass.data.datasets.busi import BUSIDataset
from oneclass.data.datasets.folder import FolderDataset
from oneclass.data.datasets.malaria import MalariaDataset
from oneclass.errors import OneclassError


def _png(path: Path, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16), value, np.uint8)).save(path)
    return path


def _folder(root: Path, **options) -> dict:
    items = FolderDataset(root, FolderDataset.Options(**options)).items()
    return {item.source: (item.subclass, [p.name for p in getattr(item, "mask_paths", [])]) for item in items}


def test_the_folder_dataset_follows_linked_folders_once_and_skips_hidden_ones(tmp_path):
    root = tmp_path / "data"
    _png(root / "normal/a.png")
    _png(root / "normal/.ipynb_checkpoints/a-checkpoint.png")
    _png(tmp_path / "elsewhere/e1.png")
    os.symlink(tmp_path / "elsewhere", root / "normal/linked")
    os.symlink(root / "normal", root / "normal/linked/back")  # a loop
    _png(root / "anomalous/crack/c.png")
    _png(root / "anomalous/crack/c_mask.png", 255)
    _png(root / "anomalous/.ipynb_checkpoints/c.png")
    assert _folder(root) == {"normal/a.png": ("good", []), "normal/linked/e1.png": ("good", []),
                             "anomalous/crack/c.png": ("crack", ["c_mask.png"])}


def test_masks_are_found_beside_an_image_or_in_the_masks_tree(tmp_path):
    root = tmp_path / "data"
    for name in ("a.png", "a_mask.png", "a_mask_1.png", "b.png", "ab.png"):
        _png(root / "anomalous/dent" / name)
    _png(root / "masks/dent/b.png")
    _png(root / "masks/dent/ab_mask.png")
    assert _folder(root) == {"anomalous/dent/a.png": ("dent", ["a_mask.png", "a_mask_1.png"]),
                             "anomalous/dent/ab.png": ("dent", ["ab_mask.png"]),
                             "anomalous/dent/b.png": ("dent", ["b.png"])}


def test_an_anomalous_folder_named_as_the_normal_class_is_refused(tmp_path):
    _png(tmp_path / "data/anomalous/good/a.png")
    with pytest.raises(OneclassError, match=r"anomalous/good: 'good' names the normal class"):
        _folder(tmp_path / "data", missing_masks="whole")


@pytest.mark.parametrize("where", ["anomalous/a.png", "anomalous/crack/deeper/a.png"])
def test_an_anomalous_image_outside_a_subclass_folder_is_refused(tmp_path, where):
    root = tmp_path / "data"
    _png(root / "normal/n.png")
    _png(root / "anomalous/crack/c.png")
    _png(root / where)
    with pytest.raises(OneclassError, match=r"a\.png: anomalous images go directly in anomalous/<subclass>/"):
        _folder(root, missing_masks="whole")


def test_images_skipped_for_want_of_a_mask_are_said(tmp_path):
    root = tmp_path / "data"
    _png(root / "anomalous/crack/c.png")
    _png(root / "anomalous/crack/c_mask.png", 255)
    _png(root / "anomalous/crack/d.png")
    with pytest.warns(UserWarning, match=r"skipped 1 anomalous image\(s\) without a mask \(e\.g\. "
                                         r"anomalous/crack/d\.png\)"):
        assert list(_folder(root, missing_masks="skip")) == ["anomalous/crack/c.png"]
    with pytest.raises(OneclassError, match=r"d\.png: no mask found"):
        _folder(root)


def test_a_busi_lesion_image_without_a_mask_is_refused_and_an_orphan_mask_said(tmp_path):
    root = tmp_path / "busi"
    _png(root / "normal/normal (1).png")
    _png(root / "benign/benign (1).png")
    _png(root / "benign/benign (1)_mask.png", 255)
    _png(root / "benign/benign (7)_mask.png", 255)
    _png(root / "malignant/malignant (1).png")
    _png(root / "malignant/malignant (1)_mask.png", 255)
    with pytest.warns(UserWarning, match=r"benign \(7\)_mask\.png: a mask of no image"):
        items = BUSIDataset(root, BUSIDataset.Options()).items()
    assert [(i.source, i.subclass) for i in items] == [
        ("normal/normal (1).png", "good"), ("benign/benign (1).png", "benign"),
        ("malignant/malignant (1).png", "malignant")]
    (root / "benign/benign (7)_mask.png").unlink()
    (root / "malignant/malignant (1)_mask.png").unlink()
    with pytest.raises(OneclassError, match=r"malignant \(1\)\.png: no mask \(malignant \(1\)_mask\.png\); "
                                            r"a malignant image needs one"):
        BUSIDataset(root, BUSIDataset.Options()).items()


def _smear(root: Path, name: str, categories: list[str]) -> dict:
    _png(root / "images" / name)
    box = {"minimum": {"r": 2, "c": 2}, "maximum": {"r": 8, "c": 8}}
    return {"image": {"pathname": f"/images/{name}", "shape": {"r": 16, "c": 16}},
            "objects": [{"bounding_box": box, "category": c} for c in categories]}


def test_malaria_refuses_categories_no_object_names_and_warns_of_some(tmp_path):
    (tmp_path / "training.json").write_text(json.dumps([_smear(tmp_path, "a.png", ["ring", "red blood cell"]),
                                                        _smear(tmp_path, "b.png", ["trophozoite"])]))
    dataset = MalariaDataset(tmp_path, MalariaDataset.Options(anomalous=["Ring", "trophozoit"]))
    with pytest.raises(OneclassError, match=r"^dataset\.anomalous: 'Ring' \(did you mean 'ring'\?\), 'trophozoit' "
                                            r"\(did you mean 'trophozoite'\?\) named in no object of training\.json "
                                            r"\(they name red blood cell, ring, trophozoite\); no cell would be "
                                            r"anomalous$"):
        dataset.items()
    with pytest.warns(UserWarning, match=r"'trophozoit' \(did you mean 'trophozoite'\?\) named in no object"):
        items = MalariaDataset(tmp_path, MalariaDataset.Options(anomalous=["ring", "trophozoit"])).items()
    assert [(i.source, i.subclass) for i in items] == [("images/a.png", "ring"), ("images/b.png", "good")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MalariaDataset(tmp_path, MalariaDataset.Options(anomalous=["ring", "trophozoite"])).items()


def test_malaria_refuses_an_image_listed_twice(tmp_path):
    (tmp_path / "training.json").write_text(json.dumps([_smear(tmp_path, "a.png", ["ring"])]))
    (tmp_path / "test.json").write_text(json.dumps([_smear(tmp_path, "a.png", ["ring"])]))
    with pytest.raises(OneclassError, match=r"test\.json: image images/a\.png is listed again \(first in "
                                            r"training\.json\)"):
        MalariaDataset(tmp_path, MalariaDataset.Options()).items()


def test_a_stores_subclasses_are_those_of_its_anomalous_patches(tmp_path):
    """An image's subclass is its most frequent defect; the store lists every defect a
    patch carries (here a gametocyte beside two rings)."""
    from conftest import oneclass

    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(_png(tmp_path / "images/a.png"))
    boxes = [((0, 0), (16, 16), "ring"), ((48, 48), (64, 64), "ring"), ((16, 16), (32, 32), "gametocyte")]
    entry = {"image": {"pathname": "/images/a.png", "shape": {"r": 64, "c": 64}},
             "objects": [{"bounding_box": {"minimum": {"r": r0, "c": c0}, "maximum": {"r": r1, "c": c1}},
                          "category": c} for (r0, c0), (r1, c1), c in boxes]}
    (tmp_path / "training.json").write_text(json.dumps([entry]))
    done = oneclass("extract-patches", "-d", "malaria", "--root", tmp_path, "--size", 16, "--stride", 16,
                    "--mask-frac", 0.5, "--set", "dataset.anomalous=[ring, gametocyte]", "--out", tmp_path / "s", "-q")
    assert done.returncode == 0, done.stderr
    meta = json.loads((tmp_path / "s/meta.json").read_text())
    assert meta["dataset"]["subclasses"] == ["gametocyte", "ring"]
    assert [s["subclass"] for s in meta["sources"]] == ["ring"]


def test_a_link_to_no_file_is_said_not_skipped_silently(tmp_path):
    root = tmp_path / "data"
    _png(root / "normal/a.png")
    os.symlink(tmp_path / "moved-away.png", root / "normal/b.png")
    with pytest.warns(UserWarning, match=r"normal/b\.png: a link to no file, left out \(1 such link\(s\) under"):
        assert list(_folder(root)) == ["normal/a.png"]


def test_masks_kept_in_a_subfolder_of_a_defect_folder_are_left_alone(tmp_path):
    """Only images are misplaced there; a mask folder inside anomalous/<subclass>/ is not
    read (masks go beside the image or in masks/<subclass>/), as before."""
    root = tmp_path / "data"
    _png(root / "normal/a.png")
    _png(root / "anomalous/crack/b.png")
    _png(root / "anomalous/crack/masks/b_mask.png", 255)
    assert _folder(root, missing_masks="whole") == {"normal/a.png": ("good", []), "anomalous/crack/b.png": ("crack", [])}


def test_a_link_up_to_the_folder_holding_the_walk_is_not_followed(tmp_path):
    """normal/up -> .. would have taken every anomalous image for a normal one."""
    root = tmp_path / "data"
    _png(root / "normal/a.png")
    _png(root / "anomalous/crack/c.png")
    _png(root / "anomalous/crack/c_mask.png", 255)
    os.symlink(root, root / "normal/up")
    assert _folder(root) == {"normal/a.png": ("good", []), "anomalous/crack/c.png": ("crack", ["c_mask.png"])}
