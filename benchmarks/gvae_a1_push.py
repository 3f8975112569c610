"""Why ablation A1 (gvae-a1) is inverted on some nanofibre splits: its semi-supervised
stage pushes each labelled anomaly's loss above the normals' by a margin in latent space
(margin x D = 0.5 x 128 = 64 nats) and in image space (margin x P = 0.5 x 1024 = 512
nats), and A1 is scored by the latent norm alone. This trains A1 as the recipe does and
again with one of the two pushes left out, on the same seeds, and prints test and
validation AUROC per seed.

    python benchmarks/gvae_a1_push.py --seeds 1,6,7,8,9 [--protocol paper] [--gamma 0.2]
        [--variants both,no-image-push,no-latent-push]

A diagnosis, not a method: the pushes are switched off by wrapping
``oneclass.methods.gvae.hinge_push`` and telling the two calls apart by their floors.
"""

from __future__ import annotations

import argparse
import sys
import time

from accuracy import PROTOCOLS, RECIPES, ROOT  # beside this script: the same recipe and splits


def run(variant: str, seed: int, protocol: str, gamma: float) -> tuple[float, float, float]:
    import torch

    from oneclass import api
    from oneclass.methods import gvae

    torch.set_num_threads(1)
    config = api.load_recipe(ROOT / RECIPES["nanofibre"], [PROTOCOLS[protocol], f"split.gamma={gamma}",
                                                              "method.name=gvae-a1", f"seed={seed}"])
    config.dataset.root = str((ROOT / config.dataset.root).resolve())
    store = api.patch_store(config)
    sets = api.split(store, config)
    model = api.method_from_recipe(config, store)
    image_floor = model.params.margin * int(store.images[0].size)
    latent_floor = model.params.margin * model.latent_dims
    assert image_floor != latent_floor, "the two pushes cannot be told apart by their floors"
    dropped = {"both": None, "no-image-push": image_floor, "no-latent-push": latent_floor}[variant]
    original = gvae.hinge_push

    def push(values, anomalous, floor):
        return values.new_zeros(len(values)) if floor == dropped else original(values, anomalous, floor)

    gvae.hinge_push = push
    began = time.perf_counter()
    try:
        model.fit(sets.train, sets.val)
    finally:
        gvae.hinge_push = original
    return (api.auroc(sets.test, model.score(sets.test)), api.auroc(sets.val, model.score(sets.val)),
            time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,6,7,8,9")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="paper")
    parser.add_argument("--gamma", type=float, default=0.2)
    parser.add_argument("--variants", default="both,no-image-push,no-latent-push")
    args = parser.parse_args()
    variants = args.variants.split(",")
    if unknown := set(variants) - {"both", "no-image-push", "no-latent-push"}:
        sys.exit(f"gvae_a1_push.py: --variants: unknown {sorted(unknown)}")
    print(f"gvae-a1, nanofibre, {args.protocol} split, gamma {args.gamma}: test AUROC (validation AUROC)")
    print("| seed | " + " | ".join(variants) + " |")
    print("|---|" + "---|" * len(variants))
    for seed in map(int, args.seeds.split(",")):
        cells = [run(v, seed, args.protocol, args.gamma) for v in variants]
        print(f"| {seed} | " + " | ".join(f"{t:.3f} ({v:.3f})" for t, v, _ in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
