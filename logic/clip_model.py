"""Clip programs over both engines: a video clip's emotion and sentiment, tied.

    model = ClipLogicModel("clip_sentiment", networks={"multimodal_emotion": em, "multimodal_sentiment": se})
    out = model(batch, explain=True)
    out.emotion        # [B, 7]     P(emotion | clip)
    out.sentiment      # [B, 3]     P(sentiment | clip)
    out.joint          # [B, 7, 3]  P(emotion, sentiment | clip)
    out.posterior      # [B, R, 3]  P(sentiment source | clip, sentiment)
    model.nll(batch)            # -log P(label(clip, emotion, sentiment)): both labels
    model.polarity_table()      # {"happy": {"negative": .., "neutral": .., "positive": ..}, ...}
    model.sentiment_sources()   # {"head": .., "emotion": ..}

A batch is anything with ``sample_ids``, ``tensors`` (``{"clip": [B, ...]}``,
whatever the bound networks read), ``labels`` ([B] emotion indices) and
``sentiments`` ([B] sentiment indices); :class:`ClipInputs` is the plain one.
The query interface is fixed by :data:`logic.program.INTERFACES` ``["clip"]``;
see ``logic/programs/clip_sentiment.pl`` for its semantics.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from problog.engine import DefaultEngine
from problog.logic import Term, Var
from torch import nn

from logic.engines.compile_cache import load_or_build
from logic.engines.compiled import FALSE, PLACEHOLDER, CompiledQueries, compile_queries
from logic.engines.cone import PackedLeaves
from logic.engines.deepproblog_engine import DeepProbLogEngine
from logic.program import Program, ProgramError, load_program
from logic.rules import RuleLogits, RulesMixin
from neural.errors import UserError
from neural.vocabulary import EMOTIONS, SENTIMENTS



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


@dataclass
class ClipOutput:
    emotion: torch.Tensor  # [B, E]
    sentiment: torch.Tensor  # [B, S]
    joint: torch.Tensor  # [B, E, S]
    sources: tuple[str, ...]  # order of ``posterior``'s second axis
    posterior: torch.Tensor | None = None  # [B, R, S] P(source | clip, sentiment)


def sentiment_sources_of(program: Program) -> tuple[str, ...]:
    """The sources ``sentiment_via/3`` can name (from the grounding)."""
    engine = DefaultEngine()
    db = engine.prepare(program.translated)
    gp = engine.ground(db, Term("sentiment_via", PLACEHOLDER, Var("R"), Var("S")), label="query")
    return tuple(dict.fromkeys(str(t.args[1]) for t, _ in gp.queries()))


def run_networks(networks: dict, blocks, tensors: dict) -> dict:
    """Every (network, source) block evaluated once: ``{(net, src): [B, K]}``.

    Predicates that are heads of one network (modules with ``trunk_owner``,
    ``trunk(x)`` and ``from_trunk(trunk_output)``, like the fusion net's
    emotion and sentiment heads) share one trunk evaluation per source.
    """
    out, trunks = {}, {}
    for net, src in blocks:
        module = networks[net]
        owner = getattr(module, "trunk_owner", None)
        if owner is None:
            out[(net, src)] = module(tensors[src])
            continue
        key = (id(owner), src)
        if key not in trunks:
            trunks[key] = module.trunk(tensors[src])
        out[(net, src)] = module.from_trunk(trunks[key])
    return out


def clip_terms(emotions, sentiments, sources, explain: bool = True) -> list[Term]:
    """Every query of the clip interface, in the order :func:`split_answers` reads:
    label(E, S) for all pairs, emotion(E), sentiment(S), then sentiment_via(R, S)."""
    img = PLACEHOLDER
    return ([Term("label", img, Term(e), Term(s)) for e in emotions for s in sentiments]
            + [Term("emotion", img, Term(e)) for e in emotions]
            + [Term("sentiment", img, Term(s)) for s in sentiments]
            + ([Term("sentiment_via", img, Term(r), Term(s)) for r in sources for s in sentiments] if explain else []))


def split_answers(out: torch.Tensor, e: int, s: int, r: int, explain: bool):
    """``[B, n_terms]`` in :func:`clip_terms` order -> joint [B, E, S], emotion [B, E],
    sentiment [B, S], via [B, R, S] (or None)."""
    joint, rest = out[:, :e * s].view(-1, e, s), out[:, e * s:]
    via = rest[:, e + s:].view(-1, r, s) if explain else None
    return joint, rest[:, :e], rest[:, e:e + s], via


_COMPILED: dict = {}


class CompiledClipEngine(nn.Module):
    """One circuit with every query of the interface, evaluated on whole batches."""

    name = "compiled"

    def __init__(self, program: Program, networks: dict, emotions, sentiments, sources):
        super().__init__()
        self.networks = networks
        self.rules = RuleLogits(program)
        key = (str(program.path), program.text, emotions, sentiments)
        self.terms = clip_terms(emotions, sentiments, sources)
        self.shape = (len(emotions), len(sentiments), len(sources))
        if key not in _COMPILED:  # about a second; once per program text in this process, and on disk
            domains = {n.network: n.domain for n in program.neural}
            options = ("clip", tuple(self.terms), tuple(sorted((k, tuple(v)) for k, v in domains.items())))
            _COMPILED[key] = load_or_build(program.name, program.text, options,
                                           lambda: compile_queries(program, self.terms, domains), CompiledQueries)
        self.cq = _COMPILED[key]
        self.terms = [t if t in self.cq.roots else FALSE for t in self.terms]
        # every answer (one key), and the label(E, S) query (key E * S_count + S)
        self.all_cone = self.cq.cone([self.terms])
        self.label_cone = self.cq.cone([[t] for t in self.terms[:len(emotions) * len(sentiments)]])

    def rule_probs(self) -> list[float]:
        return self.rules.probs().tolist()

    def set_rule_probs(self, probs) -> None:
        self.rules.set(probs)

    def _leaves(self, batch, rule_probs) -> PackedLeaves:
        outputs = run_networks(self.networks, self.cq.nn_blocks, batch.tensors)  # every clip has every source
        return self.cq.pack_all(outputs, self.rules.probs() if rule_probs is None else rule_probs, len(batch))

    def query(self, batch, explain: bool, rule_probs: torch.Tensor | None = None):
        """``rule_probs`` ([n_params]) replaces the learned probabilities (tests take gradients there)."""
        out = self.all_cone(self._leaves(batch, rule_probs), torch.zeros(len(batch), dtype=torch.long))
        joint, emotion, sentiment, via = split_answers(out, *self.shape, explain=True)
        return joint, emotion, sentiment, (via if explain else None)

    def label_query(self, batch) -> torch.Tensor:
        """P(label(clip, emotion, sentiment)) at each clip's two labels: [B]."""
        keys = batch.labels * self.shape[1] + batch.sentiments
        return self.label_cone(self._leaves(batch, None), keys)[:, 0]


class DeepProbLogClipEngine(DeepProbLogEngine):
    """The reference: DeepProbLog's exact engine, one ground query at a time."""

    def __init__(self, program: Program, networks: dict, emotions, sentiments, sources, param_lr: float = 0.01):
        super().__init__(program, networks, param_lr=param_lr, emotions=emotions)
        self.sentiments, self.clip_sources = tuple(sentiments), tuple(sources)

    def query(self, batch, explain: bool):
        terms = clip_terms(self.emotions, self.sentiments, self.clip_sources, explain)
        out = self.ground_values(batch, [terms] * len(batch))
        return split_answers(out, len(self.emotions), len(self.sentiments), len(self.clip_sources), explain)

    def label_query(self, batch) -> torch.Tensor:
        terms = [[Term("label", PLACEHOLDER, Term(self.emotions[y]), Term(self.sentiments[z]))]
                 for y, z in zip(batch.labels.tolist(), batch.sentiments.tolist())]
        return self.ground_values(batch, terms)[:, 0]


#: the engines a clip program runs on, by name
ENGINES = {"compiled": CompiledClipEngine, "deepproblog": DeepProbLogClipEngine}


class ClipLogicModel(RulesMixin, nn.Module):
    """A clip program bound to networks, evaluated by one of the two engines."""

    def __init__(self, program="clip_sentiment", networks: dict | None = None, engine: str = "compiled",
                 param_lr: float = 0.01):
        super().__init__()
        self.program = program if isinstance(program, Program) else load_program(program, check_bindings=False)
        if self.program.kind != "clip":
            raise ProgramError(f"{self.program.path.name} is an {self.program.kind} program; a clip model needs "
                               "a clip program (emotion/2, sentiment/2, sentiment_via/3, label/3)")
        self.networks = self.program.bind(networks or {})
        self.emotions = EMOTIONS
        self.sentiments = SENTIMENTS
        self.sources = sentiment_sources_of(self.program)
        self.engine_name = engine
        if engine not in ENGINES:
            raise UserError(f"unknown engine {engine!r}; known engines: {', '.join(ENGINES)}")
        kw = {"param_lr": param_lr} if engine == "deepproblog" else {}
        self.engine = ENGINES[engine](self.program, dict(self.networks), self.emotions, self.sentiments,
                                      self.sources, **kw)

    def forward(self, batch, explain: bool = False, rule_probs: torch.Tensor | None = None) -> ClipOutput:
        kw = {"rule_probs": rule_probs} if rule_probs is not None else {}
        joint, emotion, sentiment, via = self.engine.query(batch, explain, **kw)
        posterior = via / sentiment.unsqueeze(1).clamp_min(1e-30) if explain else None
        return ClipOutput(emotion=emotion, sentiment=sentiment, joint=joint, sources=self.sources, posterior=posterior)

    def nll(self, batch, class_weights: torch.Tensor | None = None, eps: float = 1e-12) -> torch.Tensor:
        """Mean -log P(emotion = label, sentiment = label | clip): the loss uses both labels.
        ``class_weights`` ([E], optional) weights each clip by its emotion label."""
        if (batch.labels < 0).any() or (batch.sentiments < 0).any():
            raise UserError("every training clip needs an emotion label and a sentiment label")
        logp = self.engine.label_query(batch).clamp_min(eps).log()
        if class_weights is None:
            return -logp.mean()
        w = class_weights.to(logp.dtype)[batch.labels]
        return -(w * logp).sum() / w.sum()

    # -- what was learned ---------------------------------------------------
    def _groups(self, functor: str) -> dict[str, dict[str, float]]:
        table = self.rule_table()
        out = {g.context[0] if g.context else g.functor: table[g.key] for g in self.program.groups if g.functor == functor}
        if not out:
            raise ProgramError(f"{self.program.path.name} has no learnable {functor}/... disjunction")
        return out

    def polarity_table(self) -> dict[str, dict[str, float]]:
        """P(sentiment | emotion): the learned ``polarity/2`` table, one row per emotion."""
        return self._groups("polarity")

    def sentiment_sources(self) -> dict[str, float]:
        """P(sentiment source): how far the program trusts the sentiment head vs the emotion."""
        return self._groups("sentiment_source")["sentiment_source"]
