"""LeNet-type convolutional encoder and mirrored decoder for small square patches.

The encoder follows Ruff et al.'s CIFAR-10 network (Deep SVDD / Deep SAD): three
5x5 convolutions with 32, 64 and 128 channels, each followed by batch norm, leaky ReLU
and 2x2 max pooling, then a linear map to ``rep_dim``. With ``bias=False`` there is no
bias anywhere and batch norm has no affine parameters: a one-class network with biases
can map everything to the centre (hypersphere collapse). The patch side must be a
multiple of 8 (32 in the papers).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

WIDTHS = (32, 64, 128)


def check_shape(method: str, in_shape: tuple[int, int, int]) -> None:
    from oneclass.errors import OneclassError

    channels, height, width = in_shape
    if height != width or height % 8 or height < 8:
        raise OneclassError(f"method {method}: needs square patches whose side is a multiple of 8, "
                            f"got {height}x{width} (set patches.resize: 32)")
    if channels not in (1, 3):
        raise OneclassError(f"method {method}: needs 1 or 3 channels, got {channels}")


def _block(c_in: int, c_out: int, bias: bool) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 5, padding=2, bias=bias),
                         nn.BatchNorm2d(c_out, eps=1e-4, affine=bias), nn.LeakyReLU(0.01))


class Encoder(nn.Module):
    def __init__(self, channels: int, size: int, rep_dim: int = 128, bias: bool = False):
        super().__init__()
        blocks = []
        c_in = channels
        for c_out in WIDTHS:
            blocks += [_block(c_in, c_out, bias), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.fc = nn.Linear(WIDTHS[-1] * (size // 8) ** 2, rep_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


class Decoder(nn.Module):
    """Mirror of :class:`Encoder`: a linear map back to 128 x (size/8)^2, then 5x5
    convolutions each followed by 2x upsampling (128 → 64 → 32 → 32 channels), so the
    wide convolutions run at the small scales, and a last 5x5 convolution to the image."""

    def __init__(self, channels: int, size: int, rep_dim: int = 128, bias: bool = False):
        super().__init__()
        self.side = size // 8
        self.fc = nn.Linear(rep_dim, WIDTHS[-1] * self.side ** 2, bias=bias)
        widths = (*WIDTHS[::-1], WIDTHS[0])
        self.blocks = nn.ModuleList(_block(a, b, bias) for a, b in zip(widths, widths[1:]))
        self.out = nn.Conv2d(widths[-1], channels, 5, padding=2, bias=bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.fc(z), 0.01).view(len(z), WIDTHS[-1], self.side, self.side)
        for block in self.blocks:
            h = F.interpolate(block(h), scale_factor=2)
        return torch.sigmoid(self.out(h))


class AutoEncoder(nn.Module):
    def __init__(self, channels: int, size: int, rep_dim: int = 128, bias: bool = False):
        super().__init__()
        self.encoder = Encoder(channels, size, rep_dim, bias)
        self.decoder = Decoder(channels, size, rep_dim, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
