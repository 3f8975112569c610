"""Whole-slide images: OpenSlide reading, tissue filtering, polygon rasterisation."""

import json
import os
import warnings

import numpy as np
import pytest

from conftest import one_error_line, oneclass, shared
from oneclass.data.datasets.slides import Camelyon16Dataset, WSIDataset
from oneclass.data.datasets.synthetic import write_synthetic_slide
from oneclass.data.slides import Polygon, otsu_threshold, rasterise, read_annotations
from oneclass.data.store import PatchStore
from oneclass.errors import OneclassError


def _inside(polygon: np.ndarray, x: float, y: float) -> bool:
    """Even-odd ray casting, written independently of the rasteriser."""
    inside = False
    for (x1, y1), (x2, y2) in zip(polygon, np.roll(polygon, -1, axis=0)):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


@pytest.mark.slow
def test_camelyon_json_polygons_rasterise_where_they_are():
    path = shared("camelyon16-annotations/train/Tumor_001.json")
    polygons = read_annotations(path, "tumor", [], False)
    assert len(polygons) == 2 and {p.category for p in polygons} == {"tumor"}
    polygon = polygons[0]
    downsample = 16.0
    x0, y0, x1, y1 = (np.array(polygon.bbox()) / downsample).astype(int)
    labels = rasterise(polygons, ["tumor"], downsample, x0, y0, x1 - x0 + 1, y1 - y0 + 1)
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(400):
        i, j = rng.integers(0, labels.shape[0]), rng.integers(0, labels.shape[1])
        cx, cy = (x0 + j + 0.5) * downsample, (y0 + i + 0.5) * downsample
        # skip pixels whose centre is within a pixel of the outline (rasteriser edge rule)
        near = any(_inside(p.vertices, cx + dx, cy + dy) != _inside(p.vertices, cx, cy)
                   for p in polygons for dx in (-downsample, downsample) for dy in (-downsample, downsample))
        if near:
            continue
        expected = any(_inside(p.vertices, cx, cy) for p in polygons)
        assert bool(labels[i, j]) == expected, (i, j)
        checked += 1
    assert checked > 300 and labels.any() and not labels.all()


def test_negative_polygons_cut_holes():
    square = Polygon(np.array([[0, 0], [100, 0], [100, 100], [0, 100]], float), "tumor")
    hole = Polygon(np.array([[40, 40], [60, 40], [60, 60], [40, 60]], float), "")
    labels = rasterise([hole, square], ["tumor"], 1.0, 0, 0, 100, 100)
    assert labels[10, 10] == 1 and labels[50, 50] == 0 and labels.sum() == 100 * 100 - 20 * 20


def test_asap_xml_groups(tmp_path):
    xml = tmp_path / "tumor_007.xml"
    xml.write_text("""<?xml version="1.0"?><ASAP_Annotations><Annotations>
      <Annotation Name="a" Type="Polygon" PartOfGroup="Tumor"><Coordinates>
        <Coordinate Order="0" X="0" Y="0"/><Coordinate Order="1" X="10" Y="0"/>
        <Coordinate Order="2" X="10" Y="10"/></Coordinates></Annotation>
      <Annotation Name="b" Type="Polygon" PartOfGroup="_2"><Coordinates>
        <Coordinate Order="0" X="1" Y="1"/><Coordinate Order="1" X="2" Y="1"/>
        <Coordinate Order="2" X="2" Y="2"/></Coordinates></Annotation>
    </Annotations></ASAP_Annotations>""")
    polygons = read_annotations(xml, "tumor", ["_2"], False)
    assert [p.category for p in polygons] == ["tumor", ""]
    assert read_annotations(xml, "x", ["_2"], True)[0].category == "Tumor"


def test_otsu_splits_two_populations():
    values = np.concatenate([np.full(100, 10), np.full(100, 200)]).astype(np.uint8)
    assert 10 <= otsu_threshold(values) < 200


@pytest.fixture(scope="module")
def slide_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("slides")
    write_synthetic_slide(root / "tumor_001.tif", 2400, 1800, seed=3, tile=256)
    return root


def test_synthetic_pyramidal_tiff_through_openslide_with_tissue_filter(slide_root, tmp_path):
    import openslide

    slide = openslide.OpenSlide(str(slide_root / "tumor_001.tif"))
    assert slide.properties["openslide.vendor"] == "generic-tiff" and slide.level_count >= 2
    result = oneclass("extract-patches", "-d", "camelyon16", "--root", slide_root, "--level", 1,
                      "--size", 64, "--stride", 64, "--mask-frac", 0.5, "--out", tmp_path / "s")
    assert result.returncode == 0, result.stderr
    store = PatchStore.open(tmp_path / "s")
    width, height = slide.level_dimensions[1]
    total_grid = (width // 64) * (height // 64)
    assert 0 < len(store) < total_grid  # background was dropped
    polygons = json.loads((slide_root / "tumor_001.json").read_text())["positive"]
    downsample = slide.level_downsamples[1]
    for row, image in zip(store.index, store.images):
        # tissue is pink/purple: a kept patch is not mostly white glass
        assert (image.max(axis=0).astype(int) - image.min(axis=0) > 30).mean() >= 0.4
        if row["label"] == "1":
            assert row["subclass"] == "tumor"
            assert float(row["anomaly_frac"]) >= 0.5
    labelled = [r for r in store.index if r["label"] == "1"]
    assert labelled, "the tumour must yield anomalous patches"
    centre_inside = [any(_inside(np.array(p["vertices"]), (int(r["x"]) + 32) * downsample,
                                 (int(r["y"]) + 32) * downsample) for p in polygons) for r in labelled]
    assert np.mean(centre_inside) > 0.9
    # the stored patch pixels equal what OpenSlide returns for that region
    row = labelled[0]
    region = np.asarray(slide.read_region((int(int(row["x"]) * downsample), int(int(row["y"]) * downsample)),
                                          1, (64, 64)))[..., :3]
    assert (store.images[int(row["id"])].transpose(1, 2, 0) == region).all()


def test_workers_give_the_same_store(slide_root, tmp_path):
    one = oneclass("extract-patches", "-d", "camelyon16", "--root", slide_root, "--size", 128,
                   "--max-per-image", 40, "--seed", 7, "--out", tmp_path / "a", "-q")
    two = oneclass("extract-patches", "-d", "camelyon16", "--root", slide_root, "--size", 128,
                   "--max-per-image", 40, "--seed", 7, "--workers", 2, "--out", tmp_path / "b", "-q")
    assert one.returncode == two.returncode == 0, one.stderr + two.stderr
    a, b = PatchStore.open(tmp_path / "a"), PatchStore.open(tmp_path / "b")
    assert len(a) == 40 and a.index == b.index and (a.images == b.images).all()


@pytest.mark.parametrize("name,reason", [("unopenable.tiff", "Unsupported TIFF compression"),
                                         ("unreadable.svs", "Bogus marker length")])
def test_broken_slides_fail_cleanly(tmp_path, name, reason):
    broken = shared("openslide") / name
    root = tmp_path / "root"
    root.mkdir()
    (root / name).write_bytes(broken.read_bytes())
    result = oneclass("extract-patches", "-d", "wsi", "--root", root, "--size", 8, "--out", tmp_path / "s")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and name in result.stderr and reason in result.stderr
    assert not (tmp_path / "s").exists() and list(tmp_path.iterdir()) == [root]


def test_real_generic_tiff_reads(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "boxes.tiff").write_bytes((shared("openslide") / "boxes.tiff").read_bytes())
    result = oneclass("extract-patches", "-d", "wsi", "--root", root, "--size", 50,
                      "--set", "dataset.tissue_frac=0", "--out", tmp_path / "s", "-q")
    assert result.returncode == 0, result.stderr
    store = PatchStore.open(tmp_path / "s")
    assert len(store) == (300 // 50) * (250 // 50) and store.images.shape[1:] == (3, 50, 50)


def _tree(root, *names, text=""):
    """Files under root (slides need not open: listing reads names and annotations only)."""
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _listed(dataset, root):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unexpected warning fails the test
        return dataset(root, dataset.Options()).items()


def test_a_dicom_series_is_one_slide(tmp_path):
    _tree(tmp_path, "case_a/level_0.dcm", "case_a/level_1.dcm", "case_b/only.dcm", "other.svs")
    items = _listed(WSIDataset, tmp_path)
    assert [i.source for i in items] == ["case_a/level_0.dcm", "case_b/only.dcm", "other.svs"]
    assert items[0].files() == [tmp_path / "case_a/level_0.dcm", tmp_path / "case_a/level_1.dcm"]


def test_real_dicom_parts_give_one_source(tmp_path):
    parts = shared("openslide")
    if not (parts / "boxes_1.dcm").exists():
        pytest.skip("shared data has no two-file DICOM slide (boxes_0.dcm, boxes_1.dcm)")
    root = tmp_path / "root"
    root.mkdir()
    for name in ("boxes_0.dcm", "boxes_1.dcm"):  # one series: OpenSlide opens either to the same slide
        (root / name).write_bytes((parts / name).read_bytes())
    result = oneclass("extract-patches", "-d", "wsi", "--root", root, "--size", 8,
                      "--set", "dataset.tissue_frac=0", "--out", tmp_path / "s", "-q")
    assert result.returncode == 0, result.stderr
    store = PatchStore.open(tmp_path / "s")
    assert {r["source"] for r in store.index} == {"boxes_0.dcm"} and len(store) == (16 // 8) ** 2


def test_mask_images_are_not_slides(tmp_path):
    _tree(tmp_path, "tumor/tumor_001.tif", "masks/tumor_001_mask.tif", "masks/Tumor_002_Mask.tif")
    assert [i.source for i in _listed(Camelyon16Dataset, tmp_path)] == ["tumor/tumor_001.tif"]


def test_two_annotation_files_for_one_slide_are_refused(tmp_path):
    _tree(tmp_path, "tumor_001.tif", "notes/tumor_001.xml", "notes/Tumor_001.json")
    with pytest.raises(OneclassError, match="tumor_001.tif: 2 annotation files") as refused:
        _listed(Camelyon16Dataset, tmp_path)
    assert "notes/tumor_001.xml" in str(refused.value) and "notes/Tumor_001.json" in str(refused.value)


def test_an_annotation_matching_no_slide_is_named_in_a_warning(tmp_path):
    _tree(tmp_path, "tumor_001.tif", "tumor_002.tif")
    _tree(tmp_path, "Tumour_002.json", text='{"positive": []}')
    with pytest.warns(UserWarning, match="1 annotation file.* match no slide.*: Tumour_002.json$"):
        items = Camelyon16Dataset(tmp_path, Camelyon16Dataset.Options()).items()
    assert [i.annotation_path for i in items] == [None, None]


@pytest.mark.parametrize("text,expected", [
    ("[]", "found []"),
    ('{"type": "FeatureCollection", "features": []}', "found keys 'type', 'features'"),  # QuPath GeoJSON
    ('{"positive": null}', '"positive" and "negative" must be lists'),
    ('{"positive": [[[0, 0], [1, 0], [1, 1]]]}', 'each polygon must be an object with "vertices"'),
])
def test_json_that_is_not_the_camelyon_form_is_refused(tmp_path, text, expected):
    path = tmp_path / "tumor_001.json"
    path.write_text(text)
    with pytest.raises(OneclassError, match="tumor_001.json: ") as refused:
        read_annotations(path, "tumor", [], False)
    assert expected in str(refused.value)


def test_empty_annotations_of_a_normal_slide_are_read(tmp_path):
    (tmp_path / "normal_001.json").write_text('{"positive": [], "negative": []}')
    (tmp_path / "normal_002.xml").write_text("<ASAP_Annotations><Annotations/></ASAP_Annotations>")
    assert read_annotations(tmp_path / "normal_001.json", "tumor", [], False) == []
    assert read_annotations(tmp_path / "normal_002.xml", "tumor", [], False) == []


def test_xml_that_is_not_asap_is_refused(tmp_path):
    path = tmp_path / "tumor_001.xml"
    path.write_text('<Annotations><Annotation Id="1"><Regions/></Annotation></Annotations>')  # ImageScope
    with pytest.raises(OneclassError, match="tumor_001.xml: not ASAP XML .*found <Annotations>"):
        read_annotations(path, "tumor", [], False)


def test_a_malformed_annotation_is_one_error_line(tmp_path):
    root = _tree(tmp_path / "root", "tumor_001.tif")
    (root / "tumor_001.json").write_text("[]")
    result = oneclass("extract-patches", "-d", "camelyon16", "--root", root, "--out", tmp_path / "s")
    one_error_line(result, 2, "tumor_001.json", '"positive"')


def test_slides_and_annotations_in_linked_folders_are_found(tmp_path):
    """Python's rglob enters no linked folder: slides kept on another disk and linked in
    were "no images found"."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_synthetic_slide(elsewhere / "tumor_001.tif", 600, 500, tile=128)  # and tumor_001.json
    (tmp_path / "root").mkdir()
    os.symlink(elsewhere, tmp_path / "root/tumor")
    items = Camelyon16Dataset(tmp_path / "root", Camelyon16Dataset.Options()).items()
    assert [(i.source, i.annotation_path.name) for i in items] == [("tumor/tumor_001.tif", "tumor_001.json")]
