"""Detection on real data: a short CPU run of each method family, trained from the shipped
nanofibre recipe on a fixed split, must separate the shared nanofibre anomalies -- so a
regression to chance fails CI. The split is the recipe's seed 0 (honest protocol: the
test images are images no model saw), the figures the ones measured when the threshold
was set (benchmarks/accuracy.py has them over seeds). Skipped where ../shared/data is
absent (a user's fresh clone)."""

from __future__ import annotations

import pytest

from conftest import SHARED_DATA
from oneclass import api

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:.*has random weights:UserWarning"),  # devnet, as the recipe says
              pytest.mark.skipif(not (SHARED_DATA / "nanofibre").is_dir(),
                                 reason=f"shared data {SHARED_DATA} not present (only in the team checkout and CI)")]

RECIPE = "recipes/nanofibre.yaml"


@pytest.fixture(scope="module")
def nanofibre(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("ONECLASS_CACHE", str(tmp_path_factory.mktemp("cache")))
    config = api.load_recipe(RECIPE)
    config.dataset.root = str(SHARED_DATA / "nanofibre")
    return api.patch_store(config)


@pytest.fixture(autouse=True)
def one_thread():
    """The floors were measured with one torch thread (benchmarks/accuracy.py's jobs);
    float sums depend on the thread count and so does a training run's path."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _test_auroc(store, overrides: list[str]) -> tuple[float, object]:
    config = api.load_recipe(RECIPE, overrides)
    sets = api.split(store, config)
    method = api.method_from_recipe(config, store)
    method.fit(sets.train, sets.val)
    return api.auroc(sets.test, method.score(sets.test)), method


# ss-dcae, the one family not here, is inverted on these images (the defects are
# smoother than the fibres: README) and misses the floor (0.67 on this split).
@pytest.mark.parametrize("method, floor", [
    ("c-ss-ms-gvae", 0.75),  # the gVAE family; measured 0.788, 0.869 with the recipe's keep: best
    ("ss-vq-vae", 0.75),  # the VQ family; measured 0.797 (720 steps), 0.807 with restarts after the step
    ("binclass", 0.70),  # measured 0.765 (torch 2.11), 0.742 (2.14.1); ten splits 0.745 +- 0.042
    ("deep-sad", 0.75),  # the hypersphere family, from random weights (the recipe); measured 0.765
    ("devnet", 0.75),  # deviation networks, random ResNet-18 weights at 32 px; measured 0.768
])
def test_family_separates_real_nanofibre_anomalies(nanofibre, method, floor):
    auroc, _ = _test_auroc(nanofibre, [f"method.name={method}"])
    assert auroc >= floor, f"{method}: test AUROC {auroc:.3f} on the fixed nanofibre split"


def test_vq_codebook_stays_in_use_and_collapses_without_restarts(nanofibre):
    """Without restarts 98% of the codes fall idle within an epoch on these patches and
    stay idle; with them usage comes back once codes idle for ~20 steps restart (epoch
    3 of 12 steps each) and stays up."""
    usage = {}
    for below in (0.1, 0.0):
        config = api.load_recipe(RECIPE, ["method.name=ss-vq-vae", "method.ss-vq-vae.steps=60",
                                          f"method.ss-vq-vae.restart_below={below}"])
        sets = api.split(nanofibre, config)
        method = api.method_from_recipe(config, nanofibre)
        records = []
        method.trainer.report = lambda r: records.append(r) if "codes_used" in r else None
        method.fit(sets.train, None)
        usage[below] = [r["codes_used"] for r in records]
    assert len(usage[0.1]) == 5 and min(usage[0.1][2:]) >= 0.1, usage
    assert max(usage[0.0][1:]) < 0.02, usage
