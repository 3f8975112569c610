"""Peak memory of whole-slide extraction: it must stay bounded whatever the slide size.

    python benchmarks/wsi_memory.py [--side 20000]

Writes a synthetic pyramidal TIFF of side x side pixels (RGB, tiled, zlib), then runs
`oneclass extract-patches -d camelyon16` on it at level 0 as a separate process and
prints its wall time, patch count and peak resident memory beside the slide's raw size.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from oneclass.data.datasets.synthetic import write_synthetic_slide


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=20000)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "slides"
        root.mkdir()
        start = time.perf_counter()
        write_synthetic_slide(root / "tumor_001.tif", args.side, args.side, seed=1)
        written = time.perf_counter() - start
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "oneclass", "extract-patches", "-d", "camelyon16",
                        "--root", str(root), "--size", str(args.size), "--resize", "64",
                        "--out", str(Path(tmp) / "store"), "-q"], check=True, capture_output=True)
        wall = time.perf_counter() - start
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        count = sum(1 for _ in open(Path(tmp) / "store" / "index.csv")) - 1
    raw_mib = args.side * args.side * 3 / 2**20
    print(f"slide {args.side}x{args.side} RGB ({raw_mib:.0f} MiB raw at level 0), written in {written:.1f} s")
    print(f"extract-patches size {args.size} -> 64: {count} tissue patches in {wall:.1f} s "
          f"({count / wall:.0f} patches/s), peak RSS {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
