"""Learnable rule parameters, shared by every kind of program.

:class:`RuleLogits` is how the ``compiled`` engine holds a program's ``t(_)``
parameters: unconstrained logits, a softmax per annotated disjunction (a sigmoid
for a single probabilistic fact), so any torch optimizer can train them.
:class:`RulesMixin` gives a model over either engine the same parameter API:
named tables, resets, an optimizer, save/load.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from logic.program import Program
from neural.errors import UserError


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


class RulesMixin:
    """The rule-parameter API of a model with ``program``, ``engine`` (which has
    ``rule_probs()``/``set_rule_probs()``; the compiled one also ``rules``, a
    :class:`RuleLogits`) and ``engine_name``."""

    program: Program
    engine_name: str

    def rule_probabilities(self) -> list[float]:
        return self.engine.rule_probs()

    def set_rule_probabilities(self, probs) -> None:
        self.engine.set_rule_probs(list(probs))

    def reset_rules(self, kind: str = "program") -> None:
        """``program``: the file's initial values; ``uniform``: uniform per group."""
        if kind == "program":
            self.set_rule_probabilities(self.program.initial_probabilities())
        elif kind == "uniform":
            probs = [0.0] * self.program.n_params
            for g in self.program.groups:
                for i in g.params:
                    probs[i] = 1.0 / len(g.params) if len(g.params) > 1 else 0.5
            self.set_rule_probabilities(probs)
        else:
            raise ValueError(f"unknown rule initialisation {kind!r}")

    def rule_table(self) -> dict[str, dict[str, float]]:
        probs = self.rule_probabilities()
        return {g.key: {o: probs[i] for o, i in zip(g.options, g.params)} for g in self.program.groups}

    def rule_optimizer(self, lr: float, kind: str = "adam"):
        """An optimizer over the rule parameters with ``zero_grad()``/``step()``."""
        if self.engine_name == "deepproblog":
            self.engine.set_lr(lr)
            return self.engine  # DeepProbLog's own SGD(param_lr)
        optimizers = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}
        if kind not in optimizers:
            raise ValueError(f"unknown optimizer {kind!r}; known: {', '.join(optimizers)}")
        return optimizers[kind]([self.engine.rules.logits], lr=lr)

    def rules_state(self) -> dict:
        return {
            "program": self.program.name,
            "program_path": str(self.program.path),
            "engine": self.engine_name,
            "probabilities": self.rule_probabilities(),
            "groups": self.rule_table(),
        }

    def save_rules(self, path: str | Path) -> None:
        from neural.files import atomic_write_bytes

        atomic_write_bytes(Path(path), json.dumps(self.rules_state(), indent=2).encode())

    def load_rules(self, path: str | Path) -> None:
        state = json.loads(Path(path).read_text())
        if state.get("program") != self.program.name:
            raise UserError(f"{path}: rules of program {state.get('program')!r}, not {self.program.name!r}")
        self.set_rule_probabilities(state["probabilities"])
