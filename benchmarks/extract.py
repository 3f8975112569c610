"""Patch-extraction throughput on the shared nanofibre images, as whole processes.

    python benchmarks/extract.py [--root ../shared/data/nanofibre] [--repeats 3]

Prints patches/s of `oneclass extract-patches` (size 128, stride 16, resize 32), of a
straightforward per-patch loop (crop, mask mean, Pillow box resize, one patch at a time)
and the raw decode time of the same files. Each is timed as a fresh process, start-up
included, because that is what a batch job pays. Best of --repeats.
"""

from __future__ import annotations

import argparse
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


def timed(cmd: list[str], repeats: int, fresh: Path | None = None) -> tuple[float, str]:
    """Best wall time of a whole process; ``fresh`` is removed before each run."""
    best, output = float("inf"), ""
    for _ in range(repeats):
        if fresh is not None and fresh.exists():
            shutil.rmtree(fresh)
        start = time.perf_counter()
        result = subprocess.run(cmd, capture_output=True, text=True, check=True)
        best = min(best, time.perf_counter() - start)
        output = result.stdout
    return best, output


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
        ours, _ = timed([py, "-m", "oneclass", "extract-patches", "-d", "nanofibre", "--root", str(args.root),
                         "--size", str(SIZE), "--stride", str(STRIDE), "--resize", str(RESIZE),
                         "--mask-frac", str(FRAC), "--workers", str(args.workers), "--out", str(store),
                         "-q"], args.repeats, fresh=store)
        count = sum(1 for _ in open(store / "index.csv")) - 1
    loop, loop_out = timed([py, "-c", LOOP, str(args.root), str(SIZE), str(STRIDE), str(RESIZE), str(FRAC)],
                           args.repeats)
    loop_count = int(loop_out.split()[0])
    decode, _ = timed([py, "-c", DECODE, str(args.root)], args.repeats)
    startup, _ = timed([py, "-m", "oneclass", "--help"], args.repeats)
    assert loop_count == count, f"the two extractors disagree: {count} vs {loop_count}"
    print(f"nanofibre: {count} patches (size {SIZE}, stride {STRIDE}, resize {RESIZE}), best of {args.repeats}")
    print(f"{'':28}{'seconds':>10}{'patches/s':>12}")
    print(f"{'oneclass extract-patches':28}{ours:10.2f}{count / ours:12.0f}   (workers={args.workers})")
    print(f"{'per-patch loop':28}{loop:10.2f}{count / loop:12.0f}")
    print(f"{'decode only (same files)':28}{decode:10.2f}")
    print(f"{'oneclass --help start-up':28}{startup:10.2f}")
    print(f"speed-up over the per-patch loop: {loop / ours:.1f}x")


if __name__ == "__main__":
    main()
