"""How the ``compiled`` engine holds a program's ``t(_)`` parameters: unconstrained
logits, a softmax per annotated disjunction (a sigmoid for a single probabilistic
fact), so that any torch optimizer can train them."""
from __future__ import annotations

import torch
from torch import nn

from logic.program import Program


class RuleLogits(nn.Module):
    """A program's rule parameters as logits; ``probs()`` -> [n_params] probabilities."""

    def __init__(self, program: Program):
        super().__init__()
        self.program = program
        self.logits = nn.Parameter(torch.zeros(program.n_params, dtype=torch.float64))
        # One row of logit slots per group for one softmax over all groups. A
        # probabilistic fact (one choice) gets a second slot holding the
        # constant logit 0: softmax([x, 0])[0] = sigmoid(x). Slot n holds that
        # 0, slot n + 1 is -inf (padding).
        n = program.n_params
        rows = [list(g.params) + ([n] if len(g.params) == 1 else []) for g in program.groups]
        width = max((len(r) for r in rows), default=0)
        rows = [r + [n + 1] * (width - len(r)) for r in rows]
        position = [0] * n
        for gi, g in enumerate(program.groups):
            for j, param in enumerate(g.params):
                position[param] = gi * width + j
        self.register_buffer("_slots", torch.tensor(rows, dtype=torch.long).reshape(len(rows), width),
                             persistent=False)  # [G, W]
        self.register_buffer("_position", torch.tensor(position, dtype=torch.long), persistent=False)  # [n]
        self.set(program.initial_probabilities())

    def probs(self) -> torch.Tensor:
        """[n_params] probabilities: softmax of the logits within each group
        (a single-choice group is a probabilistic fact: sigmoid)."""
        if not len(self._position):
            return self.logits
        extended = torch.cat([self.logits, self.logits.new_tensor([0.0, float("-inf")])])
        return torch.softmax(extended[self._slots], dim=1).flatten()[self._position]

    def set(self, probs) -> None:
        p = torch.as_tensor(probs, dtype=torch.float64).clamp(1e-12, 1.0)
        with torch.no_grad():
            for g in self.program.groups:
                idx = list(g.params)
                self.logits[idx] = torch.logit(p[idx]) if len(idx) == 1 else p[idx].log()
