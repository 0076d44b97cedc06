"""The ``compiled`` engine: the program compiled once into one circuit, evaluated on whole batches.

Every neural family of the model's :class:`~logic.engines.base.QuerySpec` is
compiled into one KLay circuit (``engines/circuit.py``), the network-free
families into another. A batch evaluates each network once, on the (sample,
source) pairs whose context reads it, and then, per sample, only the cone of
the roots its key asks for (``engines/cone.py``). Rule parameters are logits
(:class:`~logic.engines.rule_logits.RuleLogits`) trained with any torch optimizer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from problog.engine import DefaultEngine
from problog.formula import LogicFormula
from problog.logic import Term
from torch import nn

from logic.engines.base import FALSE, Engine, QuerySpec, register_engine
from logic.engines.circuit import CompiledQueries, compile_queries, leaf_key
from logic.engines.compile_cache import load_or_build
from logic.engines.cone import KeyedCone, PackedLeaves
from logic.engines.rule_logits import RuleLogits
from logic.program import Program
from neural.common import UserError

#: How answers are evaluated: per-sample cones (numba), or KLay's whole circuit
#: for answers without gradients (see CompiledEngine._answers).
EVALUATORS = ("cones", "circuit")


@dataclass
class CompiledFamilies:
    """A :class:`QuerySpec` compiled: ``queries`` holds every root of its neural
    families, ``static`` those of its network-free ones; ``rows[family][key]`` the
    terms a key answers (:data:`FALSE` where a term has no proof). ``needs``
    [C, n_blocks] bool: whether context ``c`` reads ``queries.nn_blocks[j]``."""

    contexts: tuple[str, ...]
    queries: CompiledQueries
    static: CompiledQueries | None
    rows: dict[str, list[list[Term]]]
    needs: torch.Tensor

    def __post_init__(self):
        self._cones: dict[str, KeyedCone] = {}

    def key_terms(self, family: str) -> list[list[Term]]:
        if family not in self.rows:
            raise ValueError(f"unknown query family {family!r}; known: {', '.join(self.rows)}")
        return self.rows[family]

    def cone(self, family: str) -> KeyedCone:
        """The cone of a neural family, built once."""
        if family not in self._cones:
            self._cones[family] = self.queries.cone(self.key_terms(family))
        return self._cones[family]


def compile_families(program: Program, spec: QuerySpec, network_domains: dict) -> CompiledFamilies:
    # The network-free families first, then the check: ProbLog's grounding keeps
    # state across calls, and this order is the one the circuits were tuned in
    static_terms = spec.terms(neural=False)
    static = compile_queries(program, static_terms, network_domains, neural=False) if static_terms else None
    queries = compile_queries(program, spec.terms(neural=True), network_domains)
    if spec.check is not None:
        spec.check(program)
    rows = {}
    for name, f in spec.families.items():
        roots = (queries if f.neural else static).roots
        rows[name] = [[t if t in roots else FALSE for t in row] for row in f.rows]
    needs = torch.zeros(len(spec.contexts), len(queries.nn_blocks), dtype=torch.bool)
    engine = DefaultEngine()
    db = engine.prepare(program.translated)
    for c in range(len(spec.contexts)):
        read = _blocks_read(engine, db, spec.context_terms(c, neural=True))
        for j, block in enumerate(queries.nn_blocks):
            needs[c, j] = block in read
    return CompiledFamilies(tuple(spec.contexts), queries, static, rows, needs)


def _blocks_read(engine, db, terms: list[Term]) -> set[tuple[str, str]]:
    """The (network, source) pairs whose outputs the proofs of ``terms`` use."""
    f = LogicFormula(keep_all=True)
    for t in terms:
        f = engine.ground(db, t, target=f, label=LogicFormula.LABEL_QUERY)
    out = set()
    for _, atom, kind in f:
        if kind == "atom" and isinstance(atom.probability, Term) and atom.probability.functor == "nn":
            key = leaf_key(atom.probability)
            out.add((key[1], key[2]))
    return out


_COMPILED: dict = {}


def compiled_families(program: Program, spec: QuerySpec, domains: dict) -> CompiledFamilies:
    """Compile once per program text and spec: in this process (a dict) and across
    processes (``engines/compile_cache.py``, about a second saved per program)."""
    options = ("families", spec.key(), tuple(sorted((k, tuple(v)) for k, v in domains.items())))
    key = (str(program.path), program.text, options)
    if key not in _COMPILED:
        _COMPILED[key] = load_or_build(program.name, program.text, options,
                                       lambda: compile_families(program, spec, domains), CompiledFamilies)
    return _COMPILED[key]


@register_engine
class CompiledEngine(Engine):
    """Batched evaluation of one circuit compiled for all contexts."""

    name = "compiled"
    #: The networks run on their device; the per-sample cone walk is numba on the CPU (leaf values copied
    #: there and the results back, gradients too): not measured on a GPU, so kept.
    placement = "circuit on the CPU (numba cone walker; leaves copied from the networks' device and back)"
    rule_training = "any torch optimizer (Adam by default) on unconstrained logits, a softmax per disjunction"

    def compile(self, networks: dict[str, nn.Module], evaluator: str = "cones") -> None:
        if evaluator not in EVALUATORS:
            raise UserError(f"unknown evaluator {evaluator!r}; known evaluators: {', '.join(EVALUATORS)}")
        self.evaluator = evaluator
        self.networks = networks
        domains = {n.network: n.domain for n in self.program.neural}
        self.compiled = compiled_families(self.program, self.spec, domains)
        self.rules = RuleLogits(self.program)
        self._circuit_terms: dict[str, tuple[list, torch.Tensor]] = {}
        # per network of queries.groups: [C, J] which of its blocks each context reads
        self._group_needs = [self.compiled.needs[:, js].numpy() for _, js in self.compiled.queries.groups]

    # -- rule parameters ---------------------------------------------------------
    def rule_probs_tensor(self) -> torch.Tensor:
        return self.rules.probs()

    def set_rule_probs(self, probs) -> None:
        self.rules.set(probs)

    def rule_parameters(self) -> list[nn.Parameter]:
        return [self.rules.logits]

    def rule_optimizer(self, lr: float, kind: str = "adam"):
        optimizers = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}
        if kind not in optimizers:
            raise ValueError(f"unknown optimizer {kind!r}; known: {', '.join(optimizers)}")
        return optimizers[kind](self.rule_parameters(), lr=lr)

    # -- evaluation --------------------------------------------------------------
    def leaves(self, batch, contexts: torch.Tensor, rule_probs=None) -> PackedLeaves:
        """Each network evaluated once per batch, on the (sample, source) pairs
        whose context reads them (a sample evaluates only its own context's
        cone). A sample whose context needs a source it does not have is an error.
        The bookkeeping (which pairs) is numpy: no gradients, smaller overhead.
        Heads of one network (modules with ``trunk_owner``, ``trunk(x)`` and
        ``from_trunk(t)``, like the fusion net's) share one trunk evaluation when
        they read the same source for the whole batch."""
        cq = self.compiled.queries
        ctx = contexts.cpu().numpy()
        outputs, masks, trunks = [], [], {}
        for (net, js), needs in zip(cq.groups, self._group_needs):
            sources = [cq.nn_blocks[j][1] for j in js]
            mask = needs[ctx]  # [B, J] bool
            missing = mask & ~np.stack([batch.present(src).cpu().numpy() for src in sources], 1)
            if missing.any():
                i, j = (int(v) for v in np.argwhere(missing)[0])
                raise UserError(f"sample {batch.sample_ids[i]}: its context needs source {sources[j]!r}, which is absent")
            if mask.all() and len(js) == 1:
                outputs.append(self._run(net, batch.tensors[sources[0]], sources[0], trunks))  # [B, K]
                masks.append(None)
                continue
            # (sample, source) pairs, sample by sample
            x = torch.stack([batch.tensors[src] for src in sources], 1) if len(js) > 1 else batch.tensors[sources[0]][:, None]
            outputs.append(self.networks[net](x[torch.from_numpy(mask).to(x.device)]))  # [n, K]
            masks.append(mask)
        rule_probs = self.rule_probs_tensor() if rule_probs is None else rule_probs
        return cq.pack(outputs, masks, rule_probs, len(batch))

    def _run(self, net: str, x: torch.Tensor, source: str, trunks: dict) -> torch.Tensor:
        module = self.networks[net]
        owner = getattr(module, "trunk_owner", None)
        if owner is None:
            return module(x)
        key = (id(owner), source)
        if key not in trunks:
            trunks[key] = module.trunk(x)
        return module.from_trunk(trunks[key])

    def _answers(self, family: str, leaves: PackedLeaves, keys: torch.Tensor) -> torch.Tensor:
        """[B, K]: each sample's row of a family for its key.

        Cones by default. With ``evaluator="circuit"``, answers without gradients
        come from KLay's module instead, which evaluates every root for every
        sample and then keeps each sample's own: more arithmetic, but plain torch,
        so a process that only answers a few images never starts numba (about
        2 s in a fresh process). Same circuit, same numbers (tested)."""
        cp = self.compiled
        if self.evaluator == "cones" or torch.is_grad_enabled():
            return cp.cone(family)(leaves, keys)
        if family not in self._circuit_terms:
            rows = cp.key_terms(family)
            terms = list(dict.fromkeys(t for row in rows for t in row))
            column = {t: i for i, t in enumerate(terms)}
            self._circuit_terms[family] = (terms, torch.tensor([[column[t] for t in row] for row in rows]))
        terms, index = self._circuit_terms[family]
        # Roots of other contexts read blocks not evaluated for a sample (zeros)
        # and may be 0/0; only the sample's own context's columns are kept.
        return cp.queries.evaluate(leaves, terms).gather(1, index[keys])

    def evaluate(self, batch, contexts, requests, rule_probs=None) -> list[torch.Tensor]:
        contexts = contexts.cpu()  # the cone walk reads its keys on the CPU
        leaves = self.leaves(batch, contexts, rule_probs)
        out = []
        for family, sub in requests:
            per = self.spec.families[family].per_context
            out.append(self._answers(family, leaves, contexts * per + (0 if sub is None else sub.cpu())))
        return out

    def evaluate_static(self, family: str, key: int) -> torch.Tensor:
        cq = self.compiled.static
        with torch.no_grad():
            leaves = cq.pack_all({}, self.rule_probs_tensor().cpu(), 1)  # the circuit's matrices: CPU
            return cq.evaluate(leaves, self.compiled.key_terms(family)[key])[0]
