"""Loading, validating and describing the ProbLog programs in ``logic/programs``.

A program is a DeepProbLog file: ``nn(Net, [X], Y, Domain) :: pred(X, Y).``
declares a neural predicate bound by name to a network of ``neural.registry``,
and ``t(P)::a; t(Q)::b.`` declares a learnable annotated disjunction (a *rule
group*). Every image program answers the same four queries (see
``source_selection.pl``): ``emotion/3``, ``via/4``, ``selected/3``, ``valid/2``;
every clip program ``emotion/2``, ``sentiment/2``, ``sentiment_via/3``,
``label/3`` (see ``clip_sentiment.pl``).

This module only reads programs; the engines (``logic/engines``) evaluate them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from problog.logic import AnnotatedDisjunction, Clause, Constant, Or, Term, term2list
from problog.program import PrologFile, PrologString, SimpleProgram

from logic.sources import Source, source_table
from neural.common import UserError

PROGRAM_DIR = Path(__file__).resolve().parent / "programs"

#: The queries each kind of program answers (functor, arity): an image program
#: chooses a source per context (see source_selection.pl), a clip program ties a
#: clip's emotion to its sentiment (see clip_sentiment.pl).
INTERFACES = {
    "image": (("emotion", 3), ("via", 4), ("selected", 3), ("valid", 2)),
    "clip": (("emotion", 2), ("sentiment", 2), ("sentiment_via", 3), ("label", 3)),
}
QUERY_INTERFACE = INTERFACES["image"]


class ProgramError(UserError):
    """A program that cannot be loaded: parse error, unbound network, bad interface."""


@dataclass(frozen=True)
class NeuralPredicate:
    network: str  # name of the network in neural.registry
    predicate: str  # the functor it declares: nn(...) :: predicate(X, Y)
    domain: tuple[str, ...]  # the output values, in the network's output order
    line: int | None  # where it is declared


@dataclass(frozen=True)
class RuleGroup:
    """One learnable annotated disjunction.

    ``key`` names it for people: the head's functor and all arguments but the
    last (``trust(n1_large)``); ``options`` are the last arguments (the choices).
    ``params`` are the global parameter indices, in DeepProbLog's order.
    """

    key: str
    functor: str
    context: tuple[str, ...]
    options: tuple[str, ...]
    params: tuple[int, ...]


def available_programs(kind: str | None = None) -> list[str]:
    """Names of the shipped programs; ``kind`` (``image``/``clip``) keeps only that kind."""
    names = sorted(p.stem for p in PROGRAM_DIR.glob("*.pl"))
    return names if kind is None else [n for n in names if Program(n).kind == kind]


def resolve_program_path(name_or_path: str | Path) -> Path:
    """A program name (``context_selection``) or a path to a ``.pl`` file."""
    p = Path(name_or_path)
    if p.suffix == ".pl" or p.parent != Path("."):
        if not p.is_file():
            raise ProgramError(f"program file not found: {p}")
        return p.resolve()
    candidate = PROGRAM_DIR / f"{p}.pl"
    if not candidate.is_file():
        raise ProgramError(
            f"unknown program {str(name_or_path)!r}; known programs: {', '.join(available_programs())}"
        )
    return candidate


def _line_of(stmt, text: str) -> int | None:
    """1-based line of a parsed statement (ProbLog records a character offset)."""
    for node in (stmt, getattr(stmt, "head", None), *(getattr(stmt, "heads", None) or ())):
        loc = getattr(node, "location", None)
        if isinstance(loc, tuple) and loc and isinstance(loc[-1], int):
            return text.count("\n", 0, loc[-1]) + 1
    return None


def _t_init(prob: Term) -> float | None:
    """Initial value of ``t(P)``; ``None`` for ``t(_)`` (chosen by the caller)."""
    arg = prob.args[0]
    try:
        return float(arg)
    except Exception:  # t(_) is a variable: no initial value given
        return None


def _is_t(prob) -> bool:
    return isinstance(prob, Term) and prob.functor == "t" and len(prob.args) == 1


def _is_nn(prob) -> bool:
    return isinstance(prob, Term) and prob.functor == "nn"


class Program:
    """A parsed program: its neural predicates, rule groups and a ProbLog
    translation in which every probability is a symbolic leaf:
    ``nn(Net, [Input], J)`` for output ``J`` of a network and ``t(I)`` for
    learnable parameter ``I``. Parameter indices follow DeepProbLog's order, so
    both engines name the same parameter with the same index."""

    def __init__(self, path: str | Path):
        self.path = resolve_program_path(path)
        self.name = self.path.stem
        self.text = self.path.read_text()
        try:
            statements = list(PrologFile(str(self.path)))
        except Exception as exc:  # problog's ParseError carries file and line
            raise ProgramError(f"{self.path}: cannot parse: {_describe_parse_error(exc)}") from None
        self.neural: list[NeuralPredicate] = []
        self.groups: list[RuleGroup] = []
        self.init: list[float | None] = []
        self.translated = SimpleProgram()
        self._sources_cache: dict[str, list[str]] = {}
        self._prepared = None  # ProbLog's database of ``translated``, built on first use
        for stmt in statements:
            for out in self._translate(stmt):
                self.translated.add_statement(out)
        self._check_interface()

    def __getstate__(self) -> dict:
        # ProbLog's prepared database does not pickle (Ray sends programs to workers); it is rebuilt on use
        return {**self.__dict__, "_prepared": None}

    # -- translation --------------------------------------------------------
    def _new_param(self, prob: Term) -> int:
        self.init.append(_t_init(prob))
        return len(self.init) - 1

    def _translate(self, stmt):
        if isinstance(stmt, Or) and not isinstance(stmt, AnnotatedDisjunction):
            heads = stmt.to_list()
            return [Or.from_list(self._translate_choices(heads, _line_of(stmt, self.text)))]
        if isinstance(stmt, AnnotatedDisjunction):
            heads = self._translate_choices(list(stmt.heads), _line_of(stmt, self.text))
            return [AnnotatedDisjunction(heads, stmt.body)]
        head = stmt.head if isinstance(stmt, Clause) else stmt
        prob = head.probability if isinstance(head, Term) else None
        if _is_nn(prob):
            return [self._translate_nn(stmt, head, prob)]
        if _is_t(prob):
            i = self._new_param(prob)
            self._add_group([head], [i], _line_of(stmt, self.text))
            new_head = head.with_probability(Term("t", Constant(i)))
            return [Clause(new_head, stmt.body) if isinstance(stmt, Clause) else new_head]
        return [stmt]

    def _translate_choices(self, heads, line):
        out, params, t_heads = [], [], []
        for h in heads:
            if _is_t(h.probability):
                i = self._new_param(h.probability)
                params.append(i)
                t_heads.append(h)
                out.append(h.with_probability(Term("t", Constant(i))))
            else:
                out.append(h)
        if params:
            self._add_group(t_heads, params, line)
        return out

    def _add_group(self, heads, params, line):
        first = heads[0]
        ctx = tuple(str(a) for a in first.args[:-1])
        for h in heads:
            if h.functor != first.functor or tuple(str(a) for a in h.args[:-1]) != ctx:
                raise ProgramError(
                    f"{self.path.name}:{line}: a learnable disjunction must choose among "
                    f"{first.functor}(..., Choice) heads that differ only in the last argument"
                )
        key = f"{first.functor}({', '.join(ctx)})" if ctx else first.functor
        options = tuple(str(h.args[-1]) if h.args else str(h) for h in heads)
        self.groups.append(RuleGroup(key, first.functor, ctx, options, tuple(params)))

    def _translate_nn(self, stmt, head, prob):
        line = _line_of(stmt, self.text)
        if len(prob.args) != 4:
            raise ProgramError(
                f"{self.path.name}:{line}: only nn(Net, Inputs, Output, Domain) neural predicates are supported"
            )
        net, inputs, output, domain = prob.args
        values = term2list(domain, False)
        self.neural.append(NeuralPredicate(str(net), head.functor, tuple(str(v) for v in values), line))
        heads = []
        for j, value in enumerate(values):
            h = Term(head.functor, *head.args, p=Term("nn", net, inputs, Constant(j)))
            heads.append(h.apply_term({output: value}))
        return AnnotatedDisjunction(heads, stmt.body) if isinstance(stmt, Clause) else Or.from_list(heads)

    def _check_interface(self):
        """Which interface of :data:`INTERFACES` the program answers (``self.kind``)."""
        defined = set()
        for stmt in self.translated:
            for h in _heads(stmt):
                defined.add((h.functor, h.arity))
        missing = {kind: [f"{f}/{a}" for f, a in queries if (f, a) not in defined] for kind, queries in INTERFACES.items()}
        self.kind = next((kind for kind, miss in missing.items() if not miss), None)
        if self.kind is None:
            wanted = "; or ".join(f"a {kind} program answers {', '.join(f'{f}/{a}' for f, a in q)}"
                                  for kind, q in INTERFACES.items())
            closest = min(missing, key=lambda k: len(missing[k]))
            raise ProgramError(f"{self.path.name}: does not define {', '.join(missing[closest])} ({wanted})")

    # -- binding ------------------------------------------------------------
    @cached_property
    def networks(self) -> tuple[str, ...]:
        """Names of the networks the program's neural predicates are bound to."""
        return tuple(dict.fromkeys(n.network for n in self.neural))

    @cached_property
    def sources(self) -> dict[str, Source]:
        """The program's tensor sources (:mod:`logic.sources`): ``{name: Source}``,
        each with the networks that read it and the cached feature it reads."""
        return source_table(self)

    @property
    def tensor_networks(self) -> dict[str, tuple[str, ...]]:
        """``{source name: (network, ...)}``: the networks reading each source (see :attr:`sources`)."""
        return {name: s.networks for name, s in self.sources.items()}

    def check_bindings(self, available: dict | list | None = None) -> None:
        """Every ``nn(Net, ...)`` must name a registered network (or one in ``available``)."""
        from neural.registry import list_networks

        from neural.registry import default_output_size

        known = set(list_networks()) if available is None else set(available)
        for n in self.neural:
            if n.network not in known:
                raise ProgramError(
                    f"{self.path.name}:{n.line}: nn({n.network}, ...) names no registered network; "
                    f"known networks: {', '.join(sorted(known))}"
                )
            if available is None:
                self._check_width(n, default_output_size(n.network))

    def _check_width(self, n, width: int | None) -> None:
        """An ``nn`` atom must list one value per network output: refused here, at load or
        bind time, rather than as a shape error in the middle of training."""
        if width is not None and width != len(n.domain):
            raise ProgramError(
                f"{self.path.name}:{n.line}: nn({n.network}, ...) lists {len(n.domain)} values "
                f"({', '.join(n.domain)}), but the network outputs {width}"
            )

    def bind(self, networks: dict):
        """The modules bound to the program's ``nn(Net, ...)`` names, as an
        ``nn.ModuleDict``; a name with no module raises, listing the bound ones."""
        from torch import nn

        missing = [n for n in self.networks if n not in networks]
        if missing:
            raise ProgramError(f"{self.path.name}: no network bound to {', '.join(missing)}; "
                               f"bound: {', '.join(sorted(networks)) or 'none'}")
        from neural.registry import output_size

        for n in self.neural:
            self._check_width(n, output_size(networks[n.network]))
        return nn.ModuleDict({k: networks[k] for k in self.networks})

    def domain_of(self, network: str) -> tuple[str, ...]:
        for n in self.neural:
            if n.network == network:
                return n.domain
        raise KeyError(network)

    def sources_in(self, context: str) -> list[str]:
        """The sources ``selected/3`` can choose in ``context`` (from the grounding)."""
        if context not in self._sources_cache:
            from problog.engine import DefaultEngine
            from problog.logic import Var

            engine = DefaultEngine()
            if self._prepared is None:  # preparing is most of the cost; grounding does not change the database
                self._prepared = engine.prepare(self.translated)
            gp = engine.ground(self._prepared, Term("selected", Term("img"), Term(context), Var("S")), label="query")
            self._sources_cache[context] = [str(t.args[2]) for t, _ in gp.queries()]
        return self._sources_cache[context]

    # -- parameters ---------------------------------------------------------
    @property
    def n_params(self) -> int:
        return len(self.init)

    def initial_probabilities(self) -> list[float]:
        """Initial value of every parameter: the file's ``t(P)`` values normalised
        per group; ``t(_)`` groups start uniform."""
        probs = [0.0] * self.n_params
        for g in self.groups:
            vals = [self.init[i] for i in g.params]
            if any(v is None for v in vals):
                vals = [1.0] * len(vals)
            total = sum(vals)
            for i, v in zip(g.params, vals):
                probs[i] = v / total if len(g.params) > 1 else min(max(v, 0.0), 1.0)
        return probs

    def with_probabilities(self, probs: list[float], decimals: int = 10) -> str:
        """The program text with every ``t(...)`` replaced by the given values,
        comments and layout kept. The result parses and runs with ProbLog: each
        disjunction's values are rounded to ``decimals`` places so that they sum
        to exactly 1 (the last choice takes the remainder)."""
        from decimal import Decimal

        if len(probs) != self.n_params:
            raise ValueError(f"expected {self.n_params} probabilities, got {len(probs)}")
        text_values = [""] * self.n_params
        q = Decimal(1).scaleb(-decimals)
        for g in self.groups:
            vals = [Decimal(repr(float(probs[i]))).quantize(q) for i in g.params]
            if len(vals) > 1:
                vals[-1] = Decimal(1) - sum(vals[:-1])
            for i, v in zip(g.params, vals):
                text_values[i] = format(v.normalize(), "f")
        it = iter(text_values)
        out_lines = []
        pattern = re.compile(r"\bt\((?:[^()]|\([^()]*\))*\)\s*::")
        for line in self.text.splitlines(keepends=True):
            code, sep, comment = line.partition("%")
            code = pattern.sub(lambda m: f"{next(it)}::", code)
            out_lines.append(code + sep + comment)
        if next(it, None) is not None:  # the textual scan must meet exactly the parsed parameters
            raise RuntimeError("parameter count mismatch while writing the program")
        return "".join(out_lines)


def _heads(stmt):
    if isinstance(stmt, AnnotatedDisjunction):
        return list(stmt.heads)
    if isinstance(stmt, Or):
        return stmt.to_list()
    if isinstance(stmt, Clause):
        return [stmt.head]
    if isinstance(stmt, Term):
        return [stmt]
    return []


def _describe_parse_error(exc: Exception) -> str:
    """ProbLog parse errors carry (file, line, column); say them plainly."""
    loc = getattr(exc, "location", None)
    msg = getattr(exc, "base_message", None) or str(exc)
    if isinstance(loc, tuple) and len(loc) == 3 and loc[1] is not None:
        return f"line {loc[1]}, column {loc[2]}: {msg}"
    return str(exc)


def load_program(name_or_path: str | Path, check_bindings: bool = True) -> Program:
    prog = Program(name_or_path)
    if check_bindings:
        prog.check_bindings()
    return prog


def parse_problog(text: str) -> list:
    """Parse ProbLog text (used to check that written programs load)."""
    return list(PrologString(text))
