#!/bin/sh
# One GPU window of issue 15's accuracy experiments (benchmarks/accuracy.py), many at once:
# the lent machines have 16 CPU cores and one GPU, and these small networks are bound by
# the cores, so 20 one-thread processes share the GPU. Seconds per run are therefore not
# speed figures. Every experiment writes its own folder under $1 (runs.csv is appended per
# finished run, so what a time limit cuts off is simply missing); $2 seconds bound it all.
#   sh benchmarks/accuracy_gpu.sh OUT SECONDS
# The data must sit at ../shared/data (nanofibre and busi) as in the recipes.
set -u
out=$1
limit=$2
mkdir -p "$out"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1 ONECLASS_CACHE="$out/cache"
gpu="--set train.device=cuda --threads 1"
# The stores first, once, so that parallel runs do not each cut them.
python3 -c "
from pathlib import Path
from oneclass import api
for recipe in ('recipes/nanofibre.yaml', 'recipes/busi.yaml'):
    config = api.load_recipe(recipe)
    config.dataset.root = str(Path(config.dataset.root).resolve())  # as accuracy.py names it
    api.patch_store(config)
"
acc() {  # name jobs args...
  name=$1 jobs=$2
  shift 2
  timeout "$limit" python3 benchmarks/accuracy.py --out "$out/$name" --jobs "$jobs" $gpu "$@" \
    >"$out/$name.log" 2>&1 &
}
nano="--datasets nanofibre --gammas 0.2 --seeds 10"
# Rows of the CPU table that predate recipe changes (benchmarks/results/accuracy/README.md).
acc nano-honest 4 $nano --protocols honest --methods deep-sad,ss-dcae,ss-vae,ss-vq-vae
acc nano-paper 4 $nano --protocols paper --methods deep-sad,ss-dcae,ss-vae,ss-vq-vae
# Stability: training seeds 0-9 on the split of seed 0, one model against a 5-member ensemble;
# and the ensemble across split seeds.
acc nano-fixed 1 $nano --protocols honest --methods c-ss-ms-gvae --set split.seed=0
acc nano-fixed-ens5 3 $nano --protocols honest --methods c-ss-ms-gvae --set split.seed=0 --set train.ensemble=5
acc nano-honest-ens5 3 $nano --protocols honest --methods c-ss-ms-gvae --set train.ensemble=5
# The ablations, reported beside the full model.
acc nano-ablations 3 $nano --protocols honest --methods gvae-a0,gvae-a1,gvae-a2,gvae-a3,gvae-a4
# BUSI with nanofibre.yaml's settings unchanged (lr, epochs, VQ steps, keep: best for the gVAE).
acc busi-nanosettings 2 --datasets busi --gammas 0.2 --seeds 10 --protocols honest \
  --set train.lr=1e-3 --set train.epochs=15 --set train.weight_decay=0.5e-6 \
  --set method.ss-vq-vae.steps=720 --set method.ss-vae.steps=720 --set method.c-ss-ms-gvae.keep=best
wait
rm -rf "$out/cache"
