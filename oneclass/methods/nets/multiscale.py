"""The multiscale encoder, decoder and latent classifier of c-ss-ms-gVAE (Sec. 4.1, Fig. 1).

Encoder: S blocks, each two [3x3 conv (padding 1), BN, leaky ReLU] followed by 2x2 max
pooling ("each pooling layer reduces spatial resolution"), so scale s (1 = finest) has
resolution size / 2^s. At every latent scale the block's output forks into three heads
giving the GG mean, log-scale and log-shape of that scale's latent map.

Decoder: S blocks from the coarsest scale up, each a x2 upsampling and two conv blocks;
block s receives the previous block's features concatenated with the latent sample of
scale s (the multiscale skip path). A final three-head fork gives the GG parameters of
the reconstructed image.

Heads: the paper's fork is three [1x1 conv, BN, leaky ReLU] blocks. A leaky ReLU output
cannot take the negative values a mean or a log-scale needs (a pixel scale below 1 needs
a negative log-scale), so each head is the paper's block followed by a linear 1x1
convolution -- our choice where the text is silent on how the parameters leave the block.

Channel widths double per scale from ``width`` (16, 32, 64, 128 by default) and so do
the latent channels from ``latent_channels`` (4, 8, 16, 32): a 32 x 32 patch has latent
maps of 16x16x4, 8x8x8, 4x4x16 and 2x2x32 = 1920 numbers, the coarsest alone 128 (the
rep_dim of the Deep SAD baseline). Single-scale variants keep only the coarsest.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

SLOPE = 0.01


def conv_block(c_in: int, c_out: int, kernel: int, bias: bool = True) -> nn.Sequential:
    """Convolution, batch norm (without its affine shift and scale when ``bias`` is False),
    leaky ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=bias),
                         nn.BatchNorm2d(c_out, affine=bias), nn.LeakyReLU(SLOPE))


def _branch(c_in: int, c_out: int, bias: bool = True) -> nn.Sequential:
    return nn.Sequential(conv_block(c_in, c_in, 1, bias), nn.Conv2d(c_in, c_out, 1, bias=bias))


class GGHead(nn.Module):
    """The three-way fork: mean, log-scale, log-shape maps. A branch that is not asked
    for is not run (its parameter is held fixed by the caller) and returns None; with
    ``gg=False`` (ablations without GG modelling there) only the mean branch exists."""

    def __init__(self, c_in: int, c_out: int, gg: bool = True, bias: bool = True):
        super().__init__()
        self.mean = _branch(c_in, c_out, bias)
        self.log_scale = _branch(c_in, c_out) if gg else None
        self.log_shape = _branch(c_in, c_out) if gg else None

    @torch.no_grad()
    def start_at(self, log_scale: float, log_shape: float) -> None:
        """Make the log-scale/log-shape branches output constants until trained, so a
        branch joining a warm-started model begins at the value it was held at."""
        for branch, value in ((self.log_scale, log_scale), (self.log_shape, log_shape)):
            if branch is not None:
                branch[-1].weight.zero_()
                branch[-1].bias.fill_(value)

    def forward(self, h: torch.Tensor, scale: bool, shape: bool):
        return (self.mean(h), self.log_scale(h) if scale and self.log_scale is not None else None,
                self.log_shape(h) if shape and self.log_shape is not None else None)


def widths(width: int, scales: int) -> list[int]:
    return [width * 2 ** s for s in range(scales)]


class MultiscaleEncoder(nn.Module):
    def __init__(self, channels: int, scales: int, width: int, latent_channels: int, multiscale: bool,
                 gg: bool = True, bias: bool = True):
        super().__init__()
        w = widths(width, scales)
        self.blocks = nn.ModuleList(
            nn.Sequential(conv_block(c_in, c_out, 3, bias), conv_block(c_out, c_out, 3, bias))
            for c_in, c_out in zip([channels, *w], w))
        #: latent scales, finest first (indices into the blocks)
        self.latent_scales = list(range(scales)) if multiscale else [scales - 1]
        self.latent_channels = {s: latent_channels * 2 ** s for s in self.latent_scales}
        self.heads = nn.ModuleDict({str(s): GGHead(w[s], self.latent_channels[s], gg, bias)
                                    for s in self.latent_scales})

    def forward(self, x: torch.Tensor, scale: bool = True, shape: bool = True) -> list[tuple]:
        """(mean, log-scale, log-shape) per latent scale, finest first."""
        out = []
        h = x
        for s, block in enumerate(self.blocks):
            h = F.max_pool2d(block(h), 2)
            if s in self.latent_scales:
                out.append(self.heads[str(s)](h, scale, shape))
        return out

    def dims(self, size: int) -> int:
        return sum(c * (size // 2 ** (s + 1)) ** 2 for s, c in self.latent_channels.items())


class MultiscaleDecoder(nn.Module):
    def __init__(self, channels: int, scales: int, width: int, latent_channels: dict[int, int],
                 gg: bool = True):
        super().__init__()
        w = widths(width, scales)
        blocks = {}
        for s in reversed(range(scales)):
            c_in = (w[s] if s < scales - 1 else 0) + latent_channels.get(s, 0)
            c_out = w[s - 1] if s > 0 else w[0]
            blocks[str(s)] = nn.Sequential(conv_block(c_in, c_out, 3), conv_block(c_out, c_out, 3))
        self.blocks = nn.ModuleDict(blocks)
        self.head = GGHead(w[0], channels, gg)

    def forward(self, zs: dict[int, torch.Tensor], scale: bool = True, shape: bool = True) -> tuple:
        """``zs``: latent sample per latent scale. Returns the image's (mean, log-scale, log-shape)."""
        h = None
        for s in reversed(range(len(self.blocks))):
            parts = [t for t in (h, zs.get(s)) if t is not None]
            h = self.blocks[str(s)](F.interpolate(torch.cat(parts, 1), scale_factor=2))
        return self.head(h, scale, shape)


class LatentClassifier(nn.Module):
    """Two fully connected layers on the flattened multiscale latent; one logit."""

    def __init__(self, dims: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dims, hidden), nn.LeakyReLU(SLOPE), nn.Linear(hidden, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).squeeze(1)
