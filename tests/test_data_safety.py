"""Data safety: --overwrite replaces only what oneclass wrote, nothing is deleted before
the new work has been checked, and a destination that cannot be written (a file, a full
disk, a read-only place) gives one line, a non-zero exit and no temporary files.

Full and read-only disks are real tmpfs mounts; those tests skip where mounting is not
allowed (they need root, as CI and the development machines have)."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from oneclass.errors import OneclassError
from conftest import one_error_line, oneclass, sigint_as_at_a_terminal

pytestmark = pytest.mark.slow  # trains or runs the CLI end to end


def _one_line(result, code: int, *expect: str) -> None:
    one_error_line(result, code, *expect)
    assert result.stdout == ""


def _leftovers(folder: Path) -> list[str]:
    """Temporary names oneclass writes under (files and folders)."""
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name or ".old-" in p.name)


def _unrelated(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "thesis.tex").write_text("years of work")
    return folder


@pytest.fixture
def disk(tmp_path):
    """``disk(size, readonly=False)``: a fresh tmpfs of that size mounted under tmp_path."""
    mounts = []

    def mount(size: str = "64k", readonly: bool = False) -> Path:
        where = tmp_path / f"disk{len(mounts)}"
        where.mkdir()
        options = f"size={size}" + (",ro" if readonly else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): needs root")
        mounts.append(where)
        return where

    yield mount
    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("safety") / "run"
    done = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", out, "-q",
                    "--set", "train.epochs=1")
    assert done.returncode == 0, done.stderr
    return out


# -- --overwrite deletes only what oneclass wrote ------------------------------------


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_extract_refuses_a_folder_it_did_not_write(tmp_path, overwrite):
    out = _unrelated(tmp_path / "out")
    result = oneclass("extract-patches", "--out", out, *overwrite)
    _one_line(result, 2, "a folder oneclass did not write", "remove it yourself")
    assert (out / "thesis.tex").read_text() == "years of work"
    assert _leftovers(tmp_path) == []


def test_extract_overwrite_replaces_its_own_store(tmp_path):
    out = tmp_path / "store"
    assert oneclass("extract-patches", "--out", out, "-q").returncode == 0
    assert (out / ".oneclass").is_file()
    _one_line(oneclass("extract-patches", "--out", out), 2, "store folder exists; pass --overwrite")
    again = oneclass("extract-patches", "--out", out, "--overwrite", "-q", "--size", "32")
    assert again.returncode == 0, again.stderr
    assert '"size": 32' in (out / "meta.json").read_text()
    assert _leftovers(tmp_path) == []


def test_extract_refuses_a_run_folder(run, tmp_path):
    _one_line(oneclass("extract-patches", "--out", run, "--overwrite"), 2, "is a oneclass run folder")
    assert (run / "model.pt").is_file()


@pytest.mark.parametrize("command", ["extract-patches", "train"])
def test_out_naming_a_file_is_refused_before_any_work(tiny, tmp_path, command):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    args = ["--store", tiny["store"]] if command == "train" else []
    recipe = [tiny["recipe"]] if command == "train" else []
    began = time.perf_counter()
    result = oneclass(command, *recipe, *args, "--out", target, "--overwrite")
    _one_line(result, 2, "exists and is not a folder")
    assert target.read_text() == "keep me"
    assert time.perf_counter() - began < 30  # refused up front, not after training
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_train_overwrite_refuses_an_unrelated_folder_before_any_work(tiny, tmp_path):
    out = _unrelated(tmp_path / "results")
    result = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", out, "--overwrite")
    _one_line(result, 2, "a folder oneclass did not write", "--out")
    assert (out / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def test_train_overwrite_refuses_an_unrelated_partial_folder(tiny, tmp_path):
    _unrelated(tmp_path / "r.partial")
    result = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", tmp_path / "r", "--overwrite")
    _one_line(result, 2, "r.partial: not an unfinished oneclass run")
    assert (tmp_path / "r.partial" / "thesis.tex").read_text() == "years of work"


def test_a_failing_overwrite_keeps_the_old_run(tiny, run, tmp_path):
    before = (run / "scores/test.csv").read_text()
    # binclass needs labelled anomalies: refused after the split, before any file is touched
    result = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", run, "--overwrite",
                      "--set", "method.name=binclass", "--set", "split.gamma=0")
    _one_line(result, 2, "needs labelled anomalies")
    assert (run / "scores/test.csv").read_text() == before
    assert not run.with_name("run.partial").exists() and _leftovers(run.parent) == []


def test_train_overwrite_replaces_its_own_run(tiny, tmp_path):
    out = tmp_path / "deep" / "er" / "run"  # missing parents are created
    for args in ([], ["--overwrite", "--set", "seed=1"]):
        done = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", out, "-q",
                        "--set", "train.epochs=1", *args)
        assert done.returncode == 0, done.stderr
    assert "seed: 1" in (out / "recipe.yaml").read_text() and (out / ".oneclass").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["run"]


def test_overwrite_refuses_a_run_folder_holding_the_users_files(tiny, run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(run, out)
    (out / "tsne-val.png").write_bytes(b"drawn by oneclass tsne: ours")
    (out / "my_notes.txt").write_text("irreplaceable")
    (out / "raw").mkdir()
    (out / "raw" / "a.png").write_bytes(b"x")
    (out / "scores" / "by_hand.xlsx").write_bytes(b"x")
    result = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", out, "--overwrite")
    _one_line(result, 2, f"{out}: a oneclass run folder holding what oneclass did not write "
                         "(my_notes.txt, raw/, scores/by_hand.xlsx)", "move them out first")
    assert (out / "my_notes.txt").read_text() == "irreplaceable" and (out / "raw" / "a.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_what_counts_as_oneclass_files_in_each_kind_of_folder(tmp_path):
    from oneclass.artifacts import check_destination, foreign_entries, mark

    def folder(name, kind, *files):
        path = tmp_path / name
        path.mkdir()
        mark(path, kind)
        for file in files:
            (path / file).parent.mkdir(parents=True, exist_ok=True)
            (path / file).write_bytes(b"")
        return path

    run = folder("run", "run", "model.pt", "scores/test_images.csv", "maps/test.npy", "checkpoint.pt",
                 ".metrics.tmp.json", "tsne-val.png")
    assert foreign_entries(run, "run") == []
    (run / "maps" / "mine.png").write_bytes(b"")
    (run / "data").symlink_to(tmp_path)  # a link: never followed, never ours
    assert foreign_entries(run, "run") == ["data/", "maps/mine.png"]
    store = folder("store", "store", "images.npy", "masks.npy", "index.csv", "meta.json", "README")
    assert foreign_entries(store, "store") == ["README"]
    maps = folder("maps", "maps", "scores.csv", "001-img-x0-y0.png", "overview.png")
    assert foreign_entries(maps, "maps") == ["overview.png"]
    with pytest.raises(OneclassError, match=r"maps: a oneclass maps folder holding what oneclass did not "
                                            r"write \(overview.png\); replacing it would delete them"):
        check_destination(maps, "maps", overwrite=True)


def test_out_dot_names_the_current_folder(tiny, tmp_path):
    folder = _unrelated(tmp_path / "work")
    result = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", ".", "--overwrite", cwd=folder)
    _one_line(result, 2, f"{folder}: exists and is a folder oneclass did not write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


# -- --store must match the recipe ---------------------------------------------------


def test_store_cut_otherwise_than_the_recipe_says_is_refused(tiny, tmp_path):
    result = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", tmp_path / "r",
                      "--set", "patches.size=64", "--set", "dataset.name=folder")
    _one_line(result, 2, "the store was not cut as", "patches.size (recipe 64, store 32)",
              "dataset.name (recipe 'folder', store 'synthetic')")
    assert not list(tmp_path.iterdir())
    other = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", tmp_path / "r",
                     "--set", "dataset.normal=7")
    _one_line(other, 2, "dataset.normal (recipe 7, store 6)")


# -- full and read-only disks --------------------------------------------------------


def test_train_on_a_full_disk(tiny, disk):
    where = disk("256k")  # room for the recipe and split, not for the first checkpoint
    result = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", where / "run", "-q")
    _one_line(result, 1, str(where / "run.partial"), "No space left on device")
    assert list(where.iterdir()) == []  # no checkpoint yet: the unfinished run is not kept


def test_extract_on_a_full_disk(disk):
    where = disk("64k")
    result = oneclass("extract-patches", "--out", where / "store", "-q")
    _one_line(result, 1, f"{where / 'store'}: cannot write the patch store: No space left on device")
    assert list(where.iterdir()) == []


@pytest.mark.parametrize("readonly", [True, False], ids=["read-only", "full"])
def test_score_evaluate_tsne_outputs(tiny, run, disk, readonly):
    where = disk("4k", readonly=readonly)
    expect = "not writable" if readonly else "No space left on device"
    for args, target in ((["score", run, tiny["store"], "-o"], "s.csv"),
                         (["evaluate", run, "-q", "--plot"], "auc.png"),
                         (["tsne", run, "--perplexity", "5", "-o"], "t.png")):
        result = oneclass(*args, where / target)
        _one_line(result, 1, str(where), expect)
        assert list(where.iterdir()) == []


def test_train_into_a_read_only_place_is_refused_before_any_work(tiny, disk):
    where = disk(readonly=True)
    result = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", where / "run")
    _one_line(result, 1, f"{where}: not writable")


# -- Ctrl-C ----------------------------------------------------------------------------


def test_ctrl_c_names_the_checkpoint_and_the_command_that_resumes(tiny, tmp_path):
    out = tmp_path / "run"
    args = ["train", str(tiny["recipe"]), "--store", str(tiny["store"]), "--out", str(out), "-q",
            "--set", "train.epochs=15"]
    proc = subprocess.Popen([sys.executable, "-m", "oneclass", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=sigint_as_at_a_terminal)
    checkpoint = tmp_path / "run.partial" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and f"the checkpoint is {checkpoint}" in lines[0], stderr
    command = shlex.split(lines[0].split("resume with: ", 1)[1])
    assert command[:2] == ["oneclass", "train"] and command[-1] == "--resume"
    done = subprocess.run([sys.executable, "-m", "oneclass", *command[1:], "-q"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out) and (out / "metrics.json").is_file()


def _steady(log: str) -> list[dict]:
    """log.jsonl's lines without what the clock sets."""
    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "patches_per_s")}
            for line in log.splitlines()]


@pytest.mark.parametrize("cut", ["an epoch line before its checkpoint", "the kept epoch's line",
                                 "the early stop"])
def test_a_resumed_run_logs_every_line_once_and_counts_all_its_seconds(tiny, tmp_path, cut):
    """The checkpoint was written before an epoch's line, and a stage's last lines before
    its last checkpoint: a Ctrl-C between them lost the line, or wrote it twice on
    resuming. The log now leads and a resumed run cuts it back to the checkpoint's."""
    from oneclass import recipe as recipes
    from oneclass.data.store import PatchStore
    from oneclass.training import train_run

    config = recipes.load(tiny["recipe"], ["train.epochs=6", "train.keep=best", "train.early_stopping=2",
                                           "method.deep-sad.pretrain_epochs=2"])
    store = PatchStore.open(tiny["store"])
    whole = train_run(config, tmp_path / "whole", store=store)
    expected = _steady((whole / "log.jsonl").read_text())
    at = {"an epoch line before its checkpoint": lambda r: r.get("stage") == "train" and r.get("epoch") == 2,
          "the kept epoch's line": lambda r: "kept_epoch" in r and r.get("stage") == "train",
          "the early stop": lambda r: "early_stop" in r}[cut]
    if not any(at(r) for r in expected):
        pytest.skip(f"this run has no {cut} to cut at")  # the early stop depends on the tiny set

    def interrupt(record):
        if at(record):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(config, tmp_path / "cut", store=store, report=interrupt)
    spent = torch.load(tmp_path / "cut.partial/checkpoint.pt", weights_only=False)["seconds"]
    resumed = train_run(config, tmp_path / "cut", store=store, resume=True)
    assert _steady((resumed / "log.jsonl").read_text()) == expected
    assert (resumed / "scores/test.csv").read_text() == (whole / "scores/test.csv").read_text()
    assert json.loads((resumed / "metrics.json").read_text())["train"]["seconds"] >= round(spent, 2) > 0


def test_resuming_with_another_recipe_is_refused_naming_the_section(tiny, tmp_path):
    from oneclass import recipe as recipes
    from oneclass.data.store import PatchStore
    from oneclass.training import train_run

    config, store = recipes.load(tiny["recipe"]), PatchStore.open(tiny["store"])

    def interrupt(event):
        if event.get("event") == "batch" and event["stage"] == "train":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(config, tmp_path / "run", store=store, report=interrupt)
    other = recipes.load(tiny["recipe"], ["train.lr=0.05"])
    with pytest.raises(OneclassError, match=r"run\.partial: the recipe differs from the one the unfinished run was "
                                            r"made with \(section train\); use the same recipe, or start again "
                                            r"with --overwrite$"):
        train_run(other, tmp_path / "run", store=store, resume=True)
