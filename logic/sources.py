"""The source table of a program: which network reads which cached tensor.

A program reaches a sample's tensors only through calls
``pred(tensor(Name(Img)), ...)`` of its neural predicates, and
``nn(Net, [X], Y, Domain) :: pred(X, Y)`` binds ``pred`` to network ``Net``.
Together they say, for every tensor *source* the program reads, which networks
read it; nothing about it is spelled in Python. Binding, stage 0, the frozen
outputs, the query and the report all read this table.

Where several networks read one source (va_selection's ``va``: the valence and
the arousal bins), their outputs are laid side by side in the order the
program's rule bodies call them: :attr:`Source.columns` gives each network's
columns, which is how precomputed (frozen) outputs of the source are stored and
sliced again (:class:`logic.given.GivenSlice`).
"""
from __future__ import annotations

from dataclasses import dataclass

from problog.logic import AnnotatedDisjunction, Clause, Term


@dataclass(frozen=True)
class Source:
    """One tensor source of a program.

    ``name``: the tensor the program reads (``tensor(face1(Img))`` -> ``face1``);
    ``networks``: the networks that read it, in the order the program calls them;
    ``feature``: the cached feature the source is filled from. Today every source
    reads the feature of its own name (a cache writes ``face1``, ``va``, ...);
    it is kept as its own field so that a binding that maps a source to another
    feature says so here, not in a lookup elsewhere.
    ``kind``: the program's query interface (``image`` or ``clip``): what a
    sample is, and so which data the feature comes from.
    ``widths``: each network's number of outputs (its ``nn`` domain), same order.
    """

    name: str
    networks: tuple[str, ...]
    feature: str
    kind: str
    widths: tuple[int, ...]

    @property
    def width(self) -> int:
        """Columns of the source's precomputed outputs: every network's, side by side."""
        return sum(self.widths)

    @property
    def columns(self) -> dict[str, tuple[int, int]]:
        """``{network: (start, stop)}``: each network's columns in the precomputed outputs."""
        out, start = {}, 0
        for net, k in zip(self.networks, self.widths):
            out[net] = (start, start + k)
            start += k
        return out


def tensor_calls(statements, predicates: dict[str, str]) -> dict[str, list[str]]:
    """``{tensor name: [network, ...]}`` from every call ``pred(tensor(Name(Img)), ...)``
    in a rule body, with ``predicates`` mapping a neural predicate's functor to its
    network; in the order the bodies make the calls."""
    found: dict[str, list[str]] = {}

    def walk(term) -> None:
        if not isinstance(term, Term):
            return
        network = predicates.get(term.functor)
        if network is not None and term.args and isinstance(term.args[0], Term) \
                and term.args[0].functor == "tensor" and term.args[0].args:
            name = str(term.args[0].args[0].functor)
            if network not in found.setdefault(name, []):
                found[name].append(network)
        for arg in term.args:  # conjunctions, disjunctions and negations are terms too
            walk(arg)

    for stmt in statements:
        if isinstance(stmt, (Clause, AnnotatedDisjunction)) and stmt.body is not None:
            walk(stmt.body)
    return found


def source_table(program) -> dict[str, Source]:
    """The :class:`Source` of every tensor ``program`` reads, in the order it first reads them."""
    calls = tensor_calls(program.translated, {n.predicate: n.network for n in program.neural})
    return {name: Source(name=name, networks=tuple(nets), feature=name, kind=program.kind,
                         widths=tuple(len(program.domain_of(n)) for n in nets))
            for name, nets in calls.items()}
