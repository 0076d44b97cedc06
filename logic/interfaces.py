"""The query interfaces a program can answer, as the model asks them of an engine.

:data:`logic.program.INTERFACES` says which queries each kind of program
defines; here each kind says how a :class:`~logic.model.LogicModel` asks them:
the ground query families (:class:`~logic.engines.base.QuerySpec`), each
sample's context, how answers become a :class:`LogicOutput`, and which query
is the training loss.

* ``image`` (``source_selection.pl``): one context per image (number and size of
  its faces). ``main``: ``emotion(img, C, E)`` for every E and ``valid(img, C)``;
  ``label``: the label's emotion and valid (key ``C * E + label``); ``explain``:
  ``via(img, C, S, E)``; ``selection`` (no network): ``selected(img, C, S)`` and valid.
* ``clip`` (``clip_sentiment.pl``): one context. ``main``: ``label(img, E, S)``
  for every pair, ``emotion(img, E)``, ``sentiment(img, S)``; ``label``: the
  clip's two labels (key ``E * S_count + S``); ``explain``: ``sentiment_via(img, R, S)``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
from problog.engine import DefaultEngine
from problog.formula import LogicFormula
from problog.logic import Term, Var

from logic.engines.base import FALSE, PLACEHOLDER, Family, QuerySpec
from logic.program import INTERFACES, Program, ProgramError
from neural.common import EMOTIONS, SENTIMENTS, UserError
from pipelines.context import CONTEXTS, DEFAULT_LARGE_FACE


@dataclass
class LogicOutput:
    """What a model answers for a batch. Both kinds: ``probs`` [B, E] P(emotion | sample)
    (also ``emotion``), ``sources`` (the order of ``posterior``'s second axis).
    image: ``posterior`` [B, S, E] P(source | image, emotion), ``contexts`` per image.
    clip: ``sentiment`` [B, 3], ``joint`` [B, E, 3] P(emotion, sentiment | clip),
    ``posterior`` [B, R, 3] P(sentiment source | clip, sentiment)."""

    probs: torch.Tensor
    sources: tuple[str, ...]
    posterior: torch.Tensor | None = None
    contexts: list[str] | None = None
    sentiment: torch.Tensor | None = None
    joint: torch.Tensor | None = None

    @property
    def emotion(self) -> torch.Tensor:
        return self.probs

    def log_probs(self, eps: float = 1e-12) -> torch.Tensor:
        return self.probs.clamp_min(eps).log()


@dataclass
class ClipInputs:
    """The logic's view of a batch of clips: what the networks read, and the labels."""

    sample_ids: list[str]
    tensors: dict[str, torch.Tensor]  # "clip": [B, ...] the fusion net's input (e.g. frozen features [B, F])
    labels: torch.Tensor  # [B] long, emotion index; -1 where unknown
    sentiments: torch.Tensor  # [B] long, sentiment index; -1 where unknown
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sample_ids)

    def present(self, source: str) -> torch.Tensor:
        """[B] bool: every clip has every source."""
        return torch.ones(len(self), dtype=torch.bool)


def _t(*args) -> Term:
    return Term(args[0], PLACEHOLDER, *(Term(a) for a in args[1:]))


class ImageInterface:
    """emotion/3, via/4, selected/3, valid/2: a source chosen per context."""

    kind = "image"

    def __init__(self, program: Program, emotions=EMOTIONS, face_size_threshold: float = DEFAULT_LARGE_FACE,
                 contexts=CONTEXTS):
        self.program, self.emotions = program, tuple(emotions)
        self.face_size_threshold, self.contexts = face_size_threshold, tuple(contexts)
        self.sources = tuple(dict.fromkeys(s for c in self.contexts for s in program.sources_in(c)))
        # CONTEXTS index -> index into self.contexts (-1: a context this model does not answer)
        self._from_codes = torch.tensor([self.contexts.index(c) if c in self.contexts else -1 for c in CONTEXTS])
        own = {c: set(program.sources_in(c)) for c in self.contexts}
        main, label, explain, selection, order = [], [], [], [], []
        for c in self.contexts:
            emotion = [_t("emotion", c, e) for e in self.emotions]
            main.append((*emotion, _t("valid", c)))
            label += [(t, _t("valid", c)) for t in emotion]
            explain.append(tuple(_t("via", c, s, e) if s in own[c] else FALSE for s in self.sources for e in self.emotions))
            selection.append((*(_t("selected", c, s) if s in own[c] else FALSE for s in self.sources), _t("valid", c)))
            # grounded in the program's order of the context's own sources (va_selection lists va before
            # the faces in n0, after them elsewhere): it numbers the circuit's variables
            order.append((*main[-1], *(_t("via", c, s, e) for s in program.sources_in(c) for e in self.emotions)))
        self.spec = QuerySpec(self.contexts, {
            "main": Family(tuple(main)), "label": Family(tuple(label), per_context=len(self.emotions)),
            "explain": Family(tuple(explain)), "selection": Family(tuple(selection), neural=False),
        }, check=self._check_vocabulary, order=tuple(order))

    def _check_vocabulary(self, program: Program) -> None:
        engine = DefaultEngine()
        db = engine.prepare(program.translated)
        derived = set()
        for c in self.contexts:
            f = engine.ground(db, Term("emotion", PLACEHOLDER, Term(c), Var("E")), label=LogicFormula.LABEL_QUERY)
            derived |= {str(t.args[2]) for t, _ in f.queries()}
        outside = sorted(derived - set(self.emotions))
        if outside:
            raise ProgramError(f"{program.path.name}: emotion/3 derives values outside the vocabulary "
                               f"({', '.join(outside)}); the vocabulary is: {', '.join(self.emotions)}")

    def context_keys(self, batch) -> torch.Tensor:
        """[B] long: each image's context, an index into ``self.contexts``."""
        codes = batch.context_codes(self.face_size_threshold).cpu()
        keys = self._from_codes[codes]
        if (keys < 0).any():
            name = CONTEXTS[int(codes[keys < 0][0])]
            raise UserError(f"context {name!r} is not one of {', '.join(self.contexts)}")
        return keys

    def output(self, contexts, main, explain) -> LogicOutput:
        e = len(self.emotions)
        emotion, valid = main[:, :e], main[:, e]
        posterior = None
        if explain is not None:  # P(via S, E) / P(E): the emotion's joint, before conditioning on valid
            posterior = explain.view(len(main), len(self.sources), e) / emotion.unsqueeze(1).clamp_min(1e-30)
        return LogicOutput(probs=emotion / valid.unsqueeze(1), sources=self.sources, posterior=posterior,
                           contexts=[self.contexts[i] for i in contexts.tolist()])

    def check_labels(self, batch) -> None:
        if (batch.labels < 0).any():
            raise UserError("every training sample needs a label in the vocabulary")

    def label_keys(self, batch) -> torch.Tensor:
        return batch.labels.cpu()

    def label_probability(self, answers: torch.Tensor) -> torch.Tensor:
        return answers[:, 0] / answers[:, 1]  # P(emotion = label | the chosen source exists)

    def state(self) -> dict:
        return {"face_size_threshold": self.face_size_threshold}


class ClipInterface:
    """emotion/2, sentiment/2, sentiment_via/3, label/3: a clip's emotion and sentiment, tied."""

    kind = "clip"

    def __init__(self, program: Program, emotions=EMOTIONS, sentiments=SENTIMENTS):
        self.program, self.emotions, self.sentiments = program, tuple(emotions), tuple(sentiments)
        self.contexts = ("clip",)
        engine = DefaultEngine()
        gp = engine.ground(engine.prepare(program.translated), Term("sentiment_via", PLACEHOLDER, Var("R"), Var("S")),
                           label="query")
        self.sources = tuple(dict.fromkeys(str(t.args[1]) for t, _ in gp.queries()))
        pairs = [(e, s) for e in self.emotions for s in self.sentiments]
        main = (*(_t("label", e, s) for e, s in pairs), *(_t("emotion", e) for e in self.emotions),
                *(_t("sentiment", s) for s in self.sentiments))
        self.spec = QuerySpec(self.contexts, {
            "main": Family((main,)), "label": Family(tuple((_t("label", e, s),) for e, s in pairs), len(pairs)),
            "explain": Family((tuple(_t("sentiment_via", r, s) for r in self.sources for s in self.sentiments),)),
        })

    def context_keys(self, batch) -> torch.Tensor:
        return torch.zeros(len(batch), dtype=torch.long)

    def output(self, contexts, main, explain) -> LogicOutput:
        e, s = len(self.emotions), len(self.sentiments)
        joint, emotion, sentiment = main[:, :e * s].view(-1, e, s), main[:, e * s:e * s + e], main[:, e * s + e:]
        posterior = None
        if explain is not None:
            posterior = explain.view(len(main), len(self.sources), s) / sentiment.unsqueeze(1).clamp_min(1e-30)
        return LogicOutput(probs=emotion, sources=self.sources, posterior=posterior, sentiment=sentiment, joint=joint)

    def check_labels(self, batch) -> None:
        if (batch.labels < 0).any() or (batch.sentiments < 0).any():
            raise UserError("every training clip needs an emotion label and a sentiment label")

    def label_keys(self, batch) -> torch.Tensor:
        return (batch.labels * len(self.sentiments) + batch.sentiments).cpu()

    def label_probability(self, answers: torch.Tensor) -> torch.Tensor:
        return answers[:, 0]  # P(label(clip, emotion, sentiment)): both labels at once

    def state(self) -> dict:
        return {}


#: the interface of each kind of program (the kinds of logic.program.INTERFACES)
QUERY_INTERFACES = {cls.kind: cls for cls in (ImageInterface, ClipInterface)}


def query_interface(program: Program, **options):
    """The query interface of ``program``'s kind, with ``options`` (image: ``face_size_threshold``,
    ``contexts``); an option another kind has is refused by name."""
    cls = QUERY_INTERFACES.get(program.kind)
    if cls is None:  # a kind added to logic.program.INTERFACES without its interface here
        raise ProgramError(f"{program.path.name}: no query interface for {program.kind} programs; "
                           f"known: {', '.join(QUERY_INTERFACES)} (of {', '.join(INTERFACES)})")
    known = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "program")]
    wrong = [k for k in options if k not in known]
    if wrong:
        raise UserError(f"{', '.join(wrong)} does not apply to {program.kind} program {program.path.name}; "
                        f"its options: {', '.join(known)}")
    return cls(program, **options)
