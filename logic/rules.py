"""Learnable rule parameters, shared by every kind of program.

:class:`RulesMixin` gives a model over any engine (``logic/engines``) the same
parameter API: named tables, resets, an optimizer, save/load. How the
parameters are held is the engine's business (the ``compiled`` engine:
:class:`logic.engines.rule_logits.RuleLogits`).
"""
from __future__ import annotations

import json
from pathlib import Path

from logic.program import Program, ProgramError
from neural.common import UserError


class RulesMixin:
    """The rule-parameter API of a model with ``program`` and ``engine`` (a
    :class:`logic.engines.base.Engine`)."""

    program: Program

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
        return self.engine.rule_table()

    def group_table(self, functor: str) -> dict[str, dict[str, float]]:
        """The learnable disjunctions of one functor, by their first argument
        (``polarity(happy, S)`` -> ``happy``; a disjunction without context by its functor)."""
        table = self.rule_table()
        out = {g.context[0] if g.context else g.functor: table[g.key] for g in self.program.groups if g.functor == functor}
        if not out:
            raise ProgramError(f"{self.program.path.name} has no learnable {functor}/... disjunction")
        return out

    def rule_parameters(self) -> list:
        """The torch parameters holding the rules, to train with a torch optimizer
        (e.g. in one optimizer with the networks); empty when the engine trains
        them with its own optimizer (:meth:`rule_optimizer`)."""
        return self.engine.rule_parameters()

    def rule_optimizer(self, lr: float, kind: str = "adam"):
        """An optimizer over the rule parameters with ``zero_grad()``/``step()``
        (the engine's own where it has one: DeepProbLog's SGD)."""
        return self.engine.rule_optimizer(lr, kind)

    def rules_state(self) -> dict:
        return {
            "program": self.program.name,
            "program_path": str(self.program.path),
            "engine": self.engine.name,
            "probabilities": self.rule_probabilities(),
            "groups": self.rule_table(),
        }

    def save_rules(self, path: str | Path) -> None:
        from neural.common import atomic_write_bytes

        atomic_write_bytes(Path(path), json.dumps(self.rules_state(), indent=2).encode())

    def load_rules(self, path: str | Path) -> None:
        state = json.loads(Path(path).read_text())
        if state.get("program") != self.program.name:
            raise UserError(f"{path}: rules of program {state.get('program')!r}, not {self.program.name!r}")
        self.set_rule_probabilities(state["probabilities"])
