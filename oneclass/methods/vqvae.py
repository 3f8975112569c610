"""ss-VQ-VAE (Sharma et al., DICTA 2023), the unsupervised VQ-VAE, and ss-VAE.

VQ-VAE (ss-vq-vae.txt Sec. III-B): an encoder maps a patch to a grid of D-dimensional
embeddings E(U); each is replaced by its nearest codebook entry (Eq. 1), the decoder
reconstructs from the quantised grid Q(U), gradients pass the quantiser straight
through. Per item (Eq. 2):

    L_normal = ||D(Q) - X||^2 + ||sg[E] - Q||^2 + beta ||E - sg[Q]||^2

The codebook term moves only the codebook, the commitment term only the encoder. Each
norm is taken as a mean over its elements, as the reference VQ-VAE code does (pixels
and grid entries then weigh alike whatever the patch size).

ss-VQ-VAE adds, for labelled anomalies, the negated loss of Eq. (3) and minimises
eta L_normal + (1 - eta) L_anomalous (Eq. 4). Negated, the reconstruction term is
unbounded below (the decoder can ruin an anomaly's reconstruction without limit), and so
are the two distance terms. The paper is silent; we bound each part -- an anomaly's
reconstruction error r, and its distance d = ||E - Q||^2 (codebook plus beta x
commitment) -- by a hinge on its log-ratio to the batch's normal mean m (held constant
in the gradient):

    max(0, log(margin * m) - log(r))  +  max(0, log(margin * m_d) - log(d))

so an anomaly stops pulling once it is ``margin`` times worse than the normal items. The
log matters: a hinge on the plain difference, margin * m - d, pushed with a force that
grows with the encoder's scale just as the normal items' pull does, and since anomalies
sit farther out the push won -- every distance grew without limit (1e9 within 40 steps
on a toy set). The log-ratio's push weakens as 1/d, so the normal term wins at scale;
at small scales it is the stronger: its gradient is (1 - eta)/r dr against the normal
term's eta dr, so at reconstruction errors near 0.01 an anomaly weighs about a hundred
times what Eq. 4's eta says, and the paper's robustness over eta in 1e-2 ... 1e2 need not
carry over.

Not in the paper (which trains its codes by gradient alone, no EMA): the codebook starts
from encodings of training items (``codebook_init: data``) and codes unused for a while
are restarted (``restart_below``), in the unsupervised VQ-VAE baseline too; both are
measured in ``SSVQVAE.on_start`` and ``_plan_restarts``.

Score (Eq. 5): s(U) = ||E(U) - Q(U)||_2 over the whole grid. ``explain`` upsamples the
per-position distance map to the patch; ``embed`` is the grid-averaged encoding.

ss-VAE (the paper's ablation without quantisation): the same encoder gives a mean and a
log-variance per grid position, a Gaussian sample feeds the decoder, the latent term is
KL(q || N(0, I)) (mean over grid entries) and the anomaly terms are hinged alike. Its
score is ||mu(U)||_2 over the grid -- the distance of the encoding from the prior's mean,
this family's latent-space score (the paper gives none for ss-VAE).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.nn import functional as F

from oneclass import distributed
from oneclass.data.items import LABELED_ANOMALY
from oneclass.data.items import PatchData
from oneclass.errors import OneclassError
from oneclass.methods.base import Method, masked_mean
from oneclass.methods.nets.vq import Codebook, VQDecoder, VQEncoder


def quantise(e: torch.Tensor, codebook: Codebook) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Straight-through quantised grid, per-item codebook and commitment terms, code indices."""
    index = codebook.nearest(e)
    q = codebook.lookup(index)
    e = e.float()
    codebook_term = ((e.detach() - q) ** 2).flatten(1).mean(1)
    commitment = ((e - q.detach()) ** 2).flatten(1).mean(1)
    return e + (q - e).detach(), codebook_term, commitment, index


def log_ratio_hinge(values: torch.Tensor, roles: torch.Tensor, margin: float) -> torch.Tensor:
    """Per item: the value itself for normal items; for labelled anomalies
    max(0, log(margin x mean of the batch's normal values) - log(value))."""
    anomalous = roles == LABELED_ANOMALY
    reference = values[~anomalous] if (~anomalous).any() else values
    floor = torch.finfo(values.dtype).tiny
    push = torch.clamp(torch.log(margin * reference.detach().mean() + floor) - torch.log(values + floor), min=0)
    return torch.where(anomalous, push, values)


class _GridAutoencoder(Method):
    """What VQ-VAE and ss-VAE share: the networks, the bounded semi-supervised objective,
    training counted in optimizer steps, and scores read off a grid of latent vectors."""

    @dataclass
    class Params:
        codes: int = 512  # K (VQ only)
        dim: int = 64  # D, dimensions of each grid embedding
        hidden: int = 128
        residual_hidden: int = 32
        residual_layers: int = 2
        beta: float = 1.0  # commitment weight (VQ only)
        eta: float = 0.5  # weight of L_normal against L_anomalous (Eq. 4)
        margin: float = 2.0  # anomalies are pushed to margin x the batch's normal terms
        steps: int = 15000  # optimizer steps (the paper's; shorten for CPUs)
        lr: float | None = 1e-3  # the paper's Adam rate; null: train.lr

    latent_channels_factor = 1

    def __init__(self, params, in_shape):
        super().__init__(params, in_shape)
        channels, height, width = self.in_shape
        if height % 4 or width % 4 or channels not in (1, 3):
            raise OneclassError(f"method {self.name}: needs 1- or 3-channel patches whose sides are "
                                f"multiples of 4, got {channels}x{height}x{width}")
        p = params
        self.encoder = self.add("encoder", VQEncoder(channels, p.hidden, p.residual_hidden,
                                                     p.residual_layers, p.dim * self.latent_channels_factor))
        self.decoder = self.add("decoder", VQDecoder(channels, p.hidden, p.residual_hidden,
                                                     p.residual_layers, p.dim))

    def terms(self, x: torch.Tensor, roles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-item reconstruction error and latent term of a training batch."""
        raise NotImplementedError

    def position_distances(self, x: torch.Tensor) -> torch.Tensor:
        """(n, h, w): the score's contribution of each grid position (before the root)."""
        raise NotImplementedError

    def objective(self, batch: dict) -> torch.Tensor:
        x, roles = batch["x"], batch["roles"]
        reconstruction, latent = self.terms(x, roles)
        if self.supervision == "unsupervised":
            return (reconstruction + latent).mean()
        p = self.params
        per_item = log_ratio_hinge(reconstruction, roles, p.margin) + log_ratio_hinge(latent, roles, p.margin)
        anomalous = roles == LABELED_ANOMALY
        return p.eta * masked_mean(per_item, ~anomalous) + (1 - p.eta) * masked_mean(per_item, anomalous)

    def fit(self, train: PatchData, val: PatchData | None = None) -> None:
        if self.supervision == "unsupervised":
            train = train.subset(train.roles != LABELED_ANOMALY)
        p, trainer = self.params, self.prepare(val)
        params = [q for module in self.modules.values() for q in module.parameters()]
        trainer.stage(trainer.spec("train", params, lr=p.lr or trainer.cfg.lr, steps=p.steps),
                      train, self.objective, on_start=lambda: self.on_start(train), scorer=self._score,
                      epoch_stats=self.epoch_stats)

    epoch_stats = None

    def on_start(self, train: PatchData) -> None:
        pass

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        return self.position_distances(x).flatten(1).sum(1).sqrt()

    def score(self, data: PatchData) -> np.ndarray:
        return self.map(self._score, data)

    def explain(self, data: PatchData) -> np.ndarray:
        def upsampled(x: torch.Tensor) -> torch.Tensor:
            grid = self.position_distances(x).sqrt().unsqueeze(1)
            return F.interpolate(grid, size=x.shape[-2:], mode="bilinear", align_corners=False).squeeze(1)

        return self.map(upsampled, data)


class SSVQVAE(_GridAutoencoder):
    """ss-VQ-VAE: VQ-VAE with a bounded negated loss on labelled anomalies."""

    name = "ss-vq-vae"

    @dataclass
    class Params(_GridAutoencoder.Params):
        codebook_init: Literal["uniform", "data"] = "data"
        # a code whose running use (assignments per step, averaged with decay 0.9) falls
        # below this is restarted on a normal item's encoding; 0 turns restarts off
        restart_below: float = 0.1

    def __init__(self, params, in_shape):
        super().__init__(params, in_shape)
        self.codebook = self.add("codebook", Codebook(params.codes, params.dim))
        self._counts = torch.zeros(params.codes, dtype=torch.long)
        self._restarted = 0  # codes restarted this epoch, read with _counts
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None  # (dead codes, their new vectors)

    def on_start(self, train: PatchData) -> None:
        """``codebook_init: data`` (default): the codes start as the encodings of K random
        grid positions of the training items. The paper does not say how its dictionary
        starts; the reference VQ-VAE's small uniform codes (``uniform``, +-1/K) collapsed
        on the nanofibre patches -- 1 to 31 of 512 codes in use, perplexity 1-15 -- and
        the dictionary then says little (test AUROC 0.36 at gamma 0.2 vs 0.56-0.73)."""
        if self.params.codebook_init != "data":
            return
        # only the items holding a drawn position are encoded (the whole set's grids could
        # fill memory: 4 MiB an item at 512 px); the draw is over every position, as before.
        # Labelled anomalies are among them, as in the runs the benchmarks made
        _, dim, h, w = self.map(self.encoder, train.subset(np.arange(1))).shape
        cells = len(train) * h * w
        pick = torch.randint(cells, (self.params.codes,)) if cells < self.params.codes \
            else torch.randperm(cells)[:self.params.codes]
        items, at = np.unique((pick // (h * w)).numpy(), return_inverse=True)
        grids = torch.from_numpy(self.map(self.encoder, train.subset(items))).permute(0, 2, 3, 1).reshape(-1, dim)
        vectors = grids[torch.from_numpy(at.reshape(-1)) * (h * w) + pick % (h * w)]
        self.codebook.embeddings.data.copy_(vectors.to(self.codebook.embeddings.device))

    def terms(self, x, roles):
        self._apply_restarts()
        e = self.encoder(x)
        quantised, codebook_term, commitment, index = quantise(e, self.codebook)
        counts = torch.bincount(index.flatten(), minlength=self.params.codes)
        self._counts = self._counts.to(index.device) + counts  # usage, read once an epoch
        if self.params.restart_below > 0:
            self._plan_restarts(e, roles, counts)
        reconstruction = ((self.decoder(quantised).float() - x) ** 2).flatten(1).mean(1)
        return reconstruction, codebook_term + self.params.beta * commitment

    @torch.compiler.disable
    def _plan_restarts(self, e: torch.Tensor, roles: torch.Tensor, counts: torch.Tensor) -> None:
        """Choose each code unused for a while to move onto the encoding of a random grid
        position of a normal (not labelled-anomalous) item of the batch; the move is made
        when the step is over (:meth:`_apply_restarts`).

        Why: Eq. (3) negates all three terms for labelled anomalies, the codebook term
        included, so the codes that anomalies land on are pushed away -- the paper's
        "weeding out" of anomalous embeddings, which we keep. But a code that nothing
        picks gets no gradient and never comes back, and the encoder's outputs move
        fast at the paper's lr 1e-3: on the nanofibre patches 98% of the codes fell idle
        within 12 steps, VQ-VAE and ss-VQ-VAE alike, and the dictionary then says
        little. The paper is silent on this; restarting dead codes from encoder outputs
        (as Jukebox does) keeps the dictionary alive, and a code restarted on a normal
        encoding does not undo the weeding. The running use is a buffer of the codebook
        and the draws use torch's global generator, both in checkpoints, so resuming
        stays exact (nothing is pending at an epoch's end, where checkpoints are taken).

        After the step, not inside the loss: autograd (and torch.compile's saved tensors
        even more) may hold the codebook for the backward pass, which an in-place write
        in the middle of the loss would invalidate. Eager under torch.compile."""
        codebook = self.codebook
        codebook.usage.mul_(0.9).add_(counts.to(codebook.usage.dtype), alpha=0.1)
        dead = codebook.usage < self.params.restart_below
        normal = roles != LABELED_ANOMALY
        if not dead.any() or not normal.any():
            return
        vectors = e.detach()[normal].permute(0, 2, 3, 1).reshape(-1, e.shape[1])
        pick = torch.randint(len(vectors), (int(dead.sum()),)).to(vectors.device)
        self._pending = (dead, vectors[pick].to(codebook.embeddings.dtype))
        codebook.usage[dead] = 1.0
        self._restarted += int(dead.sum())

    @torch.compiler.disable
    def _apply_restarts(self) -> None:
        """The restarts the last step chose (at the next step's start, or the epoch's end).
        Under torchrun each rank chooses from its share of the batch, and rank 0's
        codebook is then everyone's (the running use, a buffer, is rank 0's at every step)."""
        with torch.no_grad():
            if self._pending is not None:
                dead, vectors = self._pending
                self.codebook.embeddings[dead] = vectors
                self._pending = None
            distributed.broadcast_(self.codebook.embeddings.data)

    def epoch_stats(self) -> dict:
        """Codebook usage over the epoch's training batches: share of codes used, the
        perplexity exp(entropy) of the assignments (K if all codes were used evenly) and
        the number of codes restarted (under torchrun: assignments over all ranks, restarts
        rank 0's, the ones kept)."""
        self._apply_restarts()
        counts, self._counts = distributed.summed(self._counts).cpu(), torch.zeros_like(self._counts)
        share = counts.double() / max(int(counts.sum()), 1)
        entropy = -(share[share > 0] * share[share > 0].log()).sum()
        restarted, self._restarted = self._restarted, 0
        return {"codes_used": round(float((counts > 0).double().mean()), 4),
                "perplexity": round(float(entropy.exp()), 2), "codes_restarted": restarted}

    def position_distances(self, x):
        e = self.encoder(x).float()
        q = self.codebook.lookup(self.codebook.nearest(e))
        return ((e - q) ** 2).sum(1)

    def embed(self, data: PatchData) -> np.ndarray:
        return self.map(lambda x: self.encoder(x).float().mean((2, 3)), data)


class VQVAE(SSVQVAE):
    """VQ-VAE (van den Oord et al. 2017): L_normal only; labelled anomalies unused."""

    name = "vq-vae"
    supervision = "unsupervised"

    @classmethod
    def ignored_params(cls) -> tuple[str, ...]:
        return ("eta", "margin")  # the anomaly terms


class SSVAE(_GridAutoencoder):
    """ss-VAE: Gaussian VAE on the same networks, with the same bounded negation."""

    name = "ss-vae"
    latent_channels_factor = 2  # mean and log-variance

    @classmethod
    def ignored_params(cls) -> tuple[str, ...]:
        return ("codes", "beta")  # no codebook

    def _moments(self, x):
        mean, log_var = self.encoder(x).float().chunk(2, dim=1)
        return mean, log_var.clamp(-30, 20)

    def terms(self, x, roles):
        mean, log_var = self._moments(x)
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
        kl = 0.5 * (mean ** 2 + log_var.exp() - log_var - 1)
        reconstruction = ((self.decoder(z).float() - x) ** 2).flatten(1).mean(1)
        return reconstruction, kl.flatten(1).mean(1)

    def position_distances(self, x):
        return (self._moments(x)[0] ** 2).sum(1)

    def embed(self, data: PatchData) -> np.ndarray:
        return self.map(lambda x: self._moments(x)[0].mean((2, 3)), data)
