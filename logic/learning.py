"""Logic-only learning: fit the rule parameters of a program on fixed networks."""
from __future__ import annotations

from typing import Iterable

import torch

from logic.model import LogicModel


def train_rules(
    model: LogicModel,
    batches: Iterable,
    epochs: int = 1,
    lr: float = 0.1,
    optimizer: str = "adam",
    class_weights: torch.Tensor | None = None,
) -> list[float]:
    """Minimise the labels' negative log-likelihood over the rule parameters only.

    ``batches`` is re-iterated every epoch (a list or a re-iterable loader).
    Network parameters get no update (their gradients are cleared, not applied).
    With the ``deepproblog`` engine the update is DeepProbLog's ``SGD(param_lr=lr)``.
    Returns the mean loss per epoch.
    """
    opt = model.rule_optimizer(lr, kind=optimizer)
    history = []
    for _ in range(epochs):
        total, n = 0.0, 0
        for batch in batches:
            opt.zero_grad()
            loss = model.nll(batch, class_weights)
            loss.backward()
            opt.step()
            model.networks.zero_grad(set_to_none=True)
            total += float(loss) * len(batch)
            n += len(batch)
        history.append(total / max(n, 1))
    return history
