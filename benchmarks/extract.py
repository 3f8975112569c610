"""Patch-extraction throughput on the shared nanofibre images, as whole processes.

    python benchmarks/extract.py [--root ../shared/data/nanofibre] [--repeats 3]

Prints patches/s of `oneclass extract-patches` (size 128, stride 16, resize 32), of a
straightforward per-patch loop (crop, mask mean, Pillow box resize, one patch at a time)
and the raw decode time of the same files. Each is timed as a fresh process, start-up
included, because that is what a batch job pays: best of --repeats, and the range.
Start-up is shown twice: `oneclass --help`, and a process that imports every module the
extraction imported (read from its `python -X importtime`) and does nothing else.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZE, STRIDE, RESIZE, FRAC = 128, 16, 32, 0.05

DECODE = """
import sys, numpy as np
from pathlib import Path
from PIL import Image
root = Path(sys.argv[1])
for p in sorted(root.glob('Normal/*.tif')) + sorted(root.glob('Anomalous/images/*.tif')):
    np.asarray(Image.open(p))
for p in sorted(root.glob('Anomalous/gt/*.png')):
    np.asarray(Image.open(p))
"""

LOOP = """
import sys, numpy as np
from pathlib import Path
from PIL import Image
root, size, stride, out, frac = Path(sys.argv[1]), *map(int, sys.argv[2:5]), float(sys.argv[5])
patches, labels = [], []
items = [(p, None) for p in sorted(root.glob('Normal/*.tif'))]
items += [(p, root / 'Anomalous/gt' / (p.stem + '_gt.png')) for p in sorted(root.glob('Anomalous/images/*.tif'))]
for image_path, mask_path in items:
    image = np.asarray(Image.open(image_path))
    mask = np.asarray(Image.open(mask_path)).astype(bool) if mask_path else np.zeros(image.shape, bool)
    for y in range(0, image.shape[0] - size + 1, stride):
        for x in range(0, image.shape[1] - size + 1, stride):
            crop = image[y:y + size, x:x + size]
            labels.append(mask[y:y + size, x:x + size].mean() >= frac)
            patches.append(np.asarray(Image.fromarray(crop).resize((out, out), Image.BOX)))
print(len(patches), sum(labels))
"""


def timed(cmd: list[str], repeats: int, fresh: Path | None = None) -> tuple[list[float], str]:
    """Wall times of a whole process, sorted; ``fresh`` is removed before each run."""
    times, output = [], ""
    for _ in range(repeats):
        if fresh is not None and fresh.exists():
            shutil.rmtree(fresh)
        start = time.perf_counter()
        result = subprocess.run(cmd, capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - start)
        output = result.stdout
    return sorted(times), output


def imported(cmd: list[str], fresh: Path) -> list[str]:
    """The modules ``cmd`` (a ``python -m ...`` command) imports directly, in order."""
    if fresh.exists():
        shutil.rmtree(fresh)
    err = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], capture_output=True, text=True,
                         check=True).stderr
    return re.findall(r"^import time: +\d+ \| +\d+ \| (\S+)$", err, re.M)  # indented: imported by these


def row(name: str, times: list[float], count: int | None = None, note: str = "") -> str:
    rate = f"{count / times[0]:12.0f}" if count else " " * 12
    spread = f"{times[0]:.2f}-{times[-1]:.2f}"
    return f"{name:28}{times[0]:10.2f}{rate}{spread:>13}   {note}".rstrip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_root = Path(__file__).resolve().parents[2] / "shared" / "data" / "nanofibre"
    parser.add_argument("--root", type=Path, default=default_root)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if not args.root.is_dir():
        sys.exit(f"{args.root}: nanofibre data not found (pass --root)")
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        command = [py, "-m", "oneclass", "extract-patches", "-d", "nanofibre", "--root", str(args.root),
                   "--size", str(SIZE), "--stride", str(STRIDE), "--resize", str(RESIZE),
                   "--mask-frac", str(FRAC), "--workers", str(args.workers), "--out", str(store), "-q"]
        ours, _ = timed(command, args.repeats, fresh=store)
        count = sum(1 for _ in open(store / "index.csv")) - 1
        modules = imported(command, store)
    loop, loop_out = timed([py, "-c", LOOP, str(args.root), str(SIZE), str(STRIDE), str(RESIZE), str(FRAC)],
                           args.repeats)
    loop_count = int(loop_out.split()[0])
    decode, _ = timed([py, "-c", DECODE, str(args.root)], args.repeats)
    startup, _ = timed([py, "-m", "oneclass", "--help"], args.repeats)
    imports, _ = timed([py, "-c", "import " + ", ".join(modules)], args.repeats)
    assert loop_count == count, f"the two extractors disagree: {count} vs {loop_count}"
    print(f"nanofibre: {count} patches (size {SIZE}, stride {STRIDE}, resize {RESIZE}), best of {args.repeats}")
    print(f"{'':28}{'seconds':>10}{'patches/s':>12}{'range':>13}")
    print(row("oneclass extract-patches", ours, count, f"(workers={args.workers})"))
    print(row("per-patch loop", loop, count))
    print(row("decode only (same files)", decode))
    print(row("oneclass --help start-up", startup))
    print(row("its imports alone", imports, note=f"({len(modules)} modules)"))
    print(f"speed-up over the per-patch loop: {loop[0] / ours[0]:.1f}x "
          f"(start-up, imports alone: {imports[0] / ours[0]:.0%} of ours)")


if __name__ == "__main__":
    main()
