"""VQ-VAE networks (van den Oord et al. 2017) as ss-vq-vae.txt Sec. IV-D describes them.

Encoder: 4x4 stride-2 convolution (hidden/2 channels), ReLU, 4x4 stride-2 convolution
(hidden), ReLU, 3x3 convolution (hidden), a residual stack, then a 1x1 convolution to D
dimensions: a 32 x 32 patch becomes an 8 x 8 grid of D-dimensional embeddings.
Decoder: 3x3 convolution (hidden), a residual stack, 4x4 stride-2 transposed convolution
(hidden/2), ReLU, 4x4 stride-2 transposed convolution to the image.
Residual layer: ReLU, 3x3 convolution (residual-hidden), ReLU, 1x1 convolution (hidden),
added to its input; the stack ends with a ReLU. The paper's "varying number" of residual
layers defaults to 2 here, as in the reference VQ-VAE code.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ResidualStack(nn.Module):
    def __init__(self, hidden: int, residual_hidden: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Conv2d(hidden, residual_hidden, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(residual_hidden, hidden, 1))
            for _ in range(layers))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            h = h + layer(h)
        return F.relu(h)


class VQEncoder(nn.Module):
    def __init__(self, channels: int, hidden: int, residual_hidden: int, layers: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, hidden // 2, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(hidden // 2, hidden, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), ResidualStack(hidden, residual_hidden, layers),
            nn.Conv2d(hidden, out_dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class VQDecoder(nn.Module):
    def __init__(self, channels: int, hidden: int, residual_hidden: int, layers: int, in_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_dim, hidden, 3, padding=1), ResidualStack(hidden, residual_hidden, layers),
            nn.ConvTranspose2d(hidden, hidden // 2, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(hidden // 2, channels, 4, stride=2, padding=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Codebook(nn.Module):
    """K embeddings of D dimensions; nearest-neighbour lookup (Eq. 1)."""

    def __init__(self, codes: int, dim: int):
        super().__init__()
        self.embeddings = nn.Parameter(torch.empty(codes, dim).uniform_(-1 / codes, 1 / codes))
        # running assignments per training step (decay 0.9), for restarting dead codes
        self.register_buffer("usage", torch.ones(codes))

    @torch.no_grad()  # an index: nothing to differentiate, nothing for autograd to keep
    def nearest(self, e: torch.Tensor) -> torch.Tensor:
        """Index of the nearest embedding for each D-vector of the grid e: (n, D, h, w) -> (n, h, w)."""
        flat = e.permute(0, 2, 3, 1).reshape(-1, e.shape[1]).float()
        codes = self.embeddings.float()
        # in float32 even under AMP: autocast would run the product in float16, where
        # |e|^2 - 2 e.c + |c|^2 cancels to noise for an encoding near its code (a third of
        # the positions took a code over 10% farther than the nearest) or overflows
        with torch.autocast(e.device.type, enabled=False):
            distances = (flat ** 2).sum(1, keepdim=True) - 2 * flat @ codes.T + (codes ** 2).sum(1)
        return distances.argmin(1).view(e.shape[0], e.shape[2], e.shape[3])

    def lookup(self, index: torch.Tensor) -> torch.Tensor:
        """(n, h, w) indices -> (n, D, h, w) embeddings."""
        return self.embeddings[index].permute(0, 3, 1, 2)
