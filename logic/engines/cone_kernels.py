"""The compiled loops of ``engines/cone.py``: one sample's cone, forward and backward.

Kept apart, and imported by ``cone.py`` at the first evaluation, so that
importing the engine does not import numba (about a second, and its first
call another second even from numba's on-disk cache): a process that never
walks a cone never pays for it.
"""
from __future__ import annotations

from numba import njit

from logic.engines.cone import ONE, PROD, SUM, ZERO


# One sample's values: ``v[:n_in]`` its literal weights (only those its cone
# reads are computed), then its cone's nodes. Reading the literal weights from a
# separate array instead would cost a branch per child, three times slower.

@njit(cache=True, nogil=True)
def _forward(y, rules, offsets, keys, const, term_start, term_block, term_index, term_coef,
             input_start, inputs, node_start, kind, child_start, children, outputs, vals, out):
    n_out = out.shape[1]
    n_in = const.shape[0]
    for b in range(keys.shape[0]):
        v, k = vals[b], keys[b]
        if k < 0 or k >= node_start.shape[0] - 1:
            raise ValueError("keys must lie in 0..K-1 for a cone of K keys")
        v[ZERO] = 0
        v[ONE] = 1
        for i in range(input_start[k], input_start[k + 1]):
            p = inputs[i]
            acc = const[p]
            for t in range(term_start[p], term_start[p + 1]):
                blk = term_block[t]
                if blk < 0:
                    acc += term_coef[t] * rules[term_index[t]]
                else:
                    at = offsets[b, blk]
                    if at < 0:
                        raise ValueError("a sample's cone reads a network output that was not evaluated for it")
                    acc += term_coef[t] * y[at + term_index[t]]
            v[p] = acc
        first = node_start[k]
        for j in range(first, node_start[k + 1]):
            s, e = child_start[j], child_start[j + 1]
            acc = v[children[s]]
            if kind[j] == PROD:
                for c in range(s + 1, e):
                    acc *= v[children[c]]
            else:
                for c in range(s + 1, e):
                    acc += v[children[c]]
            v[n_in + j - first] = acc
        for r in range(n_out):
            out[b, r] = v[outputs[k, r]] / v[outputs[k, n_out + r]]


@njit(cache=True, nogil=True)
def _backward(grad_out, offsets, keys, const, term_start, term_block, term_index, term_coef,
              input_start, inputs, node_start, kind, child_start, children, outputs, vals, grad, gy, gr):
    n_out = grad_out.shape[1]
    n_in = const.shape[0]
    for b in range(keys.shape[0]):
        v, g, k = vals[b], grad[b], keys[b]
        first, last = node_start[k], node_start[k + 1]
        g[:n_in + last - first] = 0
        for r in range(n_out):  # d(a / d) = da / d - a dd / d^2
            a, d = outputs[k, r], outputs[k, n_out + r]
            q = grad_out[b, r] / v[d]
            g[a] += q
            g[d] -= q * v[a] / v[d]
        for j in range(last - 1, first - 1, -1):
            s, e = child_start[j], child_start[j + 1]
            gn = g[n_in + j - first]
            if kind[j] == SUM:
                for c in range(s, e):
                    g[children[c]] += gn
            elif e - s == 2:  # most products (SDD elements: prime * sub)
                c0, c1 = children[s], children[s + 1]
                g[c0] += gn * v[c1]
                g[c1] += gn * v[c0]
            else:  # d(product)/d(child) = the product of the other children
                for c in range(s, e):
                    p = gn
                    for o in range(s, e):
                        if o != c:
                            p *= v[children[o]]
                    g[children[c]] += p
        for i in range(input_start[k], input_start[k + 1]):  # through the linear encoding to the leaves
            p = inputs[i]
            gp = g[p]
            for t in range(term_start[p], term_start[p + 1]):
                blk = term_block[t]
                if blk < 0:
                    gr[term_index[t]] += term_coef[t] * gp
                else:
                    gy[offsets[b, blk] + term_index[t]] += term_coef[t] * gp
