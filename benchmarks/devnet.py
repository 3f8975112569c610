"""DevNet's speed and accuracy, side by side.

1. Speed: training images/s (a whole training step: balanced batch, rotation, forward at
   every scale, deviation loss, backward, clipping, Adam) and scoring images/s of devnet
   with ResNet-18 at 224 px, 448 px and the paper's two scales (448 + 224), on the chosen
   device. The weights are random (``weights: none``): speed does not depend on them and
   nothing is downloaded.
2. Accuracy: test AUROC of devnet and deep-sad on the same split of the shared data,
   seed by seed (each seed its own split and initialisation), as mean +- sample std (n).
   The default is the nanofibre recipe, cut as 128 px patches resized to 64, with ten
   labelled anomalous patches (DevNet's few-shot protocol) for both methods.

    python benchmarks/devnet.py                         # CPU-sized: a few minutes on two cores
    python benchmarks/devnet.py --device cuda --speed-batch 48 --speed-steps 10 --score-items 512 \\
        --seeds 5 --devnet-steps 1000 --devnet-batch 48 --weights imagenet
    python benchmarks/devnet.py --recipe recipes/busi.yaml --set patches.whole_image=true \\
        --set patches.size=null --set patches.stride=null --set patches.resize=64   # whole images
    python benchmarks/devnet.py --skip-speed --set method.devnet.lr=1e-3        # any recipe key

``--set`` overrides go to both methods' recipe (``method.devnet.*`` reaches devnet only).
Stores are cached as ``oneclass train`` caches them (``ONECLASS_CACHE``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the nanofibre recipe made few-shot and CPU-sized: 400 training patches (ten of them
# labelled anomalies), Deep SAD for 5 + 10 epochs instead of 10 + 15
ACCURACY_DEFAULTS = ["patches.resize=64", "split.gamma=0", "split.labeled_anomalies=10", "split.train_size=400",
                     "train.epochs=10", "method.deep-sad.pretrain_epochs=5"]


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def speed(device_name: str, batch: int, steps: int, score_items: int) -> list[tuple[str, float, float]]:
    """(label, training images/s, scoring images/s) at 224, 448 and 448+224 px."""
    from oneclass.data.items import LABELED_ANOMALY, UNLABELED, PatchData
    from oneclass.engine import Trainer, resolve_device
    from oneclass.methods.base import build
    from oneclass.methods.devnet import DevNet
    from oneclass.recipe import TrainSection

    device = resolve_device(device_name, "--device")
    rows = []
    for label, side, scales in (("224", 224, [224]), ("448", 448, [448]), ("448+224", 448, [448, 224])):
        rng = np.random.default_rng(0)
        n = max(2 * batch, score_items)
        images = rng.integers(0, 256, (n, 3, side, side), dtype=np.uint8)
        # a pass is two batches: batch/2 unlabelled items each, plus batch/2 labelled anomalies
        roles = np.full(n, -2, np.int8)
        roles[:batch] = UNLABELED
        roles[batch:batch + max(1, batch // 4)] = LABELED_ANOMALY
        keep = np.flatnonzero(roles != -2)
        train = PatchData(images, keep, roles=roles[keep])
        test = PatchData(images, np.arange(score_items))
        params = replace(DevNet.Params(), weights="none", scales=scales, batch_size=batch,
                         anomalies_per_batch=batch // 2)
        trainer = Trainer(TrainSection(device=str(device), batch_size=batch), seed=0)
        method = build(DevNet, params, (3, side, side), 0, keep_rng=False)
        method.trainer = trainer
        method.params = replace(params, steps=1)
        method.fit(train)  # warm-up: allocations, kernels
        method.params = replace(params, steps=steps)
        _sync(device)
        began = time.perf_counter()
        method.fit(train)
        _sync(device)
        train_rate = steps * batch / (time.perf_counter() - began)
        method.score(test.subset(np.arange(min(2, score_items))))  # warm-up
        _sync(device)
        began = time.perf_counter()
        method.score(test)
        _sync(device)
        score_rate = score_items / (time.perf_counter() - began)
        rows.append((label, train_rate, score_rate))
        print(f"  {label:8s} train {train_rate:8.2f} images/s   score {score_rate:8.2f} images/s", flush=True)
    return rows


def accuracy(recipe: str, overrides: list[str], seeds: int, devnet: list[str], device: str) -> dict:
    """Test AUROC per method, seed by seed, on the same split for both methods."""
    from oneclass import api

    results: dict[str, list[float]] = {"devnet": [], "deep-sad": []}
    for seed in range(seeds):
        base = [*ACCURACY_DEFAULTS, *overrides, f"seed={seed}", f"train.device={device}"]
        config = api.load_recipe(recipe, base)
        store = api.patch_store(config)
        sets = api.split(store, config)
        side = store.images.shape[-1]
        line = [f"seed {seed}: train {sets.counts['train']['total']} "
                f"({sets.counts['train']['labeled_anomaly']} labelled anomalies), "
                f"test {sets.counts['test']['normal']}+{sets.counts['test']['anomalous']}"]
        for name in results:
            extra = [f"method.name={name}"]
            if name == "devnet":
                extra += [f"method.devnet.scales=[{side}]", *devnet]
            config = api.load_recipe(recipe, [*base, *extra])
            method = api.method_from_recipe(config, store)
            began = time.perf_counter()
            method.fit(sets.train)  # no validation set: nothing here reads its per-epoch AUROC
            value = api.auroc(sets.test, method.score(sets.test))
            results[name].append(value)
            line.append(f"{name} {value:.3f} ({time.perf_counter() - began:.0f} s)")
        print("  " + ", ".join(line), flush=True)
    return results


def _summary(values: list[float]) -> str:
    spread = np.std(values, ddof=1) if len(values) > 1 else float("nan")
    return f"{np.mean(values):.3f} +- {spread:.3f} (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--speed-batch", type=int, default=None, help="training batch (default: 48 on CUDA, 8 on CPU)")
    parser.add_argument("--speed-steps", type=int, default=None, help="timed steps (default: 10 on CUDA, 2 on CPU)")
    parser.add_argument("--score-items", type=int, default=None, help="images scored (default: 256 CUDA, 16 CPU)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--recipe", default=str(ROOT / "recipes/nanofibre.yaml"))
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                        help=f"recipe override for both methods, after {' '.join(ACCURACY_DEFAULTS)}")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--devnet-steps", type=int, default=60, help="devnet optimizer steps (the paper: 1000)")
    parser.add_argument("--devnet-batch", type=int, default=32, help="devnet batch, half labelled anomalies (paper: 48)")
    parser.add_argument("--weights", default="none", help="devnet's backbone weights: none, imagenet or PATH")
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args()

    import torch

    from oneclass.engine import resolve_device
    from oneclass.errors import OneclassError

    warnings.filterwarnings("ignore", message=".*random weights")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device, "--device")
    except OneclassError as exc:
        sys.exit(f"benchmarks/devnet.py: {exc}")
    cuda = device.type == "cuda"
    batch = args.speed_batch or (48 if cuda else 8)
    steps = args.speed_steps or (10 if cuda else 2)
    items = args.score_items or (256 if cuda else 16)
    name = torch.cuda.get_device_name(device) if cuda else f"cpu, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}); torch {torch.__version__}; ONECLASS_CACHE="
          f"{os.environ.get('ONECLASS_CACHE', '(default)')}")
    if not args.skip_speed:
        print(f"speed: devnet, resnet18 (random weights), batches of {batch} = {batch // 2} unlabelled + "
              f"{batch // 2} labelled anomalies, rotate:180; {steps} timed steps, {items} images scored")
        speed(str(device), batch, steps, items)
    if not args.skip_accuracy:
        devnet = [f"method.devnet.steps={args.devnet_steps}", f"method.devnet.batch_size={args.devnet_batch}",
                  f"method.devnet.anomalies_per_batch={args.devnet_batch // 2}", f"method.devnet.weights={args.weights}"]
        print(f"accuracy: {args.recipe} with {' '.join([*ACCURACY_DEFAULTS, *args.overrides]) or 'no overrides'}; "
              f"devnet: {' '.join(d.split('.', 2)[2] for d in devnet)}; deep-sad: the recipe's settings")
        began = time.perf_counter()
        try:
            results = accuracy(args.recipe, args.overrides, args.seeds, devnet, str(device))
        except OneclassError as exc:
            sys.exit(f"benchmarks/devnet.py: {exc}")
        print(f"test AUROC over seeds 0..{args.seeds - 1} ({time.perf_counter() - began:.0f} s):")
        for method, values in results.items():
            print(f"  {method:9s} {_summary(values)}")
        diff = np.subtract(results["devnet"], results["deep-sad"])
        print(f"  devnet - deep-sad, paired by seed: {_summary(list(diff))}")


if __name__ == "__main__":
    main()
