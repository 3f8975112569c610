#!/bin/sh
# One GPU window of issue 15's accuracy experiments (benchmarks/accuracy.py), many at once:
# the lent machines have 16 CPU cores and one GPU, and these small networks are bound by
# the cores, so 20 one-thread processes share the GPU. Seconds per run are therefore not
# speed figures. Every experiment writes its own folder under $1 (runs.csv is appended per
# finished run, so what a time limit cuts off is simply missing); $2 seconds bound it all.
#   sh benchmarks/accuracy_gpu.sh OUT SECONDS
# The data must sit at ../shared/data (nanofibre, busi) as in the recipes.
set -u
out=$1
limit=$2
mkdir -p "$out"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1 ONECLASS_CACHE="$out/cache"
# one BLAS thread per process too (the kernel baselines' solvers are numpy)
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
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
# Session 30's window: c-ss-ms-gVAE's last untried honest-split variant (five-member
# ensembles whose members choose lambda3 on validation, which met the paper split's 0.90),
# and BUSI's empty deep-baseline cells at gamma 0-0.1 (Deep SAD at 0 is in ../accuracy).
acc nano-honest-ens5-lambda3 10 --datasets nanofibre --gammas 0.2 --seeds 10 --protocols honest \
  --methods c-ss-ms-gvae --set train.ensemble=5 --set "method.c-ss-ms-gvae.tune_lambda3=[0.1, 1]"
acc busi-gammas 10 --datasets busi --gammas 0,0.05,0.1 --seeds 10 --protocols honest \
  --methods ss-dcae,ss-vae,ss-vq-vae
acc busi-gammas-deep-sad 2 --datasets busi --gammas 0.05,0.1 --seeds 10 --protocols honest \
  --methods deep-sad
wait
rm -rf "$out/cache"
