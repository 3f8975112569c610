"""oneclass sweep: a grid x seeds as run folders through submitit's local executor,
resumable by running the same command; refusals before anything is written."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from oneclass.sweep import parse_grid

from conftest import one_error_line, oneclass, sigint_as_at_a_terminal

SHORT = ["--set", "train.epochs=1", "--set", "method.deep-sad.pretrain_epochs=1"]


def test_grid_values_split_at_top_level_commas_only():
    assert parse_grid(["split.gamma=0,0.05", "method.devnet.scales=[448,224],[224]", "x.y='a,b',c"]) == {
        "split.gamma": ["0", "0.05"], "method.devnet.scales": ["[448,224]", "[224]"], "x.y": ["'a,b'", "c"]}


def test_a_two_by_two_sweep_then_the_same_command_does_nothing(tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", "recipes/demo.yaml", "--grid", "split.gamma=0,0.2", "--grid", "method.name=deep-sad,ss-dcae",
            "--out", out, *SHORT]
    env = {"ONECLASS_CACHE": str(tmp_path / "cache")}
    first = oneclass(*args, env=env, cwd=_root())
    assert first.returncode == 0, first.stderr
    folders = first.stdout.split()
    assert sorted(folders) == sorted(str(out / f"split.gamma={g},method.name={m}" / "seed-0")
                                     for g in ("0", "0.2") for m in ("deep-sad", "ss-dcae"))
    for folder in folders:
        metrics = json.loads((tmp_path / folder / "metrics.json").read_text())
        assert metrics["method"] in folder and f"gamma={metrics['gamma']:g}" in folder
    assert "test metrics" in first.stderr and "deep-sad" in first.stderr and "ss-dcae" in first.stderr
    assert all((tmp_path / f).with_name("seed-0.log").is_dir() for f in folders)  # each job's log beside it
    record = json.loads((out / "sweep.json").read_text())
    assert record["grids"] == [{"grid": {"split.gamma": ["0", "0.2"], "method.name": ["deep-sad", "ss-dcae"]},
                                "repeats": 1}]
    stamps = {f: (tmp_path / f / "metrics.json").stat().st_mtime_ns for f in folders}
    again = oneclass(*args, "-q", env=env, cwd=_root())
    assert again.returncode == 0 and sorted(again.stdout.split()) == sorted(folders)
    assert stamps == {f: (tmp_path / f / "metrics.json").stat().st_mtime_ns for f in folders}  # nothing retrained


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA for a run to fail")
def test_a_failed_run_is_named_with_its_log_and_the_others_go_on(tiny, tmp_path):
    out = tmp_path / "sweep"
    result = oneclass("sweep", tiny["recipe"], "--grid", "train.device=cpu,cuda", "--out", out, "-q",
                      "--set", "train.epochs=1")
    assert result.returncode == 10 + 1, result.stderr
    assert (out / "train.device=cpu" / "seed-0" / "metrics.json").is_file()
    assert not (out / "train.device=cuda" / "seed-0").exists()
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "oneclass: 1 of 2 runs failed:"
    assert "train.device=cuda/seed-0: " in lines[1] and "no CUDA device is available" in lines[1]
    assert f"(log {out / 'train.device=cuda' / 'seed-0.log'}" in lines[1]


def test_a_run_of_an_older_format_is_not_complete(tiny, tmp_path):
    from oneclass.sweep import Run, is_complete

    folder = tmp_path / "base" / "seed-0"
    done = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", folder, "-q", "--set", "train.epochs=1")
    assert done.returncode == 0, done.stderr
    run = Run({}, 0, folder)
    assert is_complete(run)
    env = json.loads((folder / "env.json").read_text())
    (folder / "env.json").write_text(json.dumps({**env, "run_format": 0}))
    assert not is_complete(run)  # trained again, not skipped into an evaluate that refuses it


@pytest.mark.parametrize("args, expect", [
    (["--grid", "split.gama=0,0.2"], "--grid split.gama='0': split.gama: unknown key (did you mean 'split.gamma'?)"),
    (["--grid", "split.gamma=0,,0.2"], "--grid 'split.gamma=0,,0.2': an empty value"),
    (["--grid", "split.gamma="], "--grid 'split.gamma=': an empty value"),
    (["--grid", "split.gamma"], "--grid 'split.gamma': expected section.key=value1,value2,..."),
    (["--grid", "split.gamma=0.9,0.1"], "--grid split.gamma='0.9': split.gamma: must be in [0, 0.5], got 0.9"),
    (["--grid", "seed=0,1"], "--grid seed: seeds are --seed (the first) and --repeats (how many)"),
    (["--grid", "split.gamma=0", "--grid", "split.gamma=0.1"], "--grid split.gamma: given twice"),
    (["--grid", "split.gamma=0.1,0.2, 0.1"], "--grid split.gamma: 0.1 given twice (one run folder per value)"),
    (["--executor", "pbs"], "--executor: expected local or slurm, got 'pbs'"),
    (["--slurm", "partitoin=gpu"], "--slurm partitoin: unknown; expected one of: partition, time"),
    (["--slurm", "partition"], "--slurm 'partition': expected key=value"),
    (["--slurm", "time=1h"], "--slurm time=1h: expected minutes or [days-]hours:minutes[:seconds]"),
    (["--set", "train.lr=0.5", "--grid", "train.lr=0.001,0.01"],
     "--grid train.lr: also set by --set 'train.lr=0.5'; drop one"),
    (["--set", "method.deep-sad.rep_dim=8", "--grid", "method.rep_dim=4,16"],
     "--grid method.rep_dim: also set by --set 'method.deep-sad.rep_dim=8'; drop one"),
    (["--grid", "train.lr=0.001,1e-3"], "--grid train.lr: 0.001, 1e-3 are one value"),
    (["--grid", "method.rep_dim=4,16", "--grid", "method.deep-sad.rep_dim=8,32"],
     "--grid method.rep_dim: names the setting method.deep-sad.rep_dim names too; give one"),
])
def test_bad_sweeps_are_one_line_and_write_nothing(tmp_path, args, expect):
    out = tmp_path / "sweep"
    result = oneclass("sweep", "recipes/demo.yaml", "--out", out, *args, cwd=_root())
    one_error_line(result, 2, expect)
    assert not out.exists()


def _slurm_reachable() -> bool:
    import subprocess

    if shutil.which("sbatch") is None:
        return False
    return subprocess.run(["squeue", "--noheader"], capture_output=True).returncode == 0


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="sbatch is on PATH here")
def test_slurm_where_there_is_none_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "sweep"
    result = oneclass("sweep", "recipes/demo.yaml", "--grid", "split.gamma=0,0.2", "--out", out,
                      "--executor", "slurm", cwd=_root())
    one_error_line(result, 2, "--executor slurm: Slurm is not reachable from here (no sbatch on PATH)")
    assert not out.exists()


def test_a_sweep_folder_of_another_recipe_or_not_a_sweep_is_refused(tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"recipe": "recipes/other.yaml", "recipe_hash": "0123456789abcdef",
                                                "grids": []}))
    result = oneclass("sweep", "recipes/demo.yaml", "--grid", "split.gamma=0,0.2", "--out", out, cwd=_root())
    line = one_error_line(result, 2, f"{out}: holds a sweep of another recipe (hash 0123456789abcdef, "
                                     "recipes/other.yaml); this one's hash is ")
    assert line.endswith(": choose another --out")
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("not a sweep")
    result = oneclass("sweep", "recipes/demo.yaml", "--grid", "split.gamma=0,0.2", "--out", other, cwd=_root())
    one_error_line(result, 2, f"{other}: not empty and not a sweep folder (no sweep.json)")
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


@pytest.mark.skipif(not _slurm_reachable(), reason="no Slurm here (sbatch not on PATH or squeue not answering; "
                                                   "benchmarks/slurm_local.sh starts one)")
def test_a_sweep_through_a_real_slurm(tmp_path):
    out = tmp_path / "sweep"
    result = oneclass("sweep", "recipes/demo.yaml", "--grid", "split.gamma=0,0.2", "--out", out,
                      "--executor", "slurm", "--slurm", "time=20", *SHORT, cwd=_root())
    assert result.returncode == 0, result.stderr
    folders = result.stdout.split()
    assert len(folders) == 2 and "test metrics" in result.stderr
    for folder in folders:  # the task's log linked beside its run, as a local run's is
        assert any((out / folder).with_name("seed-0.log").iterdir())


def _root():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]


def test_ctrl_c_stops_the_runs_keeping_checkpoints_and_the_same_command_goes_on(tmp_path):
    import glob
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "oneclass", "sweep", "recipes/demo.yaml", "--grid", "split.gamma=0,0.2",
               "--out", str(out), "--set", "train.epochs=2", "--set", "method.deep-sad.pretrain_epochs=3"]
    env = {**os.environ, "ONECLASS_CACHE": str(tmp_path / "cache")}
    sweep = subprocess.Popen(command, cwd=_root(), env=env, start_new_session=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, preexec_fn=sigint_as_at_a_terminal)
    deadline = time.monotonic() + 240
    while not glob.glob(str(out / "*" / "seed-0.partial" / "checkpoint.pt")) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(sweep.pid, signal.SIGINT)  # Ctrl-C reaches the terminal's whole process group
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("oneclass: interrupted; the runs in progress were stopped")
    assert (out / "split.gamma=0" / "seed-0.partial" / "checkpoint.pt").is_file()
    again = subprocess.run([*command, "-q"], cwd=_root(), env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert len(again.stdout.split()) == 2
    epochs = [json.loads(line) for line in (out / "split.gamma=0" / "seed-0" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in epochs if r.get("stage") == "pretrain" and "loss" in r] == [1, 2, 3]  # resumed, not redone


def test_slurm_time_is_read_in_each_of_slurms_forms():
    from oneclass.sweep import slurm_parameters

    forms = {"90": 90, "1:30:00": 90, "45:30": 46, "2-00": 2880, "1-02:03": 1563, "1-00:00:01": 1441}
    assert {form: slurm_parameters({"time": form})["timeout_min"] for form in forms} == forms


def test_a_second_sweep_on_a_running_sweeps_folder_is_refused(tmp_path):
    """It would take the first's unfinished runs for its own to replace, deleting the
    folders the first is writing into."""
    import fcntl

    from oneclass.errors import OneclassError
    from oneclass.sweep import LOCK_FILE, plan, sweep, write_record

    recipe, out = _root() / "recipes/demo.yaml", tmp_path / "sweep"
    _, digest = plan(recipe, [], {}, 1, out)
    write_record(out, recipe, digest, {}, 1)
    with open(out / LOCK_FILE, "a") as held:  # the first sweep, running
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(OneclassError, match=r"sweep: another sweep is running in it; wait for it to end"):
            sweep(recipe, [], [], 1, out)
    assert not (out / "base").exists()  # nothing started


def test_more_local_jobs_than_gpus_are_refused(tmp_path, monkeypatch):
    """A job left without a GPU trained on the CPU, with every core, without a word."""
    from oneclass import sweep as sweeps
    from oneclass.errors import OneclassError

    monkeypatch.setattr(sweeps, "gpu_count", lambda: 2)
    with pytest.raises(OneclassError, match=r"^--jobs 3: this machine has 2 GPU\(s\), one a job; give at most 2"):
        sweeps.sweep(_root() / "recipes/demo.yaml", [], [], 1, tmp_path / "sweep", jobs=3)
    assert not (tmp_path / "sweep").exists()
