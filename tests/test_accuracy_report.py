"""benchmarks/accuracy.py's report over several results folders (--include): which run
fills which cell, and what the table and merged.csv say about where runs came from."""

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy.py"
spec = importlib.util.spec_from_file_location("accuracy", SCRIPT)
accuracy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(accuracy)

HEADER = "dataset,protocol,gamma,seed,method,auroc,val_auroc,seconds\n"


def folder(root: Path, name: str, lines: list[str]) -> Path:
    (root / name).mkdir()
    path = root / name / "runs.csv"
    path.write_text(HEADER + "".join(line + "\n" for line in lines))
    return path


def test_a_cell_comes_from_the_folder_itself_first_then_the_first_included_file(tmp_path):
    own = folder(tmp_path, "cpu", ["nanofibre,honest,0.2,0,devnet,0.80,0.7,30"])
    gpu = folder(tmp_path, "gpu", ["nanofibre,honest,0.2,0,devnet,0.99,0.7,9",  # own has it: dropped
                                   "nanofibre,honest,0.2,1,devnet,0.70,0.7,9",
                                   "nanofibre,honest,0.2,0,ss-vae,0.60,0.7,9"])
    later = folder(tmp_path, "later", ["nanofibre,honest,0.2,1,devnet,0.10,0.7,9",  # gpu gave it first
                                       "busi,honest,0,0,ss-vae,0.50,0.7,9"])
    rows = accuracy.with_included(accuracy.read_rows(own), "cpu", [gpu, later])
    got = {(r["dataset"], r["seed"], r["method"]): (r["auroc"], r["source"]) for r in rows}
    assert got == {("nanofibre", 0, "devnet"): (0.80, "cpu"), ("nanofibre", 1, "devnet"): (0.70, "gpu"),
                   ("nanofibre", 0, "ss-vae"): (0.60, "gpu"), ("busi", 0, "ss-vae"): (0.50, "later")}


def test_report_only_with_includes_writes_the_merged_runs_and_names_their_folders(tmp_path):
    gvae = [f"nanofibre,honest,0.2,{s},c-ss-ms-gvae,{0.70 + 0.01 * s:.2f},0.7,100" for s in range(5)]
    sad = [f"nanofibre,honest,0.2,{s},deep-sad,{0.60 + 0.01 * s:.2f},0.7,50" for s in range(3)]
    sad_gpu = [f"nanofibre,honest,0.2,{s},deep-sad,{0.50 + 0.01 * s:.2f},0.7,10" for s in range(5)]
    cpu = folder(tmp_path, "cpu", gvae + sad)
    gpu = folder(tmp_path, "gpu", sad_gpu)
    out = tmp_path / "grid"
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--report-only",
                    "--include", str(cpu), "--include", str(gpu)], check=True, capture_output=True)
    with open(out / "merged.csv", newline="") as fh:
        merged = list(csv.DictReader(fh))
    assert len(merged) == 10  # 5 gvae + deep-sad seeds 0-2 (cpu) + 3-4 (gpu)
    assert sorted((r["seed"], r["source"]) for r in merged if r["method"] == "deep-sad") == [
        ("0", "cpu"), ("1", "cpu"), ("2", "cpu"), ("3", "gpu"), ("4", "gpu")]
    table = (out / "table.md").read_text()
    assert table.splitlines()[0].endswith("| p vs c-ss-ms-gvae (pairs) | runs from |")  # no seconds
    # deep-sad: 0.60, 0.61, 0.62, 0.53, 0.54 -> mean 0.580; five pairs with the gVAE, all lower
    assert "| deep-sad | 0.580 ± 0.042 (5) | 0.0625 (5) |" in table
    assert table.rstrip().splitlines()[-1].endswith("| cpu, gpu |")
    assert "--include" in (out / "command.txt").read_text()
    assert (out / "auroc-vs-gamma.png").is_file()


def test_a_missing_included_file_fails_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "grid"), "--report-only",
                           "--include", str(tmp_path / "absent" / "runs.csv")], capture_output=True, text=True)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [f"accuracy.py: --include {tmp_path / 'absent' / 'runs.csv'}: "
                                                "no such file"]


def test_seeds_are_a_count_or_an_inclusive_range_and_nonsense_fails_in_one_line(tmp_path):
    assert list(accuracy.seed_range("3")) == [0, 1, 2]
    assert list(accuracy.seed_range("7-9")) == [7, 8, 9]
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "grid"), "--seeds", "9-7"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and not (tmp_path / "grid").exists()
    assert done.stderr.strip().splitlines()[-1].endswith("argument --seeds: '9-7': give a count N or a range A-B of seeds")


def test_failed_runs_are_each_said_the_others_go_on_and_the_exit_is_non_zero(tmp_path):
    """Two cells that fail in their workers (an unknown method, refused when the recipe is
    read, before any data): both named, no row kept, exit non-zero; a traceback from the
    first would have hidden the second and every run finished after it."""
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out"), "--datasets", "nanofibre",
                           "--protocols", "honest", "--gammas", "0.2", "--seeds", "2", "--methods", "no-such-method",
                           "--jobs", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    for seed in (0, 1):
        assert any(line.startswith(f"('nanofibre', 'honest', 0.2, {seed}, 'no-such-method'): failed: ")
                   for line in lines), done.stderr
    assert lines[-1].startswith("accuracy.py: 2 of 2 runs failed")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "runs.csv").exists()  # no row
