"""The per-sample cone evaluator computes exactly what KLay's own module
computes, values and gradients, for every program's query families."""
from __future__ import annotations

import pytest
import torch

from logic.engines.cone import ONE, PROD, SUM, ZERO, FlatCircuit, PackedLeaves
from logic.given import GivenSlice
from logic.inputs import given_networks
from logic.model import LogicModel
from logic.program import available_programs, load_program

pytestmark = pytest.mark.usefixtures("float64")


def families():
    for name in available_programs("image"):
        program = load_program(name, check_bindings=False)
        cp = LogicModel(program, given_networks(program)).engine.compiled
        for family in ("main", "label", "explain"):
            yield pytest.param(cp.queries, cp.key_terms(family), id=f"{name}-{family}")
    cp = LogicModel("clip_sentiment", {"multimodal_emotion": GivenSlice(0, 7),
                                       "multimodal_sentiment": GivenSlice(7, 10)}).engine.compiled
    for family in ("main", "label", "explain"):
        yield pytest.param(cp.queries, cp.key_terms(family), id=f"clip_sentiment-{family}")


def random_leaves(cq, b: int, g: torch.Generator, dtype=torch.float64) -> tuple[PackedLeaves, list]:
    """Random network outputs for every block and sample and random rule
    probabilities, requiring gradients (returned as the second value)."""
    outputs = {block: torch.rand(b, k, generator=g, dtype=dtype).requires_grad_()
               for block, k in zip(cq.nn_blocks, cq.block_sizes)}
    rules = torch.rand(max(cq.rule_params, default=-1) + 1, generator=g, dtype=dtype).requires_grad_()
    return cq.pack_all(outputs, rules, b), [*outputs.values(), rules]


@pytest.mark.parametrize("cq, key_terms", list(families()))
def test_cone_matches_klay_module(cq, key_terms):
    """Every key, on random leaves: P(term) and its gradients with respect to
    the network outputs and the rule probabilities, against KLay's module
    evaluating every root for every sample on the dense encoding."""
    keyed = cq.cone(key_terms)
    g = torch.Generator().manual_seed(0)
    keys = torch.arange(len(key_terms)).repeat_interleave(3)
    leaves, params = random_leaves(cq, len(keys), g)
    ours = keyed(leaves, keys)  # [b, R]
    x0 = cq.encode(leaves)
    full = cq.circuit(x0[:, 2::2], x0[:, 3::2])  # KLay's module: every root for every sample
    num = torch.tensor([[cq.roots[t][0] for t in key_terms[k]] for k in keys.tolist()])
    den = torch.tensor([[cq.roots[t][1] for t in key_terms[k]] for k in keys.tolist()])
    reference = full.gather(1, num) / full.gather(1, den)
    assert ours.shape == reference.shape
    assert (ours - reference).abs().max() <= 1e-12 * reference.abs().max()
    w = torch.rand(ours.shape, generator=g)
    ours_grad = torch.autograd.grad((ours * w).sum(), params, allow_unused=True, retain_graph=True)
    ref_grad = torch.autograd.grad((reference * w).sum(), params, allow_unused=True)
    for a, r in zip(ours_grad, ref_grad):
        a = torch.zeros_like(r) if a is None and r is not None else a
        assert (a is None) == (r is None)
        if r is not None:
            assert (a - r).abs().max() <= 1e-12 * max(1.0, r.abs().max())
    assert any(r is not None and r.abs().max() > 0 for r in ref_grad)
    # each sample walks its own cone only, a fraction of the circuit
    assert len(key_terms) == 1 or max(keyed.edges_per_key) < keyed.circuit_edges


def test_samples_read_only_the_blocks_they_were_given():
    """Each block evaluated only for the samples whose context reads it: the
    others' cones never read it (the kernel refuses to read a row that was not
    evaluated), and each sample's answer equals its answer evaluated alone."""
    program = load_program("context_selection", check_bindings=False)
    model = LogicModel(program, given_networks(program))
    cp = model.engine.compiled
    cq = cp.queries
    g = torch.Generator().manual_seed(1)
    contexts = torch.arange(len(cp.contexts)).repeat(2)
    rules = model.engine.rule_probs_tensor().detach()
    per_sample = {block: torch.rand(len(contexts), k, generator=g) for block, k in zip(cq.nn_blocks, cq.block_sizes)}

    def evaluate(samples):
        outputs, masks = [], []
        for _, js in cq.groups:
            mask = cp.needs[contexts[samples]][:, js]  # [b, J]
            stacked = torch.stack([per_sample[cq.nn_blocks[j]][samples] for j in js], 1)  # [b, J, K]
            outputs.append(stacked[mask])
            masks.append(mask)
        return cp.cone("main")(cq.pack(outputs, masks, rules, len(samples)), contexts[samples])

    together = evaluate(torch.arange(len(contexts)))
    assert together.isfinite().all()
    for i in range(len(contexts)):
        torch.testing.assert_close(evaluate(torch.tensor([i]))[0], together[i], rtol=0, atol=0)
    # a sample whose cone reads a block nobody evaluated for it is refused
    n1 = torch.tensor([cp.contexts.index("n1_large")])
    nothing = [torch.zeros(0, cq.block_sizes[js[0]]) for _, js in cq.groups]
    empty = [torch.zeros(1, len(js), dtype=torch.bool) for _, js in cq.groups]
    with pytest.raises(ValueError, match="not evaluated"):
        cp.cone("main")(cq.pack(nothing, empty, rules, 1), n1)


def test_float32_matches_float64():
    program = load_program("context_selection", check_bindings=False)
    cp = LogicModel(program, given_networks(program)).engine.compiled
    keyed = cp.cone("label")
    keys = torch.arange(40) % keyed.n_keys
    leaves, _ = random_leaves(cp.queries, 40, torch.Generator().manual_seed(0))
    leaves32 = PackedLeaves(leaves.values.detach().float(), leaves.offsets, leaves.rules.detach().float())
    p64, p32 = keyed(leaves, keys), keyed(leaves32, keys)
    assert p32.dtype == torch.float32
    assert torch.allclose(p32.double(), p64, rtol=1e-5, atol=1e-6)


def test_keys_out_of_range_are_refused():
    program = load_program("source_selection", check_bindings=False)
    cp = LogicModel(program, given_networks(program)).engine.compiled
    leaves, _ = random_leaves(cp.queries, 2, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="keys must lie in"):
        cp.cone("main")(leaves, torch.tensor([0, len(cp.contexts)]))


class _Layer(torch.nn.Module):
    def __init__(self, children: list[list[int]]):
        super().__init__()
        self.ix_in = torch.tensor([c for cs in children for c in cs])
        self.offsets = torch.tensor([0] + [len(cs) for cs in children]).cumsum(0)


class ProdLayer(_Layer):
    pass


class SumLayer(_Layer):
    pass


def test_flattening_simplifies_exactly():
    """Inputs 0, 1 (the constants), x2, x3, x4 and x5 (always 1). Each layer's
    outputs 0 and 1 recompute the constants, as KLay's do."""
    module = torch.nn.Module()
    module.layers = torch.nn.Sequential(
        ProdLayer([[0, 1], [1, 1], [2, 1], [2, 0], [2, 3], [3, 2], [4, 5]]),
        SumLayer([[0, 0], [1, 0], [2, 3], [4, 6], [6]]),
    )
    flat = FlatCircuit(module, 6, constants={5: ONE})
    # x2 * 1 = x2, x2 * 0 = 0, x2 * x3 and x3 * x2 are one node (6), x4 * x5 = x4
    assert flat.layer_ids[0] == [ZERO, ONE, 2, ZERO, 6, 6, 4]
    # x2 + 0 = x2, (x2 * x3) + x4 is node 7, a single child passes through
    assert flat.layer_ids[1] == [ZERO, ONE, 2, 7, 4]
    assert flat.children == [(2, 3), (4, 6)] and flat.kind == [PROD, SUM]
    assert flat.cone([7]) == [6, 7] and flat.cone([2, ONE]) == []
