"""The cone evaluator computes exactly what KLay's own module computes, values
and gradients, for every program's query families."""
from __future__ import annotations

import pytest
import torch

from logic.clip_model import ClipLogicModel
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
            yield pytest.param(cp.queries, lambda cp=cp, f=family: getattr(cp, f + "_cone")(), id=f"{name}-{family}")
    engine = ClipLogicModel(networks={"multimodal_emotion": GivenSlice(0, 7),
                                      "multimodal_sentiment": GivenSlice(7, 10)}).engine
    yield pytest.param(engine.cq, lambda: engine.cq.cone("all", [engine.terms]), id="clip_sentiment-all")


@pytest.mark.parametrize("cq, make", list(families()))
def test_cone_matches_klay_module(cq, make):
    keyed = make()
    cone = keyed.circuit
    g = torch.Generator().manual_seed(0)
    b, n_vars = 9, (cq.weight_matrix.shape[1] - 2) // 2
    pos = torch.rand(b, n_vars, generator=g).requires_grad_()
    neg = torch.rand(b, n_vars, generator=g).requires_grad_()
    x0 = torch.cat([torch.zeros(b, 1), torch.ones(b, 1), torch.stack([pos, neg], -1).flatten(1)], 1)
    ours = cone(x0)  # [b, R]
    reference = cq.circuit(pos, neg)[:, cone.roots]  # KLay's module: every root, then the cone's
    assert ours.shape == reference.shape and cone.n_edges > 0
    assert (ours - reference).abs().max() <= 1e-12 * reference.abs().max()
    w = torch.rand(ours.shape, generator=g)
    ours_grad = torch.autograd.grad((ours * w).sum(), [pos, neg])
    ref_grad = torch.autograd.grad((reference * w).sum(), [pos, neg])
    for a, r in zip(ours_grad, ref_grad):
        assert (a - r).abs().max() <= 1e-12 * max(1.0, r.abs().max())
    assert max(r.abs().max() for r in ref_grad) > 0


def test_keys_pick_each_samples_roots():
    """A batch mixing contexts: each sample reads its own context's answers."""
    program = load_program("context_selection", check_bindings=False)
    cp = LogicModel(program, given_networks(program)).engine.compiled
    keyed = cp.main_cone()
    b, n_vars = len(cp.contexts), (cp.queries.weight_matrix.shape[1] - 2) // 2
    pos, neg = torch.rand(b, n_vars), torch.rand(b, n_vars)
    x0 = torch.cat([torch.zeros(b, 1), torch.ones(b, 1), torch.stack([pos, neg], -1).flatten(1)], 1)
    keys = torch.arange(b).flip(0)
    got = keyed(x0, keys)  # [b, E + 1]
    full = cp.queries.circuit(pos, neg)  # KLay's module: every root
    for i, k in enumerate(keys.tolist()):
        terms = cp.emotion_terms[k] + [cp.valid_terms[k]]
        expected = torch.stack([full[i, cp.queries.roots[t][0]] / full[i, cp.queries.roots[t][1]] for t in terms])
        assert torch.allclose(got[i], expected)
