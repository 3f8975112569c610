"""Training throughput per method family: the trainer against a bare torch loop, and with
against without each of train.prefetch (on by default on CUDA only), train.channels_last,
train.compile (and train.amp on CUDA).

    python benchmarks/train.py [--recipe recipes/nanofibre.yaml] [--set KEY=VALUE] [--device cpu|cuda]
        [--families deep-sad,c-ss-ms-gvae,...] [--options default,channels_last,...]
        [--steps 30] [--warmup 3] [--repeats 2] [--threads 1]

Every (family, option) is measured in a fresh process (peak memory is the process's, a
compiled graph is not reused), ``--repeats`` times in turn, the best kept. The method
trains on the recipe's split as ``oneclass train`` does, but each stage stops after one
step except the family's main one (Deep SAD's one-class stage, the gVAE's semi-supervised
stage, ...), which runs ``--warmup`` steps and then ``--steps`` timed ones:

- samples/s: a batch over the median step time of the timed steps, from the trainer's
  own per-step events (reading, conversion, augmentation, loss, backward, optimizer
  step): the steady state;
- compile s: the main stage's time beyond its steady rate (its first step, and the
  recompilation a batch of another size causes) with train.compile, less the same
  without: graph capture and code generation, apart from the steady-state rate
  (Inductor's on-disk caches are turned off, so it is a first compilation's time);
- score change: after the same steps, the largest difference of a validation item's
  score from the default's, over the default scores' range (1st to 99th percentile):
  prefetching must give 0; channels-last and compile change the float rounding, which
  the training steps carry on (and a sampling model like the gVAE amplifies), so the
  validation AUROC after those steps is given beside it;
- peak memory: the process's peak RSS on the CPU, torch's peak allocation on CUDA;
- the ceiling (default option only): the same loss function, optimizer and batch size in a
  bare loop over the training items preloaded on the device as one float tensor (no
  reading, no conversion, no augmentation, no logging).

Ratios are measured in one run of this script, on one machine: the table says which.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# family representative -> (its main stage, recipe overrides that make it train on the recipe's patches)
FAMILIES = {
    "deep-sad": ("train", ["method.deep-sad.pretrain_epochs=1"]),
    "c-ss-ms-gvae": ("semi", []),
    "ss-vq-vae": ("train", []),
    "ss-dcae": ("train", []),
    "binclass": ("train", []),
    "rsc-vae-o": ("train", []),
    # random backbone weights (no download here); the patches scored at their own size
    "devnet": ("train", ["method.devnet.weights=none", "method.devnet.scales=[32]"]),
    "dpa": ("train", ["method.dpa.weights=none", "method.dpa.progressive=false"]),
}
OPTIONS = {
    "default": [],
    "prefetch": ["train.prefetch=true"],  # the default on CUDA ("auto"); off on the CPU
    "no prefetch": ["train.prefetch=false"],
    "channels_last": ["train.channels_last=true"],
    "compile": ["train.compile=true"],
    "amp": ["train.amp=true"],  # CUDA only
}


class _Done(Exception):
    """Raised once the main stage is measured: the later stages are not."""


def child(recipe: str, sets: list[str], family: str, option: str, device: str, steps: int, warmup: int,
          threads: int, bare: bool) -> dict:
    """One measurement, in this process."""
    import torch

    from oneclass import api
    from oneclass.engine import Trainer

    torch.set_num_threads(threads)
    main_stage, overrides = FAMILIES[family]
    config = api.load_recipe(recipe, [*sets, f"method.name={family}", f"train.device={device}", *overrides,
                                      *OPTIONS[option]])
    store = api.patch_store(config)
    sets = api.split(store, config)
    stamps: list[float] = []
    captured: dict = {}
    on_cuda = device.startswith("cuda")

    def sync() -> float:
        if on_cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def report(event: dict) -> None:
        if event.get("event") == "batch" and event["stage"] == main_stage:
            stamps.append(sync())

    class Bench(Trainer):
        def stage(self, spec, data, loss_fn, *args, **kwargs):
            main = spec.name == main_stage
            spec.steps, spec.epochs = (warmup + steps if main else 1), 1
            if main:
                captured.update(spec=spec, data=data, loss_fn=loss_fn)
                if on_cuda:
                    torch.cuda.reset_peak_memory_stats()
                stamps.append(sync())
            super().stage(spec, data, loss_fn, *args, **kwargs)
            if main:
                raise _Done

    method = api.method_from_recipe(config, store)
    method.trainer = Bench(config.train, config.seed, report=report)
    try:
        method.fit(sets.train, None)
        raise SystemExit(f"{family}: no stage named {main_stage!r} ran")
    except _Done:
        pass
    batch = captured["spec"].batch_size or config.train.batch_size
    step_times = np.diff(stamps)
    steady = float(np.median(step_times[warmup:]))
    result = {"family": family, "option": option, "batch": batch,
              "samples_per_s": batch / steady,  # steady state: a median step
              "mean_samples_per_s": batch * steps / float(stamps[-1] - stamps[warmup]),
              # beyond the steady rate, over the whole stage: the first step, recompilations
              "overhead_s": float(step_times.sum()) - steady * len(step_times),
              "peak_mib": (torch.cuda.max_memory_allocated() if on_cuda
                           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20,
              "val_scores": method.score(sets.val).tolist()}
    result["val_auroc"] = api.auroc(sets.val, np.asarray(result["val_scores"]))
    if bare:
        result["bare_samples_per_s"] = bare_loop(method, captured, batch, steps, warmup, sync)
    return result


def bare_loop(method, captured: dict, batch: int, steps: int, warmup: int, sync) -> float:
    """The ceiling: the stage's loss and optimizer over preloaded device tensors."""
    import torch

    spec, data, loss_fn = captured["spec"], captured["data"], captured["loss_fn"]
    pixels = torch.from_numpy(np.asarray(data.images[data.rows])).to(method.device).float().div_(255)
    extra = {k: torch.from_numpy(np.asarray(getattr(data, k))).to(method.device)
             for k in ("roles", "labels") if getattr(data, k) is not None}
    order = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(0)).to(method.device)
    pixels, extra = pixels[order], {k: v[order] for k, v in extra.items()}  # batches are then views
    optimizer = spec.make_optimizer()
    for name, module in method.modules.items():
        module.train(name not in spec.frozen)
    stamps = []
    for step in range(warmup + steps):
        stamps.append(sync())
        start = (step * batch) % max(len(pixels) - batch, 1)
        loss = loss_fn({"x": pixels[start:start + batch], **{k: v[start:start + batch] for k, v in extra.items()}})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    stamps.append(sync())
    return batch / float(np.median(np.diff(stamps)[warmup:]))  # a median step, as for the trainer


def measure(args, family: str, option: str, bare: bool) -> dict:
    command = [sys.executable, __file__, "--child", family, option, "--recipe", args.recipe,
               "--device", args.device, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--threads", str(args.threads)] + (["--bare"] if bare else [])
    command += [x for key in args.set for x in ("--set", key)]
    # Inductor's on-disk caches off: compile s is the time a first compilation takes
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no message)"]
        return {"family": family, "option": option, "error": tail[0]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def compile_seconds(best: dict[str, dict]) -> str:
    with_, without = best.get("compile", {}), best.get("default", {})
    if "overhead_s" not in with_ or "overhead_s" not in without:
        return "-"
    return f"{with_['overhead_s'] - without['overhead_s']:.1f}"


def score_change(best: dict[str, dict], option: str) -> str:
    if "val_scores" not in best.get(option, {}) or "val_scores" not in best.get("default", {}):
        return "-"
    got, base = np.asarray(best[option]["val_scores"]), np.asarray(best["default"]["val_scores"])
    spread = np.percentile(base, 99) - np.percentile(base, 1)
    return f"{np.abs(got - base).max() / spread:.1e}" if spread > 0 else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes/nanofibre.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe override, as for oneclass train (repeatable)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--options", default=None,
                        help="comma-separated; default: all but amp on the CPU, all on CUDA")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: per core)")
    parser.add_argument("--child", nargs=2, metavar=("FAMILY", "OPTION"), help=argparse.SUPPRESS)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.recipe, args.set, *args.child, args.device, args.steps, args.warmup, args.threads,
                               args.bare)))
        return
    import torch

    cuda = args.device.startswith("cuda")
    # each option against the default: prefetch is on by default on CUDA, off on the CPU
    skip = {"prefetch"} if cuda else {"amp", "no prefetch"}
    options = args.options.split(",") if args.options else [o for o in OPTIONS if o not in skip]
    where = torch.cuda.get_device_name(args.device) if cuda else (platform.processor() or platform.machine())
    print(f"machine: {where}, {os.cpu_count()} cores; torch {torch.__version__}, {args.threads} thread(s); "
          f"{args.steps} timed steps after {args.warmup}; best of {args.repeats}; recipe {args.recipe}",
          flush=True)
    lines = ["| family | batch | " + " | ".join(f"{o} samples/s" for o in options)
             + " | " + " | ".join(f"{o} / default" for o in options if o != "default")
             + " | default / bare loop | bare loop samples/s | compile s | peak MiB (" + " / ".join(options)
             + ") | score change (" + " / ".join(o for o in options if o != "default") + ") | val AUROC ("
             + " / ".join(options) + ") |",
             "|---" * (2 * len(options) + 7) + "|"]
    for family in args.families.split(","):
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            for option in options:
                got = measure(args, family, option, bare=option == "default")
                if "error" in got:
                    print(f"{family} / {option}: {got['error']}", flush=True)
                    best.setdefault(option, got)
                    continue
                if "samples_per_s" not in best.get(option, {}) or got["samples_per_s"] > best[option]["samples_per_s"]:
                    best[option] = got
        rate = {o: best[o].get("samples_per_s") for o in options}
        base = rate.get("default")
        fmt = lambda v: f"{v:.0f}" if v else "failed"  # noqa: E731
        ratio = lambda a, b: f"{a / b:.2f}" if a and b else "-"  # noqa: E731
        bare = best.get("default", {}).get("bare_samples_per_s")
        batch = next((b["batch"] for b in best.values() if "batch" in b), "-")
        lines.append(f"| {family} | {batch} | " + " | ".join(fmt(rate[o]) for o in options) + " | "
                     + " | ".join(ratio(rate[o], base) for o in options if o != "default")
                     + f" | {ratio(base, bare)} | {fmt(bare)} | "
                     + f"{compile_seconds(best)} | "
                     + " / ".join(f"{best[o]['peak_mib']:.0f}" if "peak_mib" in best[o] else "-" for o in options)
                     + " | " + " / ".join(score_change(best, o) for o in options if o != "default")
                     + " | " + " / ".join(f"{best[o]['val_auroc']:.3f}" if "val_auroc" in best[o] else "-"
                                          for o in options) + " |")
        print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
