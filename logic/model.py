"""One Python API over both engines.

    model = LogicModel("context_selection", networks={"scene2emotion": head, "face_emotion": face})
    out = model(batch, explain=True)
    out.probs            # [B, 7]  P(emotion | image)
    out.posterior        # [B, S, 7]  P(source | image, emotion), 0 where a source is absent
    model.rule_table()   # {"trust(n1_large)": {"scene": 0.2, "face1": 0.8}, ...}

``networks`` maps each ``nn(Name, ...)`` of the program to a module that turns a
batch of tensors from the named source into distributions ``[b, K]``.
Rule parameters: the ``compiled`` engine keeps unconstrained logits (softmax per
annotated disjunction) trained with any torch optimizer; the ``deepproblog``
engine keeps DeepProbLog's probabilities trained with its ``SGD(param_lr)``.
``rule_optimizer`` hides the difference.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from logic.engines.compile_cache import load_or_build
from logic.engines.compiled import CompiledProgram, compile_program
from logic.engines.cone import PackedLeaves
from logic.engines.deepproblog_engine import DeepProbLogEngine
from logic.program import Program, load_program
from logic.rules import RuleLogits, RulesMixin
from neural.errors import UserError
from neural.vocabulary import EMOTIONS, emotion_index
from pipelines.context import CONTEXTS, DEFAULT_LARGE_FACE

ENGINES = ("compiled", "deepproblog")
#: How the compiled engine evaluates: per-sample cones (numba), or KLay's whole
#: circuit for answers without gradients (see CompiledEngine._answers).
EVALUATORS = ("cones", "circuit")


@dataclass
class LogicOutput:
    probs: torch.Tensor  # [B, E] P(emotion | image)
    contexts: list[str]
    sources: tuple[str, ...]  # source order of ``posterior``
    posterior: torch.Tensor | None = None  # [B, S, E] P(source | image, emotion)

    def log_probs(self, eps: float = 1e-12) -> torch.Tensor:
        return self.probs.clamp_min(eps).log()


_COMPILED: dict = {}


def _compiled_program(program: Program, contexts, emotions, domains):
    """Compile once per program text and options: in this process (a dict) and
    across processes (``engines/compile_cache.py``, about a second saved per program)."""
    options = (contexts, emotions, tuple(sorted((k, tuple(v)) for k, v in domains.items())))
    key = (str(program.path), program.text, options)
    if key not in _COMPILED:
        _COMPILED[key] = load_or_build(program.name, program.text, ("program", *options),
                                       lambda: compile_program(program, contexts, emotions, domains), CompiledProgram)
    return _COMPILED[key]


class CompiledEngine(nn.Module):
    """Batched evaluation with one circuit compiled for all contexts (see engines/compiled.py)."""

    name = "compiled"
    #: where the circuit is evaluated. The networks run on their device; the per-sample cone walk is numba on the
    #: CPU (leaf values copied there and the results back, gradients too): not measured on a GPU, so kept.
    placement = "circuit on the CPU (numba cone walker; leaves copied from the networks' device and back)"

    def __init__(self, program: Program, networks: dict[str, nn.Module], contexts=CONTEXTS, emotions=EMOTIONS,
                 evaluator: str = "cones"):
        super().__init__()
        if evaluator not in EVALUATORS:
            raise UserError(f"unknown evaluator {evaluator!r}; known evaluators: {', '.join(EVALUATORS)}")
        self.evaluator = evaluator
        self._circuit_terms: dict[str, tuple[list, torch.Tensor]] = {}
        self.program = program
        self.networks = networks
        self.emotions = tuple(emotions)
        self.domains = {n.network: n.domain for n in program.neural}
        self.compiled = _compiled_program(program, tuple(contexts), self.emotions, self.domains)
        self.context_index = {c: i for i, c in enumerate(self.compiled.contexts)}
        # CONTEXTS index -> engine index (-1: a context this engine was not compiled for)
        self._from_codes = torch.tensor([self.context_index.get(c, -1) for c in CONTEXTS], dtype=torch.long)
        self.rules = RuleLogits(program)
        # per network of compiled.queries.groups: [C, J] which of its blocks each context reads
        self._group_needs = [self.compiled.needs[:, js].numpy() for _, js in self.compiled.queries.groups]

    # -- parameters ---------------------------------------------------------
    def rule_probs_tensor(self) -> torch.Tensor:
        return self.rules.probs()

    def rule_probs(self) -> list[float]:
        return self.rules.probs().tolist()

    def set_rule_probs(self, probs) -> None:
        self.rules.set(probs)

    # -- evaluation ---------------------------------------------------------
    def _leaves(self, batch, ctx: torch.Tensor, rule_probs=None) -> PackedLeaves:
        """Each network evaluated once per batch, on the (sample, source) pairs
        whose context reads them (a sample evaluates only its own context's
        cone). A sample whose context needs a source it does not have is an error.
        The bookkeeping (which pairs) is numpy: no gradients, smaller overhead."""
        cq = self.compiled.queries
        ctx = ctx.cpu().numpy()
        outputs, masks = [], []
        for (net, js), needs in zip(cq.groups, self._group_needs):
            sources = [cq.nn_blocks[j][1] for j in js]
            mask = needs[ctx]  # [B, J] bool
            missing = mask & ~np.stack([batch.present(src).cpu().numpy() for src in sources], 1)
            if missing.any():
                i, j = (int(v) for v in np.argwhere(missing)[0])
                raise UserError(f"sample {batch.sample_ids[i]}: its context needs source {sources[j]!r}, which is absent")
            if mask.all() and len(js) == 1:
                x, mask = batch.tensors[sources[0]], None
            else:  # (sample, source) pairs, sample by sample
                x = torch.stack([batch.tensors[src] for src in sources], 1) if len(js) > 1 else batch.tensors[sources[0]][:, None]
                x = x[torch.from_numpy(mask).to(x.device)]
            outputs.append(self.networks[net](x))  # [n, K]
            masks.append(mask)
        rule_probs = self.rule_probs_tensor() if rule_probs is None else rule_probs
        return cq.pack(outputs, masks, rule_probs, len(batch))

    def _context_index(self, contexts) -> torch.Tensor:
        """Contexts (names, or a [B] tensor of indices into ``pipelines.context.CONTEXTS``)
        -> [B] indices into this engine's contexts."""
        if torch.is_tensor(contexts):
            return self._from_codes[contexts.cpu()]  # the cone walk reads its keys on the CPU
        try:
            return torch.tensor([self.context_index[c] for c in contexts], dtype=torch.long)
        except KeyError as exc:
            raise UserError(f"context {exc.args[0]!r} is not one of {', '.join(self.compiled.contexts)}") from None

    def _answers(self, family: str, leaves: PackedLeaves, keys: torch.Tensor) -> torch.Tensor:
        """[B, K]: each sample's answers of a query family (see CompiledProgram.key_terms) for its key.

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

    def query(self, batch, contexts, sources, explain: bool, rule_probs=None):
        """Joint probabilities per sample: emotion [B, E], valid [B], via [B, S, E] or None."""
        cp = self.compiled
        ctx = self._context_index(contexts)
        leaves = self._leaves(batch, ctx, rule_probs)
        r = self._answers("main", leaves, ctx)  # [B, E + 1]
        emotion, valid = r[:, :-1], r[:, -1]
        via = None
        if explain:
            order = torch.tensor([cp.sources.index(s) for s in sources])
            rv = self._answers("explain", leaves, ctx)  # [B, S_all * E]
            via = rv.view(len(batch), len(cp.sources), -1)[:, order]
        return emotion, valid, via

    def label_query(self, batch, contexts, rule_probs=None):
        """P(emotion(img, ctx, label)) and P(valid(img, ctx)) per sample: [B], [B]."""
        cp = self.compiled
        ctx = self._context_index(contexts)
        leaves = self._leaves(batch, ctx, rule_probs)
        r = self._answers("label", leaves, ctx * len(self.emotions) + batch.labels.cpu())  # [B, 2]
        return r[:, 0], r[:, 1]

    def selection(self, context: str, sources) -> dict[str, float]:
        cp = self.compiled
        i = self.context_index[context]
        terms = [cp.selected_terms[i][cp.sources.index(s)] for s in sources] + [cp.valid_terms[i]]
        with torch.no_grad():
            leaves = cp.selection.pack_all({}, self.rule_probs_tensor().cpu(), 1)  # the circuit's matrices: CPU
            r = cp.selection.evaluate(leaves, terms)[0]
        return {s: float(v) / float(r[-1]) for s, v in zip(sources, r[:-1])}


class LogicModel(RulesMixin, nn.Module):
    """A program bound to networks, evaluated by one of the two engines."""

    def __init__(
        self,
        program: str | Path | Program,
        networks: dict[str, nn.Module],
        engine: str = "compiled",
        face_size_threshold: float = DEFAULT_LARGE_FACE,
        param_lr: float = 0.01,
        contexts: tuple[str, ...] = CONTEXTS,
        evaluator: str = "cones",
    ):
        super().__init__()
        self.program = program if isinstance(program, Program) else load_program(program, check_bindings=False)
        self.networks = self.program.bind(networks)
        self.engine_name = engine
        self.face_size_threshold = face_size_threshold
        self.contexts = tuple(contexts)
        if engine == "compiled":
            self.engine = CompiledEngine(self.program, dict(self.networks), contexts=self.contexts,
                                         evaluator=evaluator)
        elif evaluator != "cones":
            raise UserError(f"evaluator {evaluator!r} is an option of the compiled engine, not of {engine!r}")
        elif engine == "deepproblog":
            self.engine = DeepProbLogEngine(self.program, dict(self.networks), param_lr=param_lr)
        else:
            raise UserError(f"unknown engine {engine!r}; known engines: {', '.join(ENGINES)}")
        self.sources = self._all_sources()

    def _all_sources(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for c in self.contexts:
            for s in self.source_probabilities_for(c):
                seen[s] = None
        return tuple(seen)

    @property
    def engine_placement(self) -> str:
        """Where the engine evaluates the program (the networks run on their own device)."""
        return f"{self.engine_name} engine: {self.engine.placement}"

    # -- evaluation ---------------------------------------------------------
    def forward(self, batch, explain: bool = False, rule_probs: torch.Tensor | None = None) -> LogicOutput:
        contexts = batch.contexts(self.face_size_threshold)
        kw = {"rule_probs": rule_probs} if rule_probs is not None else {}
        emotion, valid, via = self.engine.query(batch, contexts, list(self.sources), explain, **kw)
        probs = emotion / valid.unsqueeze(1)  # condition on the chosen source existing
        posterior = None
        if explain:
            posterior = via / emotion.unsqueeze(1).clamp_min(1e-30)
        return LogicOutput(probs=probs, contexts=contexts, sources=self.sources, posterior=posterior)

    def label_log_probs(self, batch, eps: float = 1e-12) -> torch.Tensor:
        """log P(label | image) per sample, [B] (the training query)."""
        if self.engine_name == "compiled" and set(self.contexts) == set(CONTEXTS):
            contexts = batch.context_codes(self.face_size_threshold)  # no strings on the training path
        else:
            contexts = batch.contexts(self.face_size_threshold)
        p_label, valid = self.engine.label_query(batch, contexts)
        return (p_label / valid).clamp_min(eps).log()

    def emotion_probability(self, batch, emotion: str) -> torch.Tensor:
        """P(emotion | image) per sample, [B]; ``emotion`` must be in the vocabulary."""
        return self(batch).probs[:, emotion_index(emotion)]

    def nll(self, batch, class_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Mean negative log-likelihood of the batch's labels under the program."""
        if (batch.labels < 0).any():
            raise UserError("every training sample needs a label in the vocabulary")
        logp = self.label_log_probs(batch)
        if class_weights is None:
            return -logp.mean()
        w = class_weights.to(logp.dtype)[batch.labels]
        return -(w * logp).sum() / w.sum()

    # -- what was learned ---------------------------------------------------
    def source_probabilities_for(self, context: str) -> dict[str, float]:
        """P(source selected | chosen source exists) in ``context``."""
        return self.engine.selection(context, self.program.sources_in(context))

    def source_probabilities(self) -> dict[str, dict[str, float]]:
        """P(source selected | context) for every context: what the program learned about trust."""
        return {c: self.source_probabilities_for(c) for c in self.contexts}

    def rules_state(self) -> dict:
        return super().rules_state() | {"face_size_threshold": self.face_size_threshold}
