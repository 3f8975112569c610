"""`oneclass train | score | evaluate | tsne` end to end on a tiny synthetic store:
run folders, determinism, resume, the pipeline, and every bad input of the protocol."""

from __future__ import annotations

import json
import warnings
import subprocess
import sys

import numpy as np
import pytest

from conftest import one_error_line, oneclass
from oneclass import recipe as recipes
from oneclass.artifacts import RUN_FILES, open_run
from oneclass.data.store import PatchStore
from oneclass.errors import OneclassError
from oneclass.training import train_run

pytestmark = pytest.mark.slow  # trains or runs the CLI end to end


@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "a"
    done = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", out)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(out)
    return out


def test_run_folder_holds_every_artifact(run):
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    assert not (run / "checkpoint.pt").exists()
    data = json.loads((run / "data.json").read_text())
    counts = data["counts"]["train"]
    assert counts["labeled_anomaly"] == round(0.2 * counts["total"])
    assert len(data["members"]["train"]) == counts["total"]
    env = json.loads((run / "env.json").read_text())
    assert env["device"] == "cpu" and env["torch"]
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in log] == [("pretrain", 1), ("train", 1), ("train", 2)]
    metrics = json.loads((run / "metrics.json").read_text())
    labels, scores = _scores(run / "scores/test.csv")
    from sklearn.metrics import roc_auc_score

    assert metrics["test"]["auroc"] == pytest.approx(roc_auc_score(labels, scores))  # from the written scores
    assert metrics["test"]["n"] == len(labels) == len(data["members"]["test"])
    assert metrics["train"]["patches_per_s"] > 0


def test_same_recipe_and_seed_give_identical_scores(run, tiny, tmp_path):
    again = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", tmp_path / "b", "-q")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "b/scores/test.csv").read_text() == (run / "scores/test.csv").read_text()
    other = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", tmp_path / "c",
                     "--seed", "1", "-q")
    assert other.returncode == 0, other.stderr
    assert (tmp_path / "c/scores/test.csv").read_text() != (run / "scores/test.csv").read_text()


def test_resume_after_an_interrupted_epoch_gives_the_same_scores(tiny, tmp_path):
    config = recipes.load(tiny["recipe"], ["train.epochs=3"])
    store = PatchStore.open(tiny["store"])
    train_run(config, tmp_path / "whole", store=store)

    def interrupt(event):  # Ctrl-C after the first batch of the second one-class epoch
        if event.get("event") == "batch" and event["stage"] == "train" and event["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(config, tmp_path / "cut", store=store, report=interrupt)
    assert (tmp_path / "cut.partial/checkpoint.pt").is_file() and not (tmp_path / "cut").exists()
    with pytest.raises(Exception, match="not a .*run|no such run folder"):
        open_run(tmp_path / "cut")
    train_run(config, tmp_path / "cut", store=store, resume=True)
    assert (tmp_path / "cut/scores/test.csv").read_text() == (tmp_path / "whole/scores/test.csv").read_text()
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "cut/log.jsonl").read_text().splitlines()]
    assert epochs == [1, 1, 2, 3]  # pretrain 1, then train 1-2 before the cut and 3 after


def test_resuming_on_a_changed_store_is_refused(tiny, tmp_path):
    """data.json's split members are rows of the store the run started on."""
    config = recipes.load(tiny["recipe"], ["train.epochs=2"])

    def interrupt(event):
        if event.get("event") == "batch" and event["stage"] == "train" and event["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(config, tmp_path / "cut", store=PatchStore.open(tiny["store"]), report=interrupt)
    data = tmp_path / "cut.partial/data.json"
    data.write_text(data.read_text().replace('"store_hash": "', '"store_hash": "0'))
    with pytest.raises(OneclassError, match=r"cut.partial: the patch store changed since this run started"):
        train_run(config, tmp_path / "cut", store=PatchStore.open(tiny["store"]), resume=True)
    assert (tmp_path / "cut.partial/checkpoint.pt").is_file()


def test_a_finished_run_is_kept_where_its_destination_became_someone_elses(tiny, tmp_path, monkeypatch):
    """Something not oneclass's appears at --out while the run trains: the finished run
    stays at OUT.partial, as the error says, and the other folder is untouched."""
    from oneclass import training

    out = tmp_path / "run"
    real = training._train_into

    def meanwhile(*args, **kwargs):
        real(*args, **kwargs)
        out.mkdir()
        (out / "thesis.tex").write_text("years of work")

    monkeypatch.setattr(training, "_train_into", meanwhile)
    with pytest.raises(OneclassError, match=r"no longer a oneclass run folder; the new one is kept at .*run.partial"):
        train_run(recipes.load(tiny["recipe"], ["train.epochs=1"]), out, store=PatchStore.open(tiny["store"]))
    assert all((tmp_path / "run.partial" / name).is_file() for name in RUN_FILES)  # complete
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_a_second_job_on_the_same_out_leaves_the_first_ones_run_alone(tiny, tmp_path, monkeypatch):
    """Two jobs started together both find OUT free; the second to create OUT.partial
    stops instead of deleting the first one's."""
    from oneclass import training
    from oneclass.artifacts import mark

    partial = tmp_path / "run.partial"
    checked = training._check_folder

    def first_job_starts_meanwhile(*args):
        checked(*args)
        partial.mkdir()
        mark(partial, "run")
        (partial / "checkpoint.pt").write_bytes(b"the first job's epoch 37")

    monkeypatch.setattr(training, "_check_folder", first_job_starts_meanwhile)
    with pytest.raises(OneclassError, match=r"run.partial: another job started this run meanwhile"):
        train_run(recipes.load(tiny["recipe"]), tmp_path / "run", store=PatchStore.open(tiny["store"]))
    assert (partial / "checkpoint.pt").read_bytes() == b"the first job's epoch 37"


def test_resume_with_repeats_lists_finished_seeds_resumes_the_cut_one_and_trains_the_rest(tiny, tmp_path):
    args = ["train", tiny["recipe"], "--store", tiny["store"], "--out", tmp_path / "rep", "-q",
            "--set", "train.epochs=1"]
    done = oneclass(*args, "--seed", "0")
    assert done.returncode == 0, done.stderr
    (tmp_path / "rep").rename(tmp_path / "rep-seed0")
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep-seed0").rename(tmp_path / "rep" / "seed-0")  # seed 0 finished, seeds 1-2 not begun
    done = oneclass(*args, "--repeats", "3", "--resume")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(tmp_path / "rep" / f"seed-{s}") for s in range(3)]
    assert all((tmp_path / "rep" / f"seed-{s}" / "metrics.json").is_file() for s in range(3))
    # finished seeds of another recipe are not listed as this one's
    one_error_line(oneclass(*args, "--repeats", "3", "--resume", "--set", "train.lr=0.05"), 2,
                   f"{tmp_path / 'rep' / 'seed-0'}: the recipe differs from the one this finished run was made "
                   f"with (section train); use the same recipe, or choose another --out")


def test_resume_at_the_start_of_a_stage_keeps_the_work_done_between_stages(tiny, tmp_path):
    """Ctrl-C in the first epoch of Deep SAD's one-class stage: the checkpoint is the end of
    pretraining, whose network copy into the one-class encoder happens between the stages;
    resuming once restored the stale encoder over it (the run then trained from random
    weights) and drew the wrong random state."""
    config = recipes.load(tiny["recipe"])
    store = PatchStore.open(tiny["store"])
    train_run(config, tmp_path / "whole", store=store)

    def interrupt(event):
        if event.get("event") == "batch" and event["stage"] == "train":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(config, tmp_path / "cut", store=store, report=interrupt)
    train_run(config, tmp_path / "cut", store=store, resume=True)
    assert (tmp_path / "cut/scores/test.csv").read_text() == (tmp_path / "whole/scores/test.csv").read_text()


def test_repeats_run_consecutive_seeds(tiny, tmp_path):
    done = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", tmp_path / "rep",
                    "--repeats", "2", "--seed", "5", "-q", "--set", "train.epochs=1",
                    "--set", "method.deep-sad.pretrain_epochs=0")
    assert done.returncode == 0, done.stderr
    paths = done.stdout.split()
    assert paths == [str(tmp_path / "rep/seed-5"), str(tmp_path / "rep/seed-6")]
    assert [json.loads((tmp_path / f"rep/seed-{s}/metrics.json").read_text())["seed"] for s in (5, 6)] == [5, 6]
    wide = {"COLUMNS": "250"}  # one table row per line
    both = oneclass("evaluate", *paths, env=wide).stderr
    aurocs = [json.loads((tmp_path / f"rep/seed-{s}/metrics.json").read_text())["test"]["auroc"] for s in (5, 6)]
    expected = f"{np.mean(aurocs):.4f} ± {np.std(aurocs, ddof=1):.4f} (n=2)"
    assert expected in both, both
    single = oneclass("evaluate", paths[0], env=wide).stderr
    rows = single.split("per input")[0].split("\n", 1)[1]  # the group table, after its title
    assert "±" not in rows and f"{aurocs[0]:.4f}" in rows, single


def test_train_score_evaluate_pipeline(run, tiny, tmp_path):
    shell = (f"{sys.executable} -m oneclass score {run} {tiny['store']} "
             f"| {sys.executable} -m oneclass evaluate - --format json -q")
    done = subprocess.run(shell, shell=True, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["inputs"][0]
    assert result["n"] == len(PatchStore.open(tiny["store"]))
    # the run's own test scores: evaluate agrees with the metrics written at training
    done = oneclass("evaluate", run, "--format", "csv", "--plot", tmp_path / "auc.png")
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()[:2]
    values = dict(zip(header.split(","), row.split(",")))
    metrics = json.loads((run / "metrics.json").read_text())
    assert float(values["auroc"]) == pytest.approx(metrics["test"]["auroc"])
    assert int(values["val_tp"]) == metrics["test"]["at_val_threshold"]["tp"]
    _assert_a_drawn_png(tmp_path / "auc.png")


def test_score_images_and_stdin_paths(run, tiny, tmp_path):
    from PIL import Image

    import numpy as np

    image = tmp_path / "new.png"
    Image.fromarray(np.full((64, 48), 120, np.uint8)).save(image)
    done = oneclass("score", run, image, "--format", "jsonl")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    # 48 wide, 64 high, 32 px patches every 16 px: x in {0, 16}, y in {0, 16, 32}, row by row
    assert [(r["x"], r["y"]) for r in rows] == [(x, y) for y in (0, 16, 32) for x in (0, 16)]  # numbers
    assert rows[0]["label"] is None
    piped = subprocess.run([sys.executable, "-m", "oneclass", "score", str(run), "-"], input=f"{image}\n",
                           capture_output=True, text=True)
    assert piped.returncode == 0 and len(piped.stdout.splitlines()) == 7  # header + 6
    (tmp_path / "sub").mkdir()
    Image.fromarray(np.full((32, 32), 60, np.uint8)).save(tmp_path / "sub/other.png")
    done = oneclass("score", run, tmp_path, "--format", "jsonl")  # a folder, searched recursively
    sources = [json.loads(line)["source"] for line in done.stdout.splitlines()]
    assert sources == [str(image)] * 6 + [str(tmp_path / "sub/other.png")]


def test_evaluate_counts_a_run_named_twice_once_and_keeps_few_shot_runs_apart(run, tmp_path):
    import shutil

    shots = tmp_path / "shots"
    shutil.copytree(run, shots)
    recipe = (shots / "recipe.yaml").read_text()
    recipe = recipe.replace("  gamma: 0.2\n", "  gamma: 0.0\n").replace("labeled_anomalies: null", "labeled_anomalies: 5")
    (shots / "recipe.yaml").write_text(recipe)
    done = oneclass("evaluate", run, f"{run}/", shots, "--format", "json", "-q")
    assert done.returncode == 0, done.stderr
    groups = json.loads(done.stdout)["groups"]
    assert [(g["gamma"], g["labeled_anomalies"], g["n"]) for g in groups] == [(None, 5, 1), (0.2, None, 1)]


def test_evaluate_keeps_runs_of_one_dataset_plugin_on_other_roots_apart(run, tmp_path):
    import shutil

    for name in ("leather", "grid"):
        shutil.copytree(run, tmp_path / name)
        recipe = (tmp_path / name / "recipe.yaml").read_text()
        (tmp_path / name / "recipe.yaml").write_text(recipe.replace("  root: null\n", f"  root: data/{name}\n", 1))
    done = oneclass("evaluate", tmp_path / "leather", tmp_path / "grid", "--format", "json", "-q")
    assert done.returncode == 0, done.stderr
    assert sorted((g["dataset"], g["n"]) for g in json.loads(done.stdout)["groups"]) == [
        ("synthetic (grid)", 1), ("synthetic (leather)", 1)]


def test_score_refuses_a_store_cut_otherwise_than_the_run(run, tmp_path):
    """64 px patches resized to 32 have the run's 32 x 32 shape but not its scale."""
    store = tmp_path / "s64"
    done = oneclass("extract-patches", "--out", store, "--size", "64", "--resize", "32", "-q")
    assert done.returncode == 0, done.stderr
    one_error_line(oneclass("score", run, store), 2, f"{store}: the patches were not cut as the run's were: "
                   "patches.size (run 32, store 64); patches.resize (run None, store 32)")


def test_tsne_refuses_a_store_extracted_again_since_training(run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    data = json.loads((copy / "data.json").read_text())
    (copy / "data.json").write_text(json.dumps({**data, "store_hash": "0" * 64}))
    one_error_line(oneclass("tsne", copy, "--out", tmp_path / "t.png"), 2,
                   "the patch store changed since the run was trained")


def test_scoring_a_folder_skips_masks_and_hidden_folders_as_the_folder_dataset_does(run, tmp_path):
    from PIL import Image

    import numpy as np

    import os

    for name in ("new.png", "new_mask.png", "new_mask_1.png", ".cache/thumb.png", "../linked-from-scoring/far.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((32, 32), 90, np.uint8)).save(tmp_path / name)
    os.symlink(tmp_path.parent / "linked-from-scoring", tmp_path / "linked")  # a linked folder is read
    done = oneclass("score", run, tmp_path, "--format", "jsonl")
    assert done.returncode == 0, done.stderr
    assert {json.loads(line)["source"] for line in done.stdout.splitlines()} == {
        str(tmp_path / "new.png"), str(tmp_path / "linked/far.png")}
    # a folder dataset's root: its images, not its masks/ tree
    for name in ("root/normal/n.png", "root/anomalous/crack/c.png", "root/masks/crack/c.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 32), 90, np.uint8)).save(tmp_path / name)
    done = oneclass("score", run, tmp_path / "root", "--format", "jsonl")
    assert {json.loads(line)["source"] for line in done.stdout.splitlines()} == {
        str(tmp_path / "root/normal/n.png"), str(tmp_path / "root/anomalous/crack/c.png")}


def test_tsne_writes_figure_and_silhouette(run, tmp_path):
    done = oneclass("tsne", run, "--out", tmp_path / "t.png", "--perplexity", "5")
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "t.json").read_text())
    labels, scores = _scores(run / "scores/test.csv")
    above = scores >= saved["threshold"]  # the outcomes follow from the run's scores and the threshold
    assert saved["outcomes"] == {"TP": int((above & labels).sum()), "FN": int((~above & labels).sum()),
                                 "TN": int((~above & ~labels).sum()), "FP": int((above & ~labels).sum())}
    assert saved["points"] == len(labels) and -1 <= saved["silhouette"] <= 1
    _assert_a_drawn_png(tmp_path / "t.png")


def test_tsne_refuses_a_method_without_embed(run, monkeypatch):
    from oneclass.cli.tsne import tsne
    from oneclass.errors import OneclassError
    from oneclass.methods.deep_sad import DeepSAD

    monkeypatch.setattr(DeepSAD, "embed", None)
    with pytest.raises(OneclassError, match="no latent space"):
        tsne(run, "test", None, 30.0, 0, 5000, "cpu")


def test_tsne_subsamples_to_max_points_within_each_class(run, tmp_path):
    done = oneclass("tsne", run, "--out", tmp_path / "t.png", "--perplexity", "5", "--max-points", "20")
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "t.json").read_text())
    labels, _ = _scores(run / "scores/test.csv")
    assert saved["points"] == 20
    assert saved["outcomes"]["TP"] + saved["outcomes"]["FN"] == max(1, round(20 * labels.mean()))
    from oneclass.latent import draw_per_class

    rare = np.r_[np.zeros(10_000, int), np.ones(20, int)]  # a plain draw of 10 keeps no anomaly 98% of the time
    for seed in range(5):
        kept = draw_per_class(rare, 10, seed)
        assert len(kept) == 10 and rare[kept].sum() == 1 and (np.diff(kept) > 0).all()


def test_tsne_does_not_write_its_record_over_a_runs_files(run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = (copy / "metrics.json").read_bytes()
    one_error_line(oneclass("tsne", copy, "--out", copy / "metrics.png", "--perplexity", "5"), 2,
                   f"--out: {copy / 'metrics.png'} would replace {copy / 'metrics.json'}, which is not a t-SNE "
                   f"record; choose another name")
    assert (copy / "metrics.json").read_bytes() == before and not (copy / "metrics.png").exists()


@pytest.mark.parametrize("sets,message", [
    (["method.name=deep-sd"], "unknown method 'deep-sd' (did you mean 'deep-sad'?)"),
    (["method.margin=0.1"], "method.margin: unknown key"),
    (["split.gamma=0.7"], "split.gamma: must be in [0, 0.5], got 0.7"),
    (["split.seen_subclasses=[scratch]"], "split.seen_subclasses: no anomalous patches of subclass 'scratch'"),
    (["method.name=binclass", "split.gamma=0"], "method binclass: needs labelled anomalies; set split.gamma > 0"),
])
def test_bad_training_requests(tiny, tmp_path, sets, message):
    args = [a for s in sets for a in ("--set", s)]
    done = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", tmp_path / "x", *args)
    assert message in one_error_line(done)
    assert not list(tmp_path.glob("x*"))  # nothing half-written


def test_bad_run_folders(run, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    (broken / "model.pt").unlink()
    assert "incomplete run folder (missing model.pt)" in one_error_line(oneclass("score", broken, "-"))
    old = tmp_path / "old"
    shutil.copytree(run, old)
    env = json.loads((old / "env.json").read_text())
    (old / "env.json").write_text(json.dumps({**env, "run_format": 0, "oneclass": "0.0.1"}))
    assert "run format 0 written by oneclass 0.0.1" in one_error_line(oneclass("score", old, "-"))


def test_scoring_patches_of_another_shape_fails(run, tmp_path):
    done = oneclass("extract-patches", "--size", "32", "--channels", "3", "--set", "dataset.normal=1",
                    "--set", "dataset.anomalous=0", "--out", tmp_path / "rgb", "-q")
    assert done.returncode == 0, done.stderr
    line = one_error_line(oneclass("score", run, tmp_path / "rgb"))
    assert "patches are 3 x 32 x 32" in line and "trained on 1 x 32 x 32" in line


def test_empty_score_file_fails(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    assert "empty.csv: empty score file" in one_error_line(oneclass("evaluate", tmp_path / "empty.csv"))


def test_an_image_with_other_channels_is_scored_converted_as_extraction_converts(run, tmp_path):
    """Extraction converts every image to the store's channel count (the first image's
    where the recipe names none), so a folder of grey images with one colour image trains;
    scoring converts that image again, and says so, rather than refusing it."""
    from PIL import Image

    import numpy as np

    grey = np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)
    (tmp_path / "mixed").mkdir()
    Image.fromarray(grey).save(tmp_path / "mixed/grey.png")
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "mixed/rgb.png")
    done = oneclass("score", run, tmp_path / "mixed")
    assert done.returncode == 0, done.stderr
    assert "rgb.png: converted to the 1 channel(s) the run was trained on, as extraction converts " \
           "(1 of 2 image(s) converted)" in done.stderr
    rows = [line.rsplit(",", 1) for line in done.stdout.splitlines()[1:]]
    by_image = {}
    for key, score in rows:
        by_image.setdefault("rgb" if "rgb.png" in key else "grey", []).append(float(score))
    assert by_image["rgb"] == by_image["grey"]  # the same pixels once converted


def test_training_log_lines_show_every_field_a_method_logs():
    from oneclass.cli.console import err
    from oneclass.cli.train import _report

    events = [
        {"stage": "train", "epoch": 2, "epochs": 9, "loss": 0.5, "patches_per_s": 100.0,
         "codes_used": 0.125, "perplexity": 30.04},
        {"stage": "semi", "skipped": "no labelled items (gamma 0): the model stays ms-gVAE"},
        {"stage": "tune", "lambda2": 0.1, "lambda3": 10.0, "val_auroc": 0.75},
        {"stage": "tune", "chosen": {"lambda2": 0.1, "lambda3": 10.0}, "val_auroc": 0.75},
    ]
    with err.capture() as captured:
        for event in events:
            _report(event)
    lines = captured.get().splitlines()
    assert lines == ["  train 2/9  loss 0.5  codes used 0.1250  perplexity 30.04  100 patches/s",
                     "  semi: skipped no labelled items (gamma 0): the model stays ms-gVAE",
                     "  tune: lambda2 0.1000, lambda3 10, val AUROC 0.7500",
                     "  tune: chosen (lambda2 0.1000, lambda3 10), val AUROC 0.7500"]


def _scores(path):
    """(labels as bool, scores) of a written score table."""
    import csv

    rows = list(csv.DictReader(path.open()))
    return (np.array([r["label"] == "1" for r in rows]), np.array([float(r["score"]) for r in rows]))


def _assert_a_drawn_png(path):
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 200
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    colourful = (pixels.max(1).astype(int) - pixels.min(1)) > 60  # markers and lines, not grey text
    assert colourful.sum() > 100


def test_jsonl_scores_write_numbers_as_numbers(run, tiny):
    done = oneclass("score", run, tiny["store"], "--format", "jsonl")
    assert done.returncode == 0, done.stderr
    first = json.loads(done.stdout.splitlines()[0])
    assert [type(first[k]) for k in ("id", "x", "y", "label", "score")] == [int, int, int, int, float]
    assert isinstance(first["source"], str) and isinstance(first["subclass"], str)


@pytest.mark.parametrize("damage,expect", [
    (lambda p: p.write_bytes(p.read_bytes()[:300]), "model.pt: cannot read the model: truncated or damaged"),
    (lambda p: __import__("torch").save({"weights": __import__("torch").zeros(2)}, p),
     "model.pt: not a oneclass model (no format, method, in_shape, state)"),
    (lambda p: __import__("torch").save({"format": 1, "payload": __import__("fractions").Fraction(1, 3)}, p),
     "model.pt: not a oneclass model: it holds objects other than tensors, so it was not loaded"),
])
def test_a_damaged_or_foreign_model_is_one_line(run, tiny, tmp_path, damage, expect):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    damage(copy / "model.pt")
    done = oneclass("score", copy, tiny["store"])
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], done.stderr
    assert "weights_only" not in done.stderr


def test_a_damaged_recipe_in_a_run_folder_is_one_line(run, tiny, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "recipe.yaml").write_text("seed: [0\n")
    done = oneclass("score", copy, tiny["store"])
    assert done.returncode == 2 and done.stderr.strip() == \
        f"oneclass: error: {copy / 'recipe.yaml'}: damaged (not a YAML mapping of recipe sections); " \
        "the run's recipe cannot be read back"


@pytest.mark.parametrize("damage,expect", [
    (lambda p: p.write_bytes(p.read_bytes()[:200]), "checkpoint.pt: cannot read the checkpoint: truncated or damaged"),
    (lambda p: __import__("torch").save({"stage": "x"}, p), "checkpoint.pt: not a oneclass checkpoint (no epoch"),
])
def test_resuming_from_a_damaged_checkpoint_is_one_line(tiny, tmp_path, damage, expect):
    config = recipes.load(tiny["recipe"], ["train.epochs=3"])
    store = PatchStore.open(tiny["store"])

    def interrupt(event):
        if event.get("event") == "batch" and event["stage"] == "train":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(config, tmp_path / "cut", store=store, report=interrupt)
    damage(tmp_path / "cut.partial" / "checkpoint.pt")
    done = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", tmp_path / "cut", "--resume",
                    "--set", "train.epochs=3")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert expect in done.stderr and "Traceback" not in done.stderr


def test_explain_draws_the_most_anomalous_items_beside_their_maps(run, tiny, tmp_path):
    """`oneclass explain`: the TOP highest-scoring items, ranked as `score` ranks them, one
    figure each, a scores.csv, a marked folder that --overwrite alone replaces."""
    import csv

    out = tmp_path / "maps"
    done = oneclass("explain", run, tiny["store"], "--out", out, "--top", "3")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    with open(out / "scores.csv") as fh:
        rows = list(csv.DictReader(fh))
    scored = subprocess.run([sys.executable, "-m", "oneclass", "score", str(run), str(tiny["store"])],
                            capture_output=True, text=True)
    table = list(csv.DictReader(scored.stdout.splitlines()))
    best = sorted(table, key=lambda r: -float(r["score"]))[:3]
    assert [r["id"] for r in rows] == [r["id"] for r in best] and [r["rank"] for r in rows] == ["1", "2", "3"]
    for row in rows:
        _assert_a_drawn_png(out / row["figure"])
    assert sorted(p.name for p in out.iterdir()) == sorted([".oneclass", "scores.csv", *(r["figure"] for r in rows)])
    again = oneclass("explain", run, tiny["store"], "--out", out)
    assert again.returncode == 2 and "pass --overwrite" in again.stderr
    assert oneclass("explain", run, tiny["store"], "--out", out, "--overwrite", "--top", "1").returncode == 0
    assert len(list(out.glob("*.png"))) == 1
    refused = oneclass("explain", run, tiny["store"], "--out", run, "--overwrite")  # a run, not maps
    assert refused.returncode == 2 and "oneclass run folder" in refused.stderr
    stranger = tmp_path / "other.partial"  # where `--out other` would be built: not ours
    stranger.mkdir()
    (stranger / "notes.txt").write_text("keep me")
    one_error_line(oneclass("explain", run, tiny["store"], "--out", tmp_path / "other"), 2,
                   f"{stranger}: exists and is not an unfinished oneclass maps folder")
    assert (stranger / "notes.txt").read_text() == "keep me" and not (tmp_path / "other").exists()


def test_twelve_bit_images_are_cut_and_scored_through_patches_bits(run, tmp_path):
    """A 12-bit camera's 16-bit TIFFs: refused without patches.bits, read as their top 8
    significant bits with it, alike by extract-patches and by score on image files."""
    import shutil

    import tifffile
    from PIL import Image

    rng = np.random.default_rng(0)
    twelve = rng.integers(0, 4096, (64, 48), dtype=np.uint16)
    twelve[0, 0] = 4095
    for folder in ("data/normal", "data/anomalous/dent"):
        (tmp_path / folder).mkdir(parents=True)
    tifffile.imwrite(tmp_path / "data/normal/a.tif", twelve)
    tifffile.imwrite(tmp_path / "data/anomalous/dent/b.tif", twelve[::-1].copy())
    Image.fromarray(np.full((64, 48), 255, np.uint8)).save(tmp_path / "data/anomalous/dent/b_mask.png")
    cut = ("extract-patches", "-d", "folder", "--root", tmp_path / "data", "--size", 32, "--stride", 16, "-q")
    one_error_line(oneclass(*cut, "--out", tmp_path / "s"), 2,
                   "a.tif: 16-bit pixels that reach only 4095 (data of 12 bits or fewer?): keeping a 16-bit "
                   "pixel's top 8 bits would leave 16 grey level(s); set patches.bits (--bits) to the data's "
                   "bit depth, e.g. 12")
    assert oneclass(*cut, "--bits", 12, "--out", tmp_path / "s").returncode == 0
    store = PatchStore.open(tmp_path / "s")
    first = next(i for i, r in enumerate(store.index) if r["source"].endswith("a.tif") and r["x"] == "16"
                 and r["y"] == "0")
    assert (store.images[first, 0] == (twelve[:32, 16:48] >> 4)).all()
    one_error_line(oneclass("score", run, tmp_path / "s"), 2, "patches.bits (run None, store 12)")

    twelve_bit_run = tmp_path / "run"
    shutil.copytree(run, twelve_bit_run)
    data = json.loads((twelve_bit_run / "data.json").read_text())
    data["extraction"]["bits"] = 12
    (twelve_bit_run / "data.json").write_text(json.dumps(data))
    Image.fromarray((twelve >> 4).astype(np.uint8)).save(tmp_path / "eight.png")
    scored = [oneclass("score", twelve_bit_run, tmp_path / name, "--format", "jsonl")
              for name in ("data/normal/a.tif", "eight.png")]
    assert all(done.returncode == 0 for done in scored), scored[0].stderr
    assert [json.loads(line)["score"] for line in scored[0].stdout.splitlines()] == \
        [json.loads(line)["score"] for line in scored[1].stdout.splitlines()]


def test_tsne_refuses_a_split_of_one_class(run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    data = json.loads((copy / "data.json").read_text())
    labels = PatchStore.open(data["store"]).labels
    data["members"]["val"] = [int(i) for i in data["members"]["val"] if labels[i] == 0]
    (copy / "data.json").write_text(json.dumps(data))
    one_error_line(oneclass("tsne", copy, "--split", "val", "--out", tmp_path / "t.png"), 2,
                   f"--split val: its {len(data['members']['val'])} patches are all normal; the map's "
                   f"equal-error threshold needs both classes")


def _copy_run(run, to, seed=None, root=None, **method):
    """A copy of ``run`` whose recipe.yaml says another seed, dataset root or method keys."""
    import shutil

    import yaml

    shutil.copytree(run, to)
    recipe = yaml.safe_load((to / "recipe.yaml").read_text())
    recipe["seed"] = recipe["seed"] if seed is None else seed
    recipe["dataset"]["root"] = root if root is not None else recipe["dataset"]["root"]
    recipe["method"].update(method)
    (to / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return to


def test_evaluate_keeps_runs_of_other_settings_apart_and_pairs_variants_by_seed(run, tmp_path):
    """Runs of one method trained with other settings are neither averaged nor paired
    together: their method is named with the keys that differ. A key written at its
    default is the default; the seed and the dataset root's spelling are not settings."""
    runs = [_copy_run(run, tmp_path / "a1", seed=1), _copy_run(run, tmp_path / "a2", seed=2, eta=1.0),
            _copy_run(run, tmp_path / "b1", seed=1, eta=2.0), _copy_run(run, tmp_path / "b2", seed=2, eta=2.0)]
    done = oneclass("evaluate", *runs, "--format", "json", "-q")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert [(g["method"], g["n"]) for g in found["groups"]] == [("deep-sad (eta=1.0)", 2), ("deep-sad (eta=2.0)", 2)]
    assert [(t["method_a"], t["method_b"], t["n"]) for t in found["wilcoxon"]] == [
        ("deep-sad (eta=1.0)", "deep-sad (eta=2.0)", 2)]
    # repeats alone stay one group, named as the method is
    done = oneclass("evaluate", runs[0], runs[1], "--format", "json", "-q")
    assert [(g["method"], g["n"]) for g in json.loads(done.stdout)["groups"]] == [("deep-sad", 2)]
    one_error_line(oneclass("evaluate", run, _copy_run(run, tmp_path / "again"), "-q"), 2,
                   f"{run} and {tmp_path / 'again'}: two runs of deep-sad on synthetic with one gamma, seed 0 "
                   f"and the same settings; name one of them")
    slash = [_copy_run(run, tmp_path / "r1", root="data/leather/"), _copy_run(run, tmp_path / "r2", seed=1,
                                                                             root="data/leather")]
    done = oneclass("evaluate", *slash, "--format", "json", "-q")
    assert [(g["dataset"], g["n"]) for g in json.loads(done.stdout)["groups"]] == [("synthetic", 2)]


def test_image_files_scored_for_a_run_trained_on_a_slide_level_are_warned_of_their_scale(tmp_path):
    from types import SimpleNamespace

    from PIL import Image

    import numpy as np

    from oneclass.scoring import scoring_input

    Image.fromarray(np.full((32, 32), 90, np.uint8)).save(tmp_path / "tile.png")
    extraction = {"size": 32, "stride": 32, "mask_frac": 0.5, "channels": 1, "whole_image": False}
    for level, warned in ((2, True), (0, False)):
        run = SimpleNamespace(data={"image_shape": [1, 32, 32], "extraction": {**extraction, "level": level}},
                              recipe={"patches": {"channels": 1}})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            images, _, _ = scoring_input(run, str(tmp_path / "tile.png"))
        assert images.shape == (1, 1, 32, 32)
        assert [str(w.message).split(";")[0] for w in caught] == (
            ["the run was trained on slides read at level 2"] if warned else [])
