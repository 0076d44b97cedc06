"""Evaluate, for every sample, only the cone of the roots its own key asks for.

A sample of context ``n1_large`` labelled ``joy`` needs four roots of the
program's circuit (its emotion, ``valid`` and their normalisers) and the nodes
below them: on average 66 of the 906 edges of context_selection's circuit.
Torch's batched kernels (KLay's ``CircuitModule``) evaluate every node for
every sample and pay a kernel launch (and, backward, a scatter) per layer; on
CPU that overhead, not the arithmetic, is the cost. Here one compiled loop
walks each sample's own cone, forward and backward.

The circuit is KLay's layered circuit flattened into a DAG (:class:`FlatCircuit`)
and simplified exactly: a product with the constant 0 among its children is 0;
the constant 1 in a product and 0 in a sum are dropped (``x * 1`` and ``x + 0``
are exact in floating point); a node with one child is that child (KLay's layers
carry a node up to the next layer through such nodes); identical nodes are one
node. Input positions whose literal weight is 0 or 1 for every sample
(unweighted variables) count as those constants.

The same loop also computes the sample's literal weights from the leaves
(network outputs and rule probabilities, :class:`PackedLeaves`) through the
sparse linear map of :class:`LeafEncoding`, and only those its cone reads; its
backward returns the gradients of the leaves. One call per query family, so a
training step is a handful of torch operations around it.

Written by hand (with numba) because no library evaluates a different
sub-circuit per sample; KLay compiles and layers the circuit, this only walks it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

ZERO, ONE = 0, 1  # KLay's input encoding starts with the constants 0 and 1
SUM, PROD = 0, 1
# The numba loops live in cone_kernels.py, imported at the first evaluation:
# numba's import and its first (cached) call cost about 1-2 s, which a process
# that never evaluates a cone (emologic query, see engines/compiled.py) skips.


class FlatCircuit:
    """KLay's layers as one DAG: ids ``0..n_in-1`` are the input encoding, the
    rest internal nodes numbered children first.

    constants: input positions that always hold 0 or 1 -> that constant
    layer_ids[li][o]: the flat id of output ``o`` of KLay layer ``li``
    """

    def __init__(self, klay_module: torch.nn.Module, input_width: int, constants: dict[int, int] | None = None):
        self.n_in = input_width
        self.kind: list[int] = []
        self.children: list[tuple[int, ...]] = []
        known: dict[tuple, int] = {}
        constants = constants or {}
        below = [constants.get(i, i) for i in range(input_width)]  # flat ids of the layer below
        self.layer_ids: list[list[int]] = []
        for layer in klay_module.layers:
            kind = {"ProdLayer": PROD, "SumLayer": SUM}.get(type(layer).__name__)
            if kind is None:
                raise ValueError(f"unexpected KLay layer {type(layer).__name__}")
            ix_in, offsets = layer.ix_in.tolist(), layer.offsets.tolist()
            below = [self._node(kind, [below[c] for c in ix_in[offsets[o]:offsets[o + 1]]], known)
                     for o in range(len(offsets) - 1)]
            self.layer_ids.append(below)

    def _node(self, kind: int, kids: list[int], known: dict) -> int:
        if kind == PROD and ZERO in kids:
            return ZERO
        neutral = ONE if kind == PROD else ZERO
        kids = sorted(k for k in kids if k != neutral)
        if len(kids) <= 1:
            return kids[0] if kids else neutral
        key = (kind, tuple(kids))
        if key not in known:
            known[key] = self.n_in + len(self.kind)
            self.kind.append(kind)
            self.children.append(key[1])
        return known[key]

    def cone(self, roots) -> list[int]:
        """The internal nodes the ``roots`` (flat ids) depend on, children first."""
        seen, stack = set(), [r for r in roots if r >= self.n_in]
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack.extend(c for c in self.children[n - self.n_in] if c >= self.n_in)
        return sorted(seen)  # a node's id is larger than its children's


@dataclass
class PackedLeaves:
    """A batch's leaves, as the cone kernels read them.

    values: the networks' outputs, flattened (1-D; float32 or float64)
    offsets: [B, n_blocks] long, where sample b's row of (network, source)
        block j starts in ``values`` (-1: not evaluated for that sample)
    rules: [n_rule_columns] the rule probabilities the circuit reads
    """

    values: torch.Tensor
    offsets: torch.Tensor
    rules: torch.Tensor

    @classmethod
    def pack(cls, outputs: list[torch.Tensor], masks: list[torch.Tensor | None], rules: torch.Tensor,
             batch_size: int) -> "PackedLeaves":
        """One group of consecutive blocks per network call: ``outputs[g]``
        ``[n, K]`` holds the rows of the True entries of ``masks[g]`` (``[B,
        J]`` bool, numpy or torch: block j evaluated for sample b), sample by
        sample and block by block within a sample; a mask of None: one block,
        every sample."""
        dtype = outputs[0].dtype if outputs else rules.dtype
        offsets, start = [], 0
        for y, mask in zip(outputs, masks):  # numpy: bookkeeping without gradients
            k = y.shape[1]
            if mask is None:
                offsets.append(np.arange(start, start + y.numel(), k)[:, None])
            else:
                mask = np.asarray(mask, dtype=bool)
                rank = mask.reshape(-1).cumsum().reshape(mask.shape) - 1  # row of (b, j) in y
                offsets.append(np.where(mask, start + rank * k, -1))
            start += y.numel()
        if not outputs:
            return cls(torch.zeros(0, dtype=dtype), torch.zeros((batch_size, 0), dtype=torch.long), rules.to(dtype))
        values = torch.cat([y.reshape(-1) for y in outputs]) if len(outputs) > 1 else outputs[0].reshape(-1)
        return cls(values, torch.from_numpy(np.concatenate(offsets, 1).astype(np.int64)), rules.to(dtype))

    def dense(self, block_sizes) -> torch.Tensor:
        """``[B, sum(block_sizes)]``: every block's row per sample, 0 where not evaluated."""
        cols = []
        for j, k in enumerate(block_sizes):
            at = self.offsets[:, j]
            rows = self.values[at.clamp_min(0)[:, None] + torch.arange(k)]
            cols.append(torch.where((at >= 0)[:, None], rows, 0))
        return torch.cat(cols, 1) if cols else self.values.new_zeros((len(self.offsets), 0))


class LeafEncoding:
    """KLay's input encoding as a sparse linear map of the leaves:
    ``x0[p] = const[p] + sum coef * leaf`` over position ``p``'s terms, a leaf
    being entry ``index`` of block ``block``'s row (or, with ``block = -1``,
    rule column ``index``). Read off the dense matrix ``[1 + leaves, n_in]``
    whose leaf rows are the blocks' columns in order, then the rule columns."""

    def __init__(self, weight_matrix: torch.Tensor, block_sizes: list[int]):
        m = weight_matrix.double()
        where = [(j, i) for j, k in enumerate(block_sizes) for i in range(k)]
        where += [(-1, i) for i in range(m.shape[0] - 1 - len(where))]
        term_start, block, index, coef = [0], [], [], []
        for p in range(m.shape[1]):
            for leaf in m[1:, p].nonzero().flatten().tolist():
                block.append(where[leaf][0])
                index.append(where[leaf][1])
                coef.append(float(m[1 + leaf, p]))
            term_start.append(len(block))
        self.const = m[0].numpy().copy()
        self.ints = (np.asarray(term_start, dtype=np.int64), np.asarray(block, dtype=np.int64),
                     np.asarray(index, dtype=np.int64))
        self.coef = np.asarray(coef, dtype=np.float64)
        self._typed: dict = {}

    def arrays(self, dtype) -> tuple:
        """What the kernels read, with the constants in the leaves' precision."""
        if dtype not in self._typed:
            self._typed[dtype] = (self.const.astype(dtype), *self.ints, self.coef.astype(dtype))
        return self._typed[dtype]


class KeyedCone:
    """``(leaves, keys [B]) -> [B, R]``: for each sample with key ``k``,
    ``value(num[k, r]) / value(den[k, r])``, computed from the cone of those
    nodes only. Values and gradients are exact (same operations as the circuit).

    num, den: [K, R] flat node ids per key (a query's root and its normaliser's)

    Each key's cone is renumbered locally, so a sample stores only its inputs
    and its own cone's values: a node's children are codes ``c < n_in`` (input
    ``c``) or ``n_in + i`` (the key's ``i``-th node).
    """

    def __init__(self, flat: FlatCircuit, encoding: LeafEncoding, num: list[list[int]], den: list[list[int]]):
        n_in = flat.n_in
        self.n_in, self.n_keys, self.encoding = n_in, len(num), encoding
        self.circuit_edges = sum(len(c) for c in flat.children)
        kinds, child_start, children, node_start, outputs = [], [0], [], [0], []
        input_start, inputs = [0], []
        self.edges_per_key = []
        for n, d in zip(num, den):
            nodes = flat.cone(n + d)
            local = {g: n_in + i for i, g in enumerate(nodes)}
            code = lambda g: g if g < n_in else local[g]  # noqa: E731
            read = set()
            for g in nodes:
                kinds.append(flat.kind[g - n_in])
                children += [code(c) for c in flat.children[g - n_in]]
                read.update(c for c in flat.children[g - n_in] if c < n_in)
                child_start.append(len(children))
            read.update(g for g in n + d if g < n_in)
            inputs += sorted(read - {ZERO, ONE})
            input_start.append(len(inputs))
            node_start.append(len(kinds))
            outputs.append([code(g) for g in n + d])
            self.edges_per_key.append(child_start[-1] - child_start[node_start[-2]])
        self.width = max(1, max(b - a for a, b in zip(node_start, node_start[1:])))  # nodes of the largest cone
        self.arrays = (  # what the kernels read, in their argument order
            np.asarray(input_start, dtype=np.int64),  # key k's inputs: inputs[input_start[k]:input_start[k + 1]]
            np.asarray(inputs, dtype=np.int64),
            np.asarray(node_start, dtype=np.int64),  # key k's nodes: node_start[k]:node_start[k + 1]
            np.asarray(kinds, dtype=np.int8),
            np.asarray(child_start, dtype=np.int64),
            np.asarray(children, dtype=np.int64),
            np.asarray(outputs, dtype=np.int64).reshape(len(num), -1),  # [K, 2R]: numerators, then denominators
        )

    def __call__(self, leaves: PackedLeaves, keys: torch.Tensor) -> torch.Tensor:
        device = leaves.values.device
        out = _KeyedConeFunction.apply(leaves.values.cpu(), leaves.rules.cpu(), leaves.offsets.cpu(), keys.cpu(), self)
        return out.to(device)


class _Workspace:
    """Reused scratch arrays. A fresh array of a few hundred kilobytes comes
    from the OS page by page on first touch, and on this machine that costs
    more than the walk itself; a batch's arrays are taken here and given back
    when its backward pass (or a forward pass without gradients) is done."""

    def __init__(self, keep: int = 4):
        self.keep = keep
        self.free: dict[tuple, list[np.ndarray]] = {}

    def take(self, shape: tuple, dtype) -> np.ndarray:
        arrays = self.free.get((shape, np.dtype(dtype)))
        return arrays.pop() if arrays else np.empty(shape, dtype=dtype)

    def give(self, *arrays: np.ndarray) -> None:
        for a in arrays:
            kept = self.free.setdefault((a.shape, a.dtype), [])
            if len(kept) < self.keep:
                kept.append(a)


_WORKSPACE = _Workspace()


class _KeyedConeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values, rules, offsets, keys, cone):
        y = values.detach().contiguous().numpy()
        r = rules.detach().to(values.dtype).contiguous().numpy()
        off = offsets.to(torch.int64).contiguous().numpy()
        k = keys.detach().to(torch.int64).contiguous().numpy()
        vals = _WORKSPACE.take((len(k), cone.n_in + cone.width), y.dtype)
        out = np.empty((len(k), cone.arrays[-1].shape[1] // 2), dtype=y.dtype)
        from logic.engines.cone_kernels import _forward

        _forward(y, r, off, k, *cone.encoding.arrays(y.dtype), *cone.arrays, vals, out)
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            ctx.saved = (y, r, off, k, vals, cone)
        else:
            _WORKSPACE.give(vals)
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.saved is None:
            raise RuntimeError("the cone's backward pass runs once per forward pass (no retain_graph)")
        y, r, off, k, vals, cone = ctx.saved
        ctx.saved = None
        g = grad_out.detach().contiguous().numpy().astype(vals.dtype, copy=False)
        grad = _WORKSPACE.take(vals.shape, vals.dtype)
        gy, gr = np.zeros_like(y), np.zeros_like(r)
        from logic.engines.cone_kernels import _backward

        _backward(g, off, k, *cone.encoding.arrays(y.dtype), *cone.arrays, vals, grad, gy, gr)
        _WORKSPACE.give(vals, grad)
        return torch.from_numpy(gy), torch.from_numpy(gr), None, None, None
