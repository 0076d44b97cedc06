"""The engine interface: what a :class:`logic.model.LogicModel` asks of an engine.

Like DeepProbLog's ``Engine``, one abstract class that every engine implements,
so the model never asks which engine it holds:

* :meth:`Engine.compile` prepares the program for a :class:`QuerySpec` (the
  ground queries the model will ask, see below);
* :meth:`Engine.evaluate` answers query families for a batch, given each
  sample's context; :meth:`Engine.evaluate_static` answers a family that
  involves no network (no batch needed);
* the rule parameters: :meth:`rule_probs_tensor`, :meth:`set_rule_probs`,
  :meth:`rule_parameters` (what a torch optimizer may train),
  :meth:`rule_optimizer` and :meth:`rule_table`.

Engines are registered by name (:func:`register_engine`) and built with
:func:`make_engine`; an unknown name, or an option the engine does not have,
is a :class:`~neural.common.UserError` naming the known ones.
"""
from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from problog.logic import Term
from torch import nn

from neural.common import UserError

#: the sample placeholder every query is written with (``emotion(img, n0, happy)``)
PLACEHOLDER = Term("img")
#: a query that is false by construction (a source absent in a context): probability 0
FALSE = Term("false")


@dataclass(frozen=True)
class Family:
    """Ground queries answered together. ``rows[key]`` are the terms (written with
    :data:`PLACEHOLDER`) a sample with that key gets, ``[B, len(row)]``; every row has
    the same width. A sample's key is ``context * per_context + sub`` (``sub``: e.g.
    its label). ``neural=False``: the queries involve no network."""

    rows: tuple[tuple[Term, ...], ...]
    per_context: int = 1
    neural: bool = True


@dataclass(frozen=True)
class QuerySpec:
    """What a model asks an engine: its contexts and its query families by name.
    ``check`` (optional) validates the program when it is compiled. ``order``
    (optional): per context, the neural terms in the order to ground them, which
    numbers the circuit's variables (by default the rows' order)."""

    contexts: tuple[str, ...]
    families: dict[str, Family]
    check: Callable | None = None
    order: tuple[tuple[Term, ...], ...] | None = None

    def key(self) -> tuple:
        """Everything that decides the compiled structure (``check`` only refuses)."""
        return (self.contexts, tuple((n, f.rows, f.per_context, f.neural) for n, f in self.families.items()),
                self.order)

    def context_terms(self, context: int, neural: bool) -> list[Term]:
        """The distinct non-false terms of the (non-)neural families' rows of one context."""
        out: dict[Term, None] = {}
        for f in self.families.values():
            if f.neural == neural:
                for row in f.rows[context * f.per_context:(context + 1) * f.per_context]:
                    out.update((t, None) for t in row if t != FALSE)
        return list(out)

    def terms(self, neural: bool) -> list[Term]:
        """Every term of the (non-)neural families, context by context, in grounding order."""
        out: dict[Term, None] = {}
        for c in range(len(self.contexts)):
            if neural and self.order is not None:
                out.update((t, None) for t in self.order[c])
            out.update((t, None) for t in self.context_terms(c, neural))
        return list(out)


class Engine(nn.Module, ABC):
    """A program bound to networks, answering a :class:`QuerySpec` on batches."""

    name: str = ""
    #: where the engine evaluates (the networks run on their own device)
    placement: str = ""
    #: whether a batch is evaluated at once (False: sample by sample, so a network
    #: trained through the engine never sees a batch, which a BatchNorm needs)
    batched: bool = True
    #: whether the engine runs on the CPU only (it refuses networks on another device)
    cpu_only: bool = False
    #: whether the rule parameters are torch parameters (else the engine's own optimizer trains them)
    torch_rules: bool = True
    #: how the rule parameters are trained, for the run's log
    rule_training: str = ""

    def __init__(self, program, networks: dict[str, nn.Module], spec: QuerySpec, **options):
        super().__init__()
        self.program, self.spec = program, spec
        self.compile(networks, **options)

    # -- compiling and evaluating ------------------------------------------------
    @abstractmethod
    def compile(self, networks: dict[str, nn.Module], **options) -> None:
        """Prepare ``self.program`` to answer ``self.spec`` with ``networks``; the
        keyword arguments an implementation declares here are its options."""

    @abstractmethod
    def evaluate(self, batch, contexts: torch.Tensor, requests: Sequence[tuple[str, torch.Tensor | None]],
                 rule_probs: torch.Tensor | None = None) -> list[torch.Tensor]:
        """For each ``(family, sub)`` of ``requests``: ``[B, width]``, each sample's row
        ``context * per_context + sub`` (``sub`` [B] long, or None for 0).
        ``contexts`` [B] long indexes ``spec.contexts``; ``rule_probs`` [n_params]
        replaces the learned rule probabilities (a tensor to take gradients at)."""

    @abstractmethod
    def evaluate_static(self, family: str, key: int) -> torch.Tensor:
        """``[width]``: row ``key`` of a family that involves no network."""

    # -- rule parameters ---------------------------------------------------------
    @abstractmethod
    def rule_probs_tensor(self) -> torch.Tensor:
        """[n_params] the rule probabilities (differentiable where the engine trains them with torch)."""

    @abstractmethod
    def set_rule_probs(self, probs) -> None:
        ...

    @abstractmethod
    def rule_parameters(self) -> list[nn.Parameter]:
        """The torch parameters that hold the rules, for a torch optimizer (with the
        networks', say); empty when the engine trains them with its own optimizer."""

    @abstractmethod
    def rule_optimizer(self, lr: float, kind: str = "adam"):
        """An optimizer over the rule parameters with ``zero_grad()``/``step()``."""

    def rule_probs(self) -> list[float]:
        return [float(p) for p in self.rule_probs_tensor().detach().cpu()]

    def rule_table(self) -> dict[str, dict[str, float]]:
        """``{group key: {option: probability}}`` for every learnable disjunction."""
        probs = self.rule_probs()
        return {g.key: {o: probs[i] for o, i in zip(g.options, g.params)} for g in self.program.groups}


ENGINES: dict[str, type[Engine]] = {}


def register_engine(cls: type[Engine]) -> type[Engine]:
    """Class decorator: make an engine available by its ``name``."""
    ENGINES[cls.name] = cls
    return cls


def batched_engines() -> str:
    """The engines that evaluate whole batches, as a user-facing list ("compiled")."""
    return ", ".join(name for name, cls in ENGINES.items() if cls.batched)


def engine_options(cls: type[Engine]) -> list[str]:
    params = inspect.signature(cls.compile).parameters.values()
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY or (p.default is not p.empty and p.kind is p.POSITIONAL_OR_KEYWORD)]


def engine_class(name: str) -> type[Engine]:
    import logic.engines  # noqa: F401 - registers the shipped engines

    if name not in ENGINES:
        raise UserError(f"unknown engine {name!r}; known engines: {', '.join(ENGINES)}")
    return ENGINES[name]


def make_engine(name: str, program, networks: dict, spec: QuerySpec, **options) -> Engine:
    """The engine ``name`` over ``program``; ``options`` are that engine's own keyword
    arguments (an option another engine has is refused, saying whose it is)."""
    cls = engine_class(name)
    known = engine_options(cls)
    for option, value in options.items():
        if option not in known:
            owners = [n for n, c in ENGINES.items() if option in engine_options(c)]
            whose = f"an option of the {', '.join(owners)} engine" if owners else "no engine's option"
            raise UserError(f"{option} {value!r} is {whose}, not of {name!r}; "
                            f"{name} takes: {', '.join(known) or 'no options'}")
    return cls(program, networks, spec, **options)
