"""Image-level scores of patch runs: the three aggregations, image labels and subclasses,
scores/{val,test}_images.csv, image metrics in metrics.json and in `oneclass evaluate`."""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest

from conftest import oneclass
from oneclass import metrics
from oneclass.artifacts import IMAGE_COLUMNS, open_run, parse_scores
from oneclass.errors import OneclassError
from oneclass.report import load_inputs

SCORES = [0.1, 0.9, 0.5, 0.9, 0.3]  # n = 5, the maximum 0.9 twice


@pytest.mark.parametrize("how,k,expected", [
    ("max", 0.1, 0.9),
    ("mean", 0.1, 2.7 / 5),
    ("topk_mean", 0.1, 0.9),             # k·n = 0.5 < 1: still one patch, the highest
    ("topk_mean", 0.2, 0.9),             # ceil(1.0) = 1
    ("topk_mean", 0.4, 0.9),             # ceil(2.0) = 2: the tied 0.9 and 0.9
    ("topk_mean", 0.5, (0.9 + 0.9 + 0.5) / 3),  # ceil(2.5) = 3
    ("topk_mean", 1.0, 2.7 / 5),         # every patch: the mean
])
def test_aggregations_by_hand(how, k, expected):
    assert metrics.image_score(SCORES, how, k) == pytest.approx(expected)


def test_topk_counts_ceil_of_share_at_least_one():
    assert [metrics.topk_count(n, 0.1) for n in (1, 5, 10, 11, 19, 20, 21)] == [1, 1, 1, 2, 2, 2, 3]
    assert metrics.topk_count(30, 0.1) == 3  # 0.1 * 30 is 3.0000000000000004 in floating point
    assert metrics.image_score(np.arange(30.0), "topk_mean", 0.1) == pytest.approx((29 + 28 + 27) / 3)
    assert metrics.image_score([0.7], "topk_mean", 0.1) == 0.7
    assert metrics.image_score([2, 2, 2, 1], "topk_mean", 0.5) == 2.0  # ties at the cut


@pytest.mark.parametrize("how,k,message", [
    ("median", 0.1, "evaluate.image_score: expected one of max, mean, topk_mean"),
    ("topk_mean", 0.0, r"evaluate.image_topk: .* must lie in \(0, 1\], got 0.0"),
    ("topk_mean", 1.5, r"evaluate.image_topk: .* got 1.5"),
])
def test_bad_aggregation_rules(how, k, message):
    with pytest.raises(OneclassError, match=message):
        metrics.aggregate_images(["a"], [0], ["good"], [0.5], how, k)


def test_image_labels_and_subclasses_by_hand():
    sources = ["img2", "img1", "img3", "img1", "img2", "img1", "img3", "img4", "img1", "img3", "img4"]
    labels = [0, 1, 1, 1, 0, 1, 1, 0, 0, 0, -1]
    subclasses = ["good", "film", "film", "bead", "good", "film", "bead", "good", "good", "good", None]
    scores = [0.2, 0.8, 0.6, 0.4, 0.3, 0.9, 0.1, 0.5, 0.05, 0.7, 0.25]
    rows = metrics.aggregate_images(sources, labels, subclasses, scores, "max")
    assert [tuple(r[c] for c in IMAGE_COLUMNS) for r in rows] == [
        ("img1", 1, "film", 4, 0.9),   # film twice, bead once; its normal patch counts too
        ("img2", 0, "good", 2, 0.3),
        ("img3", 1, "bead", 3, 0.7),   # bead and film once each: the first alphabetically
        ("img4", None, None, 2, 0.5),  # no anomalous patch, one unknown label: unknown
    ]
    means = metrics.aggregate_images(sources, labels, subclasses, scores, "mean")
    assert [r["score"] for r in means] == pytest.approx([(0.8 + 0.4 + 0.9 + 0.05) / 4, 0.25,
                                                         (0.6 + 0.1 + 0.7) / 3, 0.375])


def test_image_metrics_need_both_classes():
    rule = metrics.image_rule("topk_mean", 0.1)
    found, why = metrics.image_metrics([1, 0, 1, None], [0.9, 0.2, 0.4, 0.1], rule)
    assert why is None
    assert found == {"n": 3, "anomalous": 2, "auroc": 1.0, "auprc": 1.0,
                     "aggregation": {"image_score": "topk_mean", "image_topk": 0.1}}
    found, why = metrics.image_metrics([1, 1], [0.9, 0.2], metrics.image_rule("max", 0.1))
    assert found is None and "got 0 normal and 2 anomalous" in why
    assert metrics.image_rule("max", 0.1) == {"image_score": "max"}


def test_score_tables_aggregate_by_source(tmp_path):
    text = ("id,source,x,y,label,subclass,score\n"
            "0,a,0,0,0,good,0.1\n1,a,16,0,1,film,0.8\n2,b,0,0,0,good,0.3\n3,b,16,0,0,good,0.2\n"
            "4,c,0,0,0,good,0.6\n5,c,16,0,,,0.4\n")
    table = parse_scores(text, "t.csv")
    assert table.sources == ["a", "a", "b", "b", "c", "c"] and table.subclasses[1] == "film"
    (tmp_path / "t.csv").write_text(text)
    image = load_inputs([str(tmp_path / "t.csv")])[0].metrics["image"]
    # topk_mean(0.1) over 2 patches = the maximum; c's label is unknown and left out
    assert image["n"] == 2 and image["anomalous"] == 1 and image["auroc"] == 1.0
    # one row per source: the rows already are images, nothing is repeated
    (tmp_path / "one.csv").write_text("id,source,x,y,label,subclass,score\n0,a,0,0,0,good,0.1\n"
                                      "1,b,0,0,1,film,0.8\n")
    assert load_inputs([str(tmp_path / "one.csv")])[0].flat()["image_auroc"] is None
    # JSON lines without sources: no image metrics
    (tmp_path / "s.jsonl").write_text('{"label": 0, "score": 0.1}\n{"label": 1, "score": 0.9}\n')
    assert load_inputs([str(tmp_path / "s.jsonl")])[0].metrics["image"] is None


# -- end to end on the tiny synthetic store ---------------------------------------------


@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("image-runs") / "patches"
    done = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", out, "-q")
    assert done.returncode == 0, done.stderr
    return out


def _rows(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


@pytest.mark.slow
def _image_patch_scores(run, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) of every patch of image ``source`` in the run's store, scored by
    the run's model."""
    from oneclass.data.items import PatchData
    from oneclass.data.store import PatchStore
    from oneclass.scoring import load_method

    folder = open_run(run)
    store = PatchStore.open(folder.data["store"])
    rows = np.array([i for i, r in enumerate(store.index) if r["source"] == source])
    return store.labels[rows], load_method(folder, "cpu").score(PatchData(store.images, rows))


def test_patch_run_writes_one_row_per_test_image_from_all_its_patches(run):
    """The balanced test set holds a few of a normal image's patches and all of a defect's;
    an image is scored from all of its patches (the test pool's), as validation's are."""
    for split in ("test", "val"):
        patches, images = _rows(run / f"scores/{split}.csv"), _rows(run / f"scores/{split}_images.csv")
        assert list(images[0]) == list(IMAGE_COLUMNS)
        sources = sorted({r["source"] for r in patches})
        assert [r["source"] for r in images] == sources
        for image in images:
            labels, scores = _image_patch_scores(run, image["source"])
            assert int(image["patches"]) == len(scores) >= sum(r["source"] == image["source"] for r in patches)
            assert int(image["label"]) == labels.max()
            expected = metrics.image_score(scores, "topk_mean", 0.1)
            assert float(image["score"]) == pytest.approx(expected, rel=1e-5)
    test = _rows(run / "scores/test.csv")
    assert any(int(image["patches"]) > sum(r["source"] == image["source"] for r in test)
               for image in _rows(run / "scores/test_images.csv"))  # more than the balanced set's
    result = json.loads((run / "metrics.json").read_text())["test"]["image"]
    images = _rows(run / "scores/test_images.csv")
    labels = [int(r["label"]) for r in images]
    assert 0 < sum(labels) < len(labels), "the tiny split's test images hold both classes"
    assert result["n"] == len(images) and result["anomalous"] == sum(labels)
    assert result["auroc"] == pytest.approx(metrics.auroc(labels, [float(r["score"]) for r in images]))
    assert result["aggregation"] == {"image_score": "topk_mean", "image_topk": 0.1}


@pytest.mark.slow
def test_evaluate_reports_image_metrics_of_a_run(run):
    done = oneclass("evaluate", run, "--format", "json", "-q")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    expected = json.loads((run / "metrics.json").read_text())["test"]["image"]
    row = out["inputs"][0]
    assert row["image_auroc"] == pytest.approx(expected["auroc"])
    assert row["image_auprc"] == pytest.approx(expected["auprc"])
    assert row["images"] == expected["n"] and row["image_score"] == "topk_mean(0.1)"
    assert out["groups"][0]["image_auroc_mean"] == pytest.approx(expected["auroc"])
    assert out["groups"][0]["image_auroc_std"] == 0.0
    done = oneclass("evaluate", run, "--format", "csv", "-q")
    header, values = done.stdout.splitlines()[:2]
    assert float(dict(zip(header.split(","), values.split(",")))["image_auroc"]) == pytest.approx(expected["auroc"])
    shown = oneclass("evaluate", run)
    assert "image AUROC" in shown.stderr


def test_older_run_without_image_tables_still_evaluates(run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(run, old)
    for split in ("test", "val"):
        (old / f"scores/{split}_images.csv").unlink()
    assert open_run(old).image_scores("test") is None
    done = oneclass("evaluate", old, "--format", "json", "-q")
    assert done.returncode == 0, done.stderr
    expected = json.loads((run / "metrics.json").read_text())["test"]["image"]["auroc"]
    assert json.loads(done.stdout)["inputs"][0]["image_auroc"] == pytest.approx(expected)


@pytest.mark.slow
def test_aggregation_follows_the_recipe(tiny, tmp_path):
    done = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", tmp_path / "max", "-q",
                    "--set", "evaluate.image_score=max", "--set", "train.epochs=1",
                    "--set", "method.deep-sad.pretrain_epochs=0")
    assert done.returncode == 0, done.stderr
    for image in _rows(tmp_path / "max/scores/test_images.csv"):
        assert float(image["score"]) == pytest.approx(_image_patch_scores(tmp_path / "max", image["source"])[1].max(),
                                                      rel=1e-5)
    test = json.loads((tmp_path / "max/metrics.json").read_text())["test"]
    assert test["image"]["aggregation"] == {"image_score": "max"}


@pytest.mark.slow
def test_patches_dealt_apart_give_no_image_metrics(tiny, tmp_path):
    """split.group_by: none deals an image's patches among training, validation and test:
    no set holds a whole image, so there is no image score to give."""
    done = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", tmp_path / "none", "-q",
                    "--set", "split.group_by=none", "--set", "train.epochs=1",
                    "--set", "method.deep-sad.pretrain_epochs=0")
    assert done.returncode == 0, done.stderr
    found = json.loads((tmp_path / "none/metrics.json").read_text())
    for name, what in (("test", "test"), ("val", "validation")):
        assert found[name]["image"] is None
        assert found[name]["image_absent"].endswith(f"{what} image(s) have patches in other sets too "
                                                    f"(split.group_by: none): an image score needs all its patches")
        assert not (tmp_path / f"none/scores/{name}_images.csv").exists()


@pytest.fixture(scope="module")
def whole_store(tmp_path_factory):
    """The default synthetic dataset, one item per image, resized to 32 x 32."""
    store = tmp_path_factory.mktemp("whole") / "store"
    done = oneclass("extract-patches", "--whole-image", "--resize", "32", "--out", store, "-q")
    assert done.returncode == 0, done.stderr
    return store


@pytest.mark.slow
def test_whole_image_run_writes_no_image_tables(tiny, whole_store, tmp_path):
    store = whole_store
    # the tiny recipe cuts 32 px patches every 16 px: whole images take no size or stride,
    # and its dataset options are set to the default synthetic dataset the store holds
    sets = ["patches.whole_image=true", "patches.resize=32", "patches.size=null", "patches.stride=null",
            "dataset.normal=12", "dataset.anomalous=12", "dataset.height=256", "dataset.width=256"]
    done = oneclass("train", tiny["recipe"], "--store", store, "--out", tmp_path / "run", "-q",
                    *[a for s in sets for a in ("--set", s)])
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "run/scores").iterdir()) == ["test.csv", "val.csv"]
    test = json.loads((tmp_path / "run/metrics.json").read_text())["test"]
    assert test["image"] is None and "whole-image store" in test["image_absent"]
    done = oneclass("evaluate", tmp_path / "run", "--format", "json", "-q")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["inputs"][0]["image_auroc"] is None


def test_whole_image_run_refuses_patch_sizes_left_in_the_recipe(tiny, whole_store, tmp_path):
    done = oneclass("train", tiny["recipe"], "--store", whole_store, "--out", tmp_path / "run",
                    "--set", "patches.whole_image=true", "--set", "patches.resize=32")
    assert done.returncode == 2
    assert "--size: not used with --whole-image" in done.stderr
