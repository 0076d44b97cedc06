"""Shared builders for the logic tests (they live in the library: logic/inputs.py)."""
import torch

from logic.inputs import (  # noqa: F401
    ALL_LAYOUTS,
    face_boxes,
    given_networks,
    make_batch,
    random_outputs,
    random_rule_probs,
)


def explained_with_rule_grad(model, engine: str, batch, rule_probs, loss_of):
    """``model(batch, explain=True)`` at ``rule_probs``, with ``loss_of(out)``
    backpropagated: (out, d loss / d rule probabilities) under either engine
    (the compiled one takes the probabilities as a tensor, DeepProbLog keeps
    its own and reports their gradients)."""
    model.set_rule_probabilities(rule_probs)
    if engine == "compiled":
        rp = torch.tensor(rule_probs, requires_grad=True)
        out = model(batch, explain=True, rule_probs=rp)
    else:
        model.engine.zero_grad()
        out = model(batch, explain=True)
    loss_of(out).backward()
    return out, rp.grad if engine == "compiled" else torch.tensor(model.engine.rule_grads())
