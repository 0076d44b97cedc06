"""One Python API over every engine and both kinds of program.

    model = LogicModel("context_selection", networks)  # {net: module} for every nn(net, ...) of the program
    out = model(batch, explain=True)
    out.probs            # [B, 7]  P(emotion | image)
    out.posterior        # [B, S, 7]  P(source | image, emotion), 0 where a source is absent
    model.rule_table()   # {"trust(n1_large)": {"scene": 0.2, "face1": 0.8}, ...}

    model = LogicModel("clip_sentiment", networks)
    out = model(ClipInputs(...), explain=True)
    out.emotion, out.sentiment, out.joint   # [B, 7], [B, 3], [B, 7, 3]
    out.posterior        # [B, R, 3]  P(sentiment source | clip, sentiment)
    model.polarity_table(), model.sentiment_sources()

``networks`` maps each ``nn(Name, ...)`` of the program to a module that turns a
batch of tensors from the named source into distributions ``[b, K]``. What the
model asks is its program's query interface (:mod:`logic.interfaces`, one per
kind of :data:`logic.program.INTERFACES`); who answers is an engine
(:mod:`logic.engines`, by name), and the model never asks which one it holds.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from logic.engines.base import engine_class, engine_options, make_engine
from logic.interfaces import ClipInputs, LogicOutput, query_interface  # noqa: F401 - part of this API
from logic.program import Program, ProgramError, load_program
from logic.rules import RulesMixin
from neural.common import emotion_index


class LogicModel(RulesMixin, nn.Module):
    """A program bound to networks, evaluated by an engine of ``logic.engines``.

    ``engine``: a registered engine name; ``param_lr`` (deepproblog: its SGD's
    rate) and ``evaluator`` (compiled: ``cones`` or ``circuit``) are engine
    options, refused by an engine that does not have them. ``face_size_threshold``
    and ``contexts`` are options of image programs, refused for clip programs;
    ``None`` leaves an option at its default."""

    def __init__(self, program: str | Path | Program, networks: dict[str, nn.Module], engine: str = "compiled",
                 face_size_threshold: float | None = None, param_lr: float | None = None,
                 contexts: tuple[str, ...] | None = None, evaluator: str | None = None):
        super().__init__()
        self.program = program if isinstance(program, Program) else load_program(program, check_bindings=False)
        self.interface = query_interface(self.program, **_given(face_size_threshold=face_size_threshold,
                                                                contexts=contexts))
        self.networks = self.program.bind(networks)
        options = _given(evaluator=evaluator)
        if param_lr is not None and "param_lr" in engine_options(engine_class(engine)):
            options["param_lr"] = param_lr  # the initial rate of an engine's own rule optimizer
        self.engine = make_engine(engine, self.program, dict(self.networks), self.interface.spec, **options)
        self.engine_name = self.engine.name
        self.sources = self.interface.sources  # the order of the posterior's source axis
        self.contexts = self.interface.contexts

    @property
    def face_size_threshold(self) -> float:
        return self.interface.face_size_threshold  # image programs only (an AttributeError otherwise)

    @property
    def engine_placement(self) -> str:
        """Where the engine evaluates the program (the networks run on their own device)."""
        return f"{self.engine.name} engine: {self.engine.placement}"

    # -- evaluation ---------------------------------------------------------
    def forward(self, batch, explain: bool = False, rule_probs: torch.Tensor | None = None) -> LogicOutput:
        """The interface's answers for ``batch``; ``rule_probs`` ([n_params]) replaces the
        learned rule probabilities (a tensor to take gradients at; engines that keep
        their own refuse it)."""
        contexts = self.interface.context_keys(batch)
        requests = [("main", None)] + ([("explain", None)] if explain else [])
        answers = self.engine.evaluate(batch, contexts, requests, rule_probs)
        return self.interface.output(contexts, answers[0], answers[1] if explain else None)

    def label_log_probs(self, batch, eps: float = 1e-12) -> torch.Tensor:
        """log P(label | sample) per sample, [B] (the training query; a clip's label is
        its emotion and its sentiment together)."""
        contexts = self.interface.context_keys(batch)
        (answers,) = self.engine.evaluate(batch, contexts, [("label", self.interface.label_keys(batch))])
        return self.interface.label_probability(answers).clamp_min(eps).log()

    def emotion_probability(self, batch, emotion: str) -> torch.Tensor:
        """P(emotion | sample) per sample, [B]; ``emotion`` must be in the vocabulary."""
        return self(batch).probs[:, emotion_index(emotion)]

    def nll(self, batch, class_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Mean negative log-likelihood of the batch's labels under the program;
        ``class_weights`` ([E], optional) weights each sample by its emotion label."""
        self.interface.check_labels(batch)
        logp = self.label_log_probs(batch)
        if class_weights is None:
            return -logp.mean()
        w = class_weights.to(logp.dtype)[batch.labels]
        return -(w * logp).sum() / w.sum()

    # -- what was learned ---------------------------------------------------
    def source_probabilities_for(self, context: str) -> dict[str, float]:
        """P(source selected | chosen source exists) in ``context`` (image programs)."""
        if "selection" not in self.interface.spec.families:
            raise ProgramError(f"{self.program.path.name}: a {self.program.kind} program selects no source per context")
        row = self.engine.evaluate_static("selection", self.contexts.index(context))
        values = dict(zip(self.sources, row[:-1].tolist()))
        return {s: values[s] / float(row[-1]) for s in self.program.sources_in(context)}

    def source_probabilities(self) -> dict[str, dict[str, float]]:
        """P(source selected | context) for every context: what the program learned about trust."""
        return {c: self.source_probabilities_for(c) for c in self.contexts}

    def polarity_table(self) -> dict[str, dict[str, float]]:
        """P(sentiment | emotion): the learned ``polarity/2`` table, one row per emotion (clip programs)."""
        return self.group_table("polarity")

    def sentiment_sources(self) -> dict[str, float]:
        """P(sentiment source): how far the program trusts the sentiment head vs the emotion (clip programs)."""
        return self.group_table("sentiment_source")["sentiment_source"]

    def rules_state(self) -> dict:
        return super().rules_state() | self.interface.state()


def _given(**options) -> dict:
    return {k: v for k, v in options.items() if v is not None}

