"""Evaluate a KLay circuit on a batch, each sample only on the roots it asks for.

KLay compiles all queries of a program into one layered circuit (its
``CircuitModule``: alternating product and sum layers, each an index of child
positions ``ix_in`` and segment ``offsets``) and evaluates *every* root for
*every* sample. A training batch mixes contexts, and each sample needs only its
own context's roots (2 of 57 for the label query of context_selection): on CPU
most of KLay's time then goes to roots nobody reads, in generic
``segment_reduce`` kernels.

:class:`ConeCircuit` reads KLay's layers and, for each *key* (a context, a
(context, label) pair, ...), keeps the cone of the roots that key asks for,
renumbered into a short per-layer local vector. A batch then evaluates every
layer as one ``gather`` over a ``[B, width]`` tensor with per-sample child
indices and a product or sum over a small fan-in. Same circuit, same numbers
(tested against KLay's module); no library evaluates per-sample sub-circuits,
hence this file.

Local layout of every layer: position 0 holds the constant 0 and position 1 the
constant 1 (KLay's input encoding starts with them too, and each layer
recomputes them: prod(1, 1) = 1, sum(0, 0) = 0, ...), so padding children point
at the operation's neutral element and padded nodes stay finite.
"""
from __future__ import annotations

import torch
from torch import nn

ZERO, ONE = 0, 1


def _layer_children(layer) -> list[list[int]]:
    ix_in, offsets = layer.ix_in.tolist(), layer.offsets.tolist()
    return [ix_in[offsets[o]:offsets[o + 1]] for o in range(len(offsets) - 1)]


class ConeCircuit(nn.Module):
    """``forward(x0 [B, 2 + 2 * n_vars], keys [B]) -> [B, R]``: the roots ``root_lists[key]``.

    x0: KLay's input encoding, ``[0, 1, pos_1, neg_1, pos_2, neg_2, ...]`` per sample
    root_lists: one list of root indices per key, all of length R (pad by repeating)
    """

    def __init__(self, klay_module: nn.Module, root_lists: list[list[int]]):
        super().__init__()
        layers = list(klay_module.layers)
        is_prod = [type(layer).__name__ == "ProdLayer" for layer in layers]
        if not all(is_prod[i] == (i % 2 == 0) for i in range(len(layers))):
            raise ValueError("expected KLay's alternating product/sum layers of the real semiring")
        children = [_layer_children(layer) for layer in layers]
        widths = {len(r) for r in root_lists}
        if len(widths) != 1:
            raise ValueError("every key must ask for the same number of roots")
        self.n_roots = widths.pop()
        # Walk each key's cone from its roots down: local node lists per layer.
        per_key = []  # [key][layer] -> child rows (local ids in the layer below), constants first
        for roots in root_lists:
            wanted = list(roots)  # global ids in this layer's output
            tables = []
            for li in range(len(layers) - 1, -1, -1):
                kids = [children[li][n] for n in wanted]
                if li == 0:  # the input encoding is read by global position (0 and 1 are its constants)
                    local = {c: c for ks in kids for c in ks}
                else:
                    below = sorted({c for ks in kids for c in ks})
                    local = {c: 2 + i for i, c in enumerate(below)}
                # local 0 and 1 recompute the constants: 0*1 = 0, 1*1 = 1; 0+0 = 0, 1+0 = 1
                constants = [[ZERO, ONE], [ONE, ONE]] if is_prod[li] else [[ZERO, ZERO], [ONE, ZERO]]
                tables.append(constants + [[local[c] for c in ks] for ks in kids])
                wanted = below if li > 0 else []
            per_key.append(tables[::-1])
        self.is_prod = is_prod
        self.widths = []
        index_tables = []
        for li in range(len(layers)):
            width = max(len(t[li]) for t in per_key)
            fan = max(len(ks) for t in per_key for ks in t[li])
            pad = ONE if is_prod[li] else ZERO
            table = torch.full((len(per_key), width, fan), pad, dtype=torch.long)
            for k, t in enumerate(per_key):
                for n, ks in enumerate(t[li]):
                    table[k, n, :len(ks)] = torch.tensor(ks)
                    table[k, n, len(ks):] = pad
            self.widths.append((width, fan))
            index_tables.append(table.flatten(1))  # [K, width * fan]
        # one lookup per batch for all layers: [K, sum(width * fan)]
        self.register_buffer("table", torch.cat(index_tables, 1), persistent=False)
        self.edges_per_key = [sum(len(ks) for rows in t for ks in rows) for t in per_key]

    def forward(self, x0: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        idx = self.table[keys]  # [B, sum(width * fan)]
        x, start = x0, 0
        for prod, (width, fan) in zip(self.is_prod, self.widths):
            g = x.gather(1, idx[:, start:start + width * fan]).view(-1, width, fan)  # [B, width, fan]
            start += width * fan
            if fan == 1:
                x = g[..., 0]
            elif prod:  # explicit products: prod()'s backward is slow and special-cases zeros
                x = g[..., 0]
                for j in range(1, fan):
                    x = x * g[..., j]
            else:
                x = g.sum(-1)
        return x[:, 2:2 + self.n_roots]  # [B, R]
