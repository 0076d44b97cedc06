"""Networks whose outputs are already known.

When the networks are frozen their outputs never change, so the harness
computes them once per sample and binds the program's neural predicates to
these stand-ins, which read the precomputed distributions from the batch.
Tests use them to feed chosen distributions to the engines.
:func:`given_networks` binds every network of a program to its stand-in, laid
out as the program's source table says (``Program.sources``).
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


def given_networks(program) -> dict:
    """Stand-ins for every network of ``program`` that read precomputed outputs from
    the batch (:mod:`logic.given`), laid out as :attr:`logic.sources.Source.columns`
    says: a network that reads a source alone gets the whole tensor, one of several
    reading the same source gets its own columns."""
    from logic.program import ProgramError

    layout: dict[str, tuple[int, int] | None] = {}  # network -> its columns (None: the whole tensor)
    for src in program.sources.values():
        for net, columns in src.columns.items():
            cols = None if len(src.networks) == 1 else columns
            if layout.setdefault(net, cols) != cols:
                raise ProgramError(f"{program.path.name}: network {net} reads source {src.name} in other "
                                   "columns than its other sources; precomputed outputs cannot serve it")
    return {net: Given() if cols is None else GivenSlice(*cols) for net, cols in layout.items()}
