"""Networks whose outputs are already known.

When the networks are frozen their outputs never change, so the harness
computes them once per sample and binds the program's neural predicates to
these stand-ins, which read the precomputed distributions from the batch.
Tests use them to feed chosen distributions to the engines.
"""
from __future__ import annotations

import torch
from torch import nn


class Given(nn.Module):
    """The input already is the distribution the network would output: [B, K] -> [B, K]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class GivenSlice(nn.Module):
    """One of several networks reading the same source: columns ``start:stop`` of it."""

    def __init__(self, start: int, stop: int):
        super().__init__()
        self.start, self.stop = start, stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.start:self.stop]
