"""Evaluate the cone of some roots of a KLay circuit, fast, forward and backward.

KLay compiles all queries of a program into one layered circuit (its
``CircuitModule``: alternating product and sum layers, each an index of child
positions ``ix_in`` and segment ``offsets``) and evaluates every root with
generic ``segment_reduce`` kernels, whose backward is a scatter. For the small
fan-ins of SDD circuits (products of two children, sums of a few) both are
slow on CPU: most of the time goes to the kernels, not the arithmetic.

:class:`ConeCircuit` reads KLay's layers, keeps only the cone of the roots a
query family needs (the training query needs emotion/3 and valid/2, not the
explanation roots), and evaluates it node-major (``[nodes, batch]``, so each
gather copies whole contiguous rows) with the children padded to the layer's
fan-in. Its backward is written out with gathers over precomputed reverse
tables (which edges read each node) instead of autograd's scatters. Same
circuit, same numbers (tested against KLay's module); written by hand because
no library evaluates an SDD circuit's backward pass this way.

Local layout of every layer: position 0 holds the constant 0 and position 1 the
constant 1 (KLay's input encoding starts with them too, and each layer
recomputes them: 0 * 1 = 0, 1 * 1 = 1, 0 + 0 = 0, 1 + 0 = 1), so padding
children point at the operation's neutral element.
"""
from __future__ import annotations

import torch
from torch import nn

ZERO, ONE = 0, 1


def _bucket(fan_out: int) -> int:
    """Fan-out rounded up to a power of two (0 and 1 -> 1)."""
    return 1 << max(fan_out - 1, 0).bit_length()


def _layer_children(layer) -> list[list[int]]:
    ix_in, offsets = layer.ix_in.tolist(), layer.offsets.tolist()
    return [ix_in[offsets[o]:offsets[o + 1]] for o in range(len(offsets) - 1)]


class ConeCircuit(nn.Module):
    """``forward(x0 [B, input_width]) -> [B, len(roots)]``: the values of ``roots``.

    x0: KLay's input encoding ``[0, 1, pos_1, neg_1, pos_2, neg_2, ...]`` per
        sample (``input_width = 2 + 2 * n_vars``)
    roots: indices of KLay roots (the order in which SDDs were added)
    """

    def __init__(self, klay_module: nn.Module, roots: list[int], input_width: int):
        super().__init__()
        layers = list(klay_module.layers)
        self.is_prod = [type(layer).__name__ == "ProdLayer" for layer in layers]
        if not all(self.is_prod[i] == (i % 2 == 0) for i in range(len(layers))):
            raise ValueError("expected KLay's alternating product/sum layers of the real semiring")
        children = [_layer_children(layer) for layer in layers]
        # From the roots down: per layer, the children of the kept nodes as local ids of the layer below.
        rows_per_layer = []
        wanted = list(roots)  # global ids in this layer's output
        for li in range(len(layers) - 1, -1, -1):
            kids = [children[li][n] for n in wanted]
            if li == 0:  # the input encoding is read by global position (0 and 1 are its constants)
                local = {c: c for ks in kids for c in ks}
            else:
                # ordered by fan-out bucket (see the backward tables below), so that
                # every bucket's gradients land in one contiguous block of rows
                count: dict[int, int] = {}
                for ks in kids:
                    for c in ks:
                        count[c] = count.get(c, 0) + 1
                below = sorted(count, key=lambda c: (_bucket(count[c]), c))
                local = {c: 2 + i for i, c in enumerate(below)}
            constants = [[ZERO, ONE], [ONE, ONE]] if self.is_prod[li] else [[ZERO, ZERO], [ONE, ZERO]]
            rows_per_layer.append(constants + [[local[c] for c in ks] for ks in kids])
            wanted = below if li > 0 else []
        rows_per_layer.reverse()
        self.n_roots = len(roots)
        self.roots = list(roots)
        self.shapes = []  # (width, fan, input width, ((fan-out, nodes) per bucket)) per layer
        for li, rows in enumerate(rows_per_layer):
            width, fan = len(rows), max(len(r) for r in rows)
            pad = ONE if self.is_prod[li] else ZERO
            fwd = torch.full((fan, width), pad, dtype=torch.long)  # child f of node n
            for n, ks in enumerate(rows):
                fwd[:len(ks), n] = torch.tensor(ks)
            # For the backward: the edges (f * width + n) that read each input node.
            # Nodes are bucketed by fan-out (1, 2, 3-4, 5-8, ...) so that padding
            # stays small: per bucket one gather [P, nodes] and a sum over P into
            # the bucket's block of rows (the nodes are numbered bucket by bucket;
            # only the input encoding needs a final reordering). Padding points at
            # edge 0 (a constant's, whose gradient is always 0). Constants get no
            # gradient: no leaf reaches the output through them.
            n_in = input_width if li == 0 else len(rows_per_layer[li - 1])
            # A sum passes its gradient on unchanged, so there a reader is the node
            # itself (read from the layer's gradient directly); a product's reader
            # is the edge (its gradient times the other children).
            edge_grads = self.is_prod[li] and fan > 1
            readers = [[] for _ in range(n_in)]
            for n, ks in enumerate(rows[2:], start=2):
                for f, c in enumerate(ks):
                    if c >= 2:
                        readers[c].append(f * width + n if edge_grads else n)
            buckets: dict[int, list[int]] = {}
            for c, edges in enumerate(readers):
                buckets.setdefault(_bucket(len(edges)), []).append(c)
            order, bucket_shapes = [], []
            for b, (size, nodes) in enumerate(sorted(buckets.items())):
                rev = torch.zeros((size, len(nodes)), dtype=torch.long)
                for j, c in enumerate(nodes):
                    rev[:len(readers[c]), j] = torch.tensor(readers[c], dtype=torch.long)
                self.register_buffer(f"rev{li}_{b}", rev.flatten(), persistent=False)
                bucket_shapes.append((size, len(nodes)))
                order += nodes
            self.register_buffer(f"fwd{li}", fwd.flatten(), persistent=False)
            if order != list(range(n_in)):  # only the input encoding's order is not ours to choose
                inverse = torch.empty(n_in, dtype=torch.long)
                inverse[torch.tensor(order)] = torch.arange(n_in)
                self.register_buffer(f"inv{li}", inverse, persistent=False)
            self.shapes.append((width, fan, n_in, tuple(bucket_shapes)))
        self.n_edges = sum(sum(len(r) for r in rows) for rows in rows_per_layer)

    def forward_table(self, li: int) -> torch.Tensor:
        return getattr(self, f"fwd{li}")  # [F * W]

    def input_grad(self, li: int, edges: torch.Tensor) -> torch.Tensor:
        """Gradients of layer ``li``'s edges ``[F * W, B]`` (products) or nodes
        ``[W, B]`` (sums) -> gradient of its input ``[W_in, B]``."""
        grad = edges.new_empty((self.shapes[li][2], edges.shape[1]))
        start = 0
        for b, (size, n) in enumerate(self.shapes[li][3]):
            rev, block = getattr(self, f"rev{li}_{b}"), grad[start:start + n]  # a block of whole rows
            if size == 1:
                torch.index_select(edges, 0, rev, out=block)
            else:
                torch.sum(edges.index_select(0, rev).view(size, n, -1), 0, out=block)
            start += n
        inverse = getattr(self, f"inv{li}", None)
        return grad if inverse is None else grad.index_select(0, inverse)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        out = _ConeFunction.apply(x0.t().contiguous(), self)  # [W_last, B]
        return out[2:2 + self.n_roots].t()  # [B, R]


class _ConeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cone):  # x: [input_width, B]
        saved = []
        for li, prod in enumerate(cone.is_prod):
            width, fan, _, _ = cone.shapes[li]
            g = x.index_select(0, cone.forward_table(li)).view(fan, width, -1)  # [F, W, B]
            saved.append(g)
            x = g[0]
            for j in range(1, fan):
                x = x * g[j] if prod else x + g[j]
        ctx.cone, ctx.saved = cone, saved
        return x

    @staticmethod
    def backward(ctx, grad):  # grad: [W_last, B]
        cone, saved = ctx.cone, ctx.saved
        gy = grad.contiguous()
        for li in range(len(cone.shapes) - 1, -1, -1):
            width, fan = cone.shapes[li][:2]
            g = saved[li]
            if cone.is_prod[li] and fan > 1:  # d(product)/d(child f) = product of the others
                edges = torch.empty_like(g)
                if fan == 2:
                    torch.mul(gy, g[1], out=edges[0])
                    torch.mul(gy, g[0], out=edges[1])
                else:
                    for f in range(fan):
                        e = gy
                        for j in range(fan):
                            if j != f:
                                e = e * g[j]
                        edges[f] = e
                gy = cone.input_grad(li, edges.view(fan * width, -1))  # [W_in, B]
            else:  # a sum (or a single child) passes its gradient on: readers index gy itself
                gy = cone.input_grad(li, gy)
        ctx.saved = None
        return gy, None
