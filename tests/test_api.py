"""The README's Python example, run as written (only the image path is swapped for a
real file), in a fresh interpreter."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import pytest

pytestmark = pytest.mark.slow  # trains or runs the CLI end to end

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_example_runs(tmp_path):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## From Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scan = tmp_path / "scan.png"
    Image.fromarray(np.random.default_rng(0).integers(60, 120, (256, 256), np.uint8)).save(scan)
    assert '"scan.png"' in code
    code = code.replace('"scan.png"', repr(str(scan)))
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={"ONECLASS_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    auroc = float(lines[0].split()[-1])
    assert 0.6 < auroc <= 1.0  # the demo's defects, found after five epochs
    scores = np.array(" ".join(lines[1:]).strip("[]").split(), dtype=float)  # numpy wraps long arrays
    assert len(scores) == 49 and np.isfinite(scores).all()  # 64 px patches, stride 32, on 256 px


def test_api_matches_the_cli_at_the_same_seed(tiny, tmp_path):
    """method_from_recipe + fit give the scores `oneclass train` writes."""
    from conftest import oneclass
    from oneclass import api
    from oneclass.data.store import PatchStore

    out = tmp_path / "run"
    done = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", out, "-q", "--set", "train.epochs=1")
    assert done.returncode == 0, done.stderr
    config = api.load_recipe(tiny["recipe"], ["train.epochs=1"])
    store = PatchStore.open(tiny["store"])
    sets = api.split(store, config)
    method = api.method_from_recipe(config, store)
    method.fit(sets.train, sets.val)
    written = [float(line.rsplit(",", 1)[1]) for line in (out / "scores/test.csv").read_text().splitlines()[1:]]
    assert np.allclose(method.score(sets.test), written, rtol=0, atol=1e-6)


def test_readme_first_hour_commands_run_verbatim(tmp_path):
    """The set-up's training command, then the "in the same shell" block, exactly as the
    README writes them, in a new bash whose PATH holds the installed `oneclass` (what
    activating the virtual environment does), from a checkout's root (recipes/ at hand)."""
    import os

    text = (ROOT / "README.md").read_text()
    setup = text[text.index("## Set-up"):text.index("## Extracting patches")]
    blocks = re.findall(r"```sh\n(.*?)```", setup, re.S)
    install, first_hour = blocks[0], blocks[2]
    train = install[install.index("oneclass train"):].strip()
    assert train == "oneclass train recipes/demo.yaml --out demo-run --overwrite"
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "oneclass").is_file(), "the README installs the `oneclass` script beside python"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "ONECLASS_CACHE": str(tmp_path / "cache"),
           "COLUMNS": "120", **{k: v for k, v in os.environ.items() if k.startswith("LANG") or k == "LC_ALL"}}
    script = f"set -euo pipefail\n{train}\n{first_hour}"
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "demo-run/metrics.json").is_file() and (tmp_path / "demo-run/tsne-test.png").is_file()
    header = (tmp_path / "scores.csv").read_text().splitlines()[0]
    assert header == "id,source,x,y,label,subclass,score"
    assert "AUROC" in done.stderr
