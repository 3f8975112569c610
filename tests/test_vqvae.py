"""ss-VQ-VAE, VQ-VAE and ss-VAE: nearest codes, where each stop-gradient sends gradient,
the score of Eq. (5) by hand, the bounded anomaly term, separation, determinism."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from oneclass.data.items import LABELED_ANOMALY, UNLABELED
from oneclass.data.items import PatchData
from oneclass.errors import OneclassError
from oneclass.methods.nets.vq import Codebook
from oneclass.methods.vqvae import SSVAE, SSVQVAE, VQVAE, log_ratio_hinge, quantise
from oneclass.metrics import auroc
from oneclass.registry import methods
from test_methods import easy_set, engine, make


def small(cls, **kw):
    return cls.Params(**{"codes": 16, "dim": 8, "hidden": 16, "residual_hidden": 8, "residual_layers": 1, **kw})


def test_nearest_code_matches_brute_force():
    torch.manual_seed(0)
    book = Codebook(codes=10, dim=3)
    book.embeddings.data.normal_()
    e = torch.randn(2, 3, 4, 5)
    index = book.nearest(e)
    for n, i, j in np.ndindex(2, 4, 5):
        distances = [float(((e[n, :, i, j] - code) ** 2).sum()) for code in book.embeddings.detach()]
        assert index[n, i, j].item() == int(np.argmin(distances))
    assert torch.equal(book.lookup(index)[1, :, 2, 3], book.embeddings[index[1, 2, 3]])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_nearest_code_is_found_in_float32_under_autocast(dtype):
    """Encodings near codes of a large norm: in half precision |e|^2 - 2 e.c + |c|^2
    cancels to noise (autocast would run the product so, whatever the inputs' dtype)."""
    torch.manual_seed(0)
    book = Codebook(codes=64, dim=16)
    book.embeddings.data = 30 + torch.randn(64, 16)  # far from 0, close to one another
    truth = torch.randint(0, 64, (4, 6, 6))
    e = (book.embeddings.data[truth] + 0.05 * torch.randn(4, 6, 6, 16)).permute(0, 3, 1, 2)
    with torch.autocast("cpu", dtype=dtype):
        assert torch.equal(book.nearest(e), truth)


def test_vq_latent_term_is_the_codebook_term_plus_beta_times_the_commitment():
    """Both terms are ||E - Q||^2 in value (they differ in where the gradient goes), so
    the latent term is (1 + beta) of it; and the unsupervised objective is the mean of
    reconstruction plus latent term (Eq. 2)."""
    method = make(VQVAE, small(VQVAE, beta=0.25, restart_below=0.0), (1, 32, 32), engine())
    x, roles = torch.rand(4, 1, 32, 32), torch.zeros(4, dtype=torch.int8)
    with torch.no_grad():
        reconstruction, latent = method.terms(x, roles)
        e = method.encoder(x)
        q = method.codebook.lookup(method.codebook.nearest(e))
        distance = ((e - q) ** 2).flatten(1).mean(1)
        torch.testing.assert_close(latent, 1.25 * distance)
        torch.testing.assert_close(method.objective({"x": x, "roles": roles}), (reconstruction + latent).mean())


def test_each_stop_gradient_sends_gradient_where_eq_2_says():
    method = make(SSVQVAE, small(SSVQVAE), (1, 32, 32), engine())
    x = torch.rand(4, 1, 32, 32)

    def receivers(term: str) -> set[str]:
        for module in method.modules.values():
            module.zero_grad(set_to_none=True)
        e = method.encoder(x)
        quantised, codebook_term, commitment, _ = quantise(e, method.codebook)
        value = {"codebook": codebook_term, "commitment": commitment,
                 "reconstruction": ((method.decoder(quantised) - x) ** 2).mean((1, 2, 3))}[term]
        value.sum().backward()
        return {name for name, module in method.modules.items()
                if any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())}

    assert receivers("codebook") == {"codebook"}  # sg[E]: the encoder is left alone
    assert receivers("commitment") == {"encoder"}  # sg[Q]: the codebook is left alone
    # straight-through: the decoder's gradient reaches the encoder, not the codebook
    assert receivers("reconstruction") == {"encoder", "decoder"}


def test_score_is_the_distance_between_encoding_and_codes_by_hand():
    method = make(SSVQVAE, small(SSVQVAE, codes=2, dim=2), (1, 8, 8), engine())
    method.codebook.embeddings.data = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    grid = torch.tensor([[[0.2, 0.9], [3.0, -1.0]], [[0.1, 0.6], [2.0, 0.0]]])  # (D=2, 2, 2)
    method.encoder.forward = lambda x: grid.expand(len(x), -1, -1, -1)
    # positions (0.2,0.1)->(0,0): 0.05; (0.9,0.6)->(1,1): 0.17; (3,2)->(1,1): 5; (-1,0)->(0,0): 1
    expected = math.sqrt(0.05 + 0.17 + 5 + 1)
    images = np.zeros((3, 1, 8, 8), np.uint8)
    assert method.score(PatchData(images, np.arange(3))) == pytest.approx([expected] * 3, rel=1e-5)
    maps = method.explain(PatchData(images, np.arange(1)))
    assert maps.shape == (1, 8, 8) and maps.max() == pytest.approx(math.sqrt(5), rel=0.05)
    assert method.embed(PatchData(images, np.arange(1)))[0] == pytest.approx([0.775, 0.675])


def test_data_initialised_codes_are_training_encodings():
    images, _ = easy_set(20, 0)
    data = PatchData(images, np.arange(20), roles=np.zeros(20, np.int8))
    method = make(SSVQVAE, small(SSVQVAE, codes=30), (1, 32, 32), engine())
    torch.manual_seed(7)
    method.on_start(data)
    encodings = torch.from_numpy(method.map(method.encoder, data)).permute(0, 2, 3, 1).reshape(-1, 8)
    codes = method.codebook.embeddings.detach()
    assert all(((encodings - code) ** 2).sum(1).min() < 1e-10 for code in codes)
    assert len({tuple(code.tolist()) for code in codes}) == 30  # 20 x 64 positions: drawn without repeats
    torch.manual_seed(7)  # the draw over every position of every item, in that order
    torch.testing.assert_close(codes, encodings[torch.randperm(len(encodings))[:30]], rtol=0, atol=1e-6)
    uniform = make(SSVQVAE, small(SSVQVAE, codebook_init="uniform"), (1, 32, 32), engine())
    before = uniform.codebook.embeddings.detach().clone()
    uniform.on_start(data)
    assert torch.equal(uniform.codebook.embeddings, before) and before.abs().max() <= 1 / 16


def test_log_ratio_hinge_by_hand():
    values = torch.tensor([1.0, 3.0, 2.0, 10.0], requires_grad=True)
    roles = torch.tensor([UNLABELED, UNLABELED, LABELED_ANOMALY, LABELED_ANOMALY])
    out = log_ratio_hinge(values, roles, margin=2.0)
    # normal mean 2, so anomalies are pushed to 4: log 4 - log 2 for the first, 0 beyond
    assert out.tolist() == pytest.approx([1.0, 3.0, math.log(2.0), 0.0])
    out[2].backward()
    assert values.grad.tolist() == pytest.approx([0.0, 0.0, -0.5, 0.0])


def _train(cls, steps, seed=0, gamma_rows=40, log_dir=None, **params):
    images, labels = easy_set()
    train_rows = np.r_[np.arange(0, 160), np.arange(240, 240 + gamma_rows)]
    roles = np.where(labels[train_rows] == 1, LABELED_ANOMALY, UNLABELED).astype(np.int8)
    eng = engine()
    eng.seed, eng.run_dir = seed, log_dir
    method = make(cls, small(cls, steps=steps, **params), (1, 32, 32), eng)
    method.fit(PatchData(images, train_rows, roles=roles), None)
    test_rows = np.r_[np.arange(160, 240), np.arange(280, 300)]
    return method, labels[test_rows], method.score(PatchData(images, test_rows))


def test_ss_vq_vae_separates_an_easy_set_logs_codebook_usage_and_is_deterministic(tmp_path):
    method, labels, scores = _train(SSVQVAE, steps=40, log_dir=tmp_path)
    assert auroc(labels, scores) > 0.95
    epochs = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert sum(1 for _ in epochs) == math.ceil(40 / 7)  # 200 items in batches of 32: 7 steps an epoch
    for epoch in epochs:
        assert 0 < epoch["codes_used"] <= 1 and 1 <= epoch["perplexity"] <= 16
    _, _, again = _train(SSVQVAE, steps=40)
    np.testing.assert_array_equal(scores, again)


def test_codebook_usage_statistics_by_hand():
    method = make(SSVQVAE, small(SSVQVAE, codes=4), (1, 32, 32), engine())
    method._counts = torch.tensor([6, 2, 0, 0])
    method._restarted = 3
    stats = method.epoch_stats()
    p = np.array([0.75, 0.25])
    assert stats == {"codes_used": 0.5, "perplexity": round(float(np.exp(-(p * np.log(p)).sum())), 2),
                     "codes_restarted": 3}
    assert method._counts.sum() == 0 and method._restarted == 0  # reset for the next epoch


def test_dead_codes_restart_on_normal_encodings_only():
    method = make(SSVQVAE, small(SSVQVAE, codes=4, dim=2, restart_below=0.5), (1, 32, 32), engine())
    book = method.codebook
    with torch.no_grad():
        book.embeddings.copy_(torch.tensor([[9.0, 9.0], [8.0, 8.0], [7.0, 7.0], [6.0, 6.0]]))
    book.usage.copy_(torch.tensor([1.0, 0.3, 5.0, 0.2]))
    # item 0 normal (all 1s), item 1 a labelled anomaly (all -1s); a 2 x 2 grid each
    e = torch.stack([torch.ones(2, 2, 2), -torch.ones(2, 2, 2)])
    counts = torch.tensor([0, 0, 8, 0])
    method._plan_restarts(e, torch.tensor([UNLABELED, LABELED_ANOMALY]), counts)
    assert book.embeddings[[1, 3]].tolist() == [[8.0, 8.0], [6.0, 6.0]]  # not inside the step's loss
    method._apply_restarts()  # the next step's start, or the epoch's end
    # usage 0.9 x old + 0.1 x counts: [0.9, 0.27, 5.3, 0.18]: codes 1 and 3 are dead
    assert book.embeddings[[0, 2]].tolist() == [[9.0, 9.0], [7.0, 7.0]]
    assert book.embeddings[[1, 3]].tolist() == [[1.0, 1.0], [1.0, 1.0]]  # a normal item's encoding
    assert book.usage.tolist() == pytest.approx([0.9, 1.0, 5.3, 1.0])
    assert method._restarted == 2
    everything_anomalous = torch.tensor([LABELED_ANOMALY, LABELED_ANOMALY])
    book.usage.fill_(0.0)
    method._plan_restarts(e, everything_anomalous, counts * 0)
    assert method._restarted == 2 and method._pending is None  # nothing normal in the batch to restart on


@pytest.mark.parametrize("init", ["data", "uniform"])
def test_long_training_with_anomalies_stays_bounded(init, tmp_path):
    """A hinge on the plain difference grew every distance to 1e9 within 40 steps here;
    the log-ratio hinge keeps the loss small and lets it settle."""
    _, _, scores = _train(SSVQVAE, steps=150, log_dir=tmp_path, lr=3e-3, codebook_init=init)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert np.isfinite(scores).all() and all(0 <= loss < 5 for loss in losses)
    assert max(losses[-5:]) < 0.1


@pytest.mark.parametrize("cls", [SSVQVAE, VQVAE, SSVAE], ids=lambda c: c.name)
def test_every_variant_is_registered_and_trains(cls):
    assert methods.get(cls.name) is cls
    method, labels, scores = _train(cls, steps=30)
    assert np.isfinite(scores).all()
    if cls is not VQVAE:
        assert auroc(labels, scores) > 0.9
    images, _ = easy_set(4, 0)
    assert method.embed(PatchData(images, np.arange(4))).shape == (4, 8)
    assert method.explain(PatchData(images, np.arange(4))).shape == (4, 32, 32)


def test_vq_vae_ignores_labelled_anomalies():
    with_anomalies = _train(VQVAE, steps=10)[2]
    without = _train(VQVAE, steps=10, gamma_rows=0)[2]
    np.testing.assert_array_equal(with_anomalies, without)


def test_unusable_patch_shape_is_refused():
    with pytest.raises(OneclassError, match="multiples of 4"):
        make(SSVQVAE, small(SSVQVAE), (1, 30, 30), engine())
