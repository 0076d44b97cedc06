"""The ``compiled`` engine: ground and knowledge-compile once, evaluate in batches.

A program is grounded once with ProbLog for a placeholder image ``img`` and
every context (the structure of a proof depends on the context, never on the
image), compiled to one SDD with PySDD through ProbLog's own ``SDD`` formula (so
annotated-disjunction constraints are exactly ProbLog's), and handed to KLay,
which evaluates all query roots of all contexts on a whole batch of literal
weights in torch; each sample then reads the roots of its own context.

Literal weights are *linear* in the leaves: every weight ProbLog assigns is a
network output ``nn(Net, [tensor(Src(img))], J)``, a rule probability ``t(I)``,
a constant, or a complement ``1 - sum(...)`` of an annotated disjunction. We
obtain them by running ProbLog's ``extract_weights`` with a symbolic semiring
(:class:`_LinearSemiring`) and store them as a matrix, so per batch the weights
are one matrix product ``[1, leaves] @ M`` and the circuit is one KLay call.
This is written by hand because no library maps ProbLog's weight semantics onto
a batched circuit; KLay evaluates the circuit, ProbLog/PySDD build it.

Queries follow ProbLog's semantics exactly: ``P(q) = WMC(q & C) / WMC(C)`` with
``C`` the conjunction of the annotated-disjunction constraints.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from problog.engine import DefaultEngine
from problog.evaluator import Semiring
from problog.formula import LogicDAG, LogicFormula
from problog.logic import Term, Var
from problog.sdd_formula import SDD

from logic.program import Program, ProgramError

PLACEHOLDER = Term("img")
FALSE = Term("false")
_ONE = "1"


class _LinearSemiring(Semiring):
    """Weights as linear forms ``{leaf: coefficient}`` (leaf ``"1"`` is the constant)."""

    def one(self):
        return {_ONE: 1.0}

    def zero(self):
        return {}

    def is_one(self, a):
        return a == {_ONE: 1.0}

    def is_zero(self, a):
        return not any(a.values())

    def plus(self, a, b):
        out = dict(a)
        for k, v in b.items():
            out[k] = out.get(k, 0.0) + v
        return out

    def times(self, a, b):  # only ever needed with a constant factor here
        if set(a) <= {_ONE}:
            c = a.get(_ONE, 0.0)
            return {k: c * v for k, v in b.items()}
        if set(b) <= {_ONE}:
            return self.times(b, a)
        raise ValueError("literal weights must be linear in the leaves")

    def negate(self, a):
        return self.plus(self.one(), {k: -v for k, v in a.items()})

    def value(self, a):
        if isinstance(a, Term) and a.functor in ("nn", "t"):
            return {a: 1.0}
        if a is True or a is None:
            return self.one()
        return {_ONE: float(a)}

    def is_dsp(self):
        return True

    def in_domain(self, a):
        return True


def leaf_key(term: Term):
    """``("nn", net, source, j)`` for a network output, ``("t", i)`` for a rule parameter."""
    if term.functor == "t":
        return ("t", int(term.args[0]))
    net, inputs, j = term.args
    (tensor,) = inputs.args[0:1] if inputs.functor == "." else (inputs,)
    src = tensor.args[0].functor  # tensor(src(img))
    return ("nn", str(net), src, int(j))


@dataclass
class CompiledQueries:
    """A circuit over some ground queries of one context, with its literal weights.

    ``roots`` maps each ground query term to its output column (the query
    conjoined with the constraints); the last column is the constraint itself,
    so ``P(q) = out[:, roots[q]] / out[:, -1]``.
    """

    roots: dict  # Term -> column
    circuit: torch.nn.Module
    weight_matrix_pos: torch.Tensor  # [1 + n_leaves, n_vars] float64
    weight_matrix_neg: torch.Tensor
    nn_blocks: tuple[tuple[str, str], ...]  # (network, tensor source) column blocks
    rule_params: list[int]  # parameter index of each rule-probability column

    def evaluate(self, nn_outputs: dict, rule_probs: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Probabilities of every root: ``[b, n_roots]``.

        nn_outputs: (network, source) -> [b, K] distributions
        rule_probs: [n_params] probabilities of all the program's parameters
        """
        # compute in the networks' precision (float32 in training, float64 in the equivalence tests)
        dtype = nn_outputs[self.nn_blocks[0]].dtype if self.nn_blocks else rule_probs.dtype
        parts = [torch.ones(batch_size, 1, dtype=dtype, device=rule_probs.device)]
        parts += [nn_outputs[block] for block in self.nn_blocks]
        if self.rule_params:
            parts.append(rule_probs[self.rule_params].to(dtype).unsqueeze(0).expand(batch_size, -1))
        leaves = torch.cat(parts, dim=1)  # [b, 1 + n_leaves]
        pos = leaves @ self.weight_matrix_pos.to(dtype)  # [b, n_vars]
        neg = leaves @ self.weight_matrix_neg.to(dtype)
        out = self.circuit(pos, neg)  # [b, n_roots + 1]
        return out[:, :-1] / out[:, -1:]


def compile_queries(program: Program, queries: list[Term], network_domains: dict, neural: bool = True) -> CompiledQueries:
    """Ground ``queries`` (may contain variables) and compile them into one KLay circuit.

    ``neural=False`` for queries whose proofs involve no neural predicate.
    """
    import klay

    engine = DefaultEngine()
    db = engine.prepare(program.translated)
    formula = LogicFormula(keep_all=True)
    contexts = list(dict.fromkeys(q.args[1] for q in queries))
    for term in _disjunction_heads(program, engine, db, contexts, neural):
        # labelled, so that the DAG (built by traversal from the names) keeps this order
        formula = engine.ground(db, term, target=formula, label=LogicFormula.LABEL_QUERY)
    for q in queries:
        formula = engine.ground(db, q, target=formula, label=LogicFormula.LABEL_QUERY)
    dag = LogicDAG.create_from(formula, keep_named=True)
    sdd = SDD.create_from(dag)
    mgr = sdd.get_manager()
    constraint = sdd.get_constraint_inode()

    # Symbolic literal weights, exactly as ProbLog assigns them.
    weights = sdd.extract_weights(_LinearSemiring())
    n_vars = mgr.get_manager().var_count()
    forms = {}
    for atom, pair in weights.items():
        var = sdd.atom2var.get(atom)
        if var is not None:
            forms[var] = pair
    keys = {k for pair in forms.values() for form in pair for k in form if k != _ONE}
    leaves = {k: leaf_key(k) for k in keys}
    nn_blocks = tuple(sorted({(key[1], key[2]) for key in leaves.values() if key[0] == "nn"}))
    rule_params = sorted(key[1] for key in leaves.values() if key[0] == "t")
    col = {}
    for net, src in nn_blocks:
        for j in range(len(network_domains[net])):
            col[("nn", net, src, j)] = 1 + len(col)
    for i in rule_params:
        col[("t", i)] = 1 + len(col)
    mpos = torch.zeros(1 + len(col), n_vars, dtype=torch.float64)
    mneg = torch.zeros_like(mpos)
    for var in range(1, n_vars + 1):
        pair = forms.get(var, ({_ONE: 1.0}, {_ONE: 1.0}))  # unweighted: 1 both ways
        for m, form in zip((mpos, mneg), pair):
            for k, c in form.items():
                m[0 if k == _ONE else col[leaves[k]], var - 1] += c
    circuit = klay.Circuit()
    roots = {}
    wanted = {q for q in queries if q.is_ground()}
    open_queries = [q for q in queries if not q.is_ground()]
    for term, node in sdd.queries():
        if term not in wanted and not any(_matches(q, term) for q in open_queries):
            continue  # an ordering helper, not a query
        if node is None:  # no proof: probability 0
            sdd_node = mgr.false()
        else:
            sdd_node = mgr.conjoin(sdd.get_inode(node), constraint)
        circuit.add_sdd(sdd_node)
        roots[term] = len(roots)
    circuit.add_sdd(mgr.false())
    roots[FALSE] = len(roots)  # a root that is always 0 (sources absent in a context)
    circuit.add_sdd(constraint)
    module = circuit.to_torch_module(semiring="real", compile=False)

    return CompiledQueries(roots, module, mpos, mneg, nn_blocks, rule_params)


def _matches(pattern: Term, term: Term) -> bool:
    """Whether ground ``term`` is an instance of ``pattern`` (variables match anything)."""
    if isinstance(pattern, Var):
        return True
    if pattern.functor != term.functor or pattern.arity != term.arity:
        return False
    return all(_matches(p, t) for p, t in zip(pattern.args, term.args))


def _disjunction_heads(program: Program, engine, db, contexts: list[Term], neural: bool) -> list[Term]:
    """Open head patterns of every annotated disjunction the context can use, in
    program order: ``trust(n1_large, S)``, ``circumplex(negative, low, E)``,
    ``scene_emotion(tensor(scene(img)), E)``, ...

    Grounding these first (unlabelled) numbers the atoms, hence the SDD
    variables, one disjunction at a time. Grounding query by query would
    interleave the disjunctions' variables, and with ProbLog's default vtree the
    SDD of their exactly-one constraints then grows exponentially (va_selection
    took minutes and gigabytes).
    """
    heads = [Term(g.functor, *(Term(a) for a in g.context), Var("X")) for g in program.groups]
    if not neural:
        return heads
    scratch = LogicFormula(keep_all=True)
    for ctx in contexts:
        scratch = engine.ground(db, Term("via", PLACEHOLDER, ctx, Var("S"), Var("E")), target=scratch,
                                label=LogicFormula.LABEL_QUERY)
    seen = set()
    for _, atom, kind in scratch:
        if kind != "atom":
            continue
        name = atom.name
        prob = atom.probability
        if isinstance(prob, Term) and prob.functor == "nn" and name is not None:
            inner = name.args[2] if name.functor == "choice" else name
            pattern = Term(inner.functor, *inner.args[:-1], Var("X"))
            if pattern not in seen:
                seen.add(pattern)
                heads.append(pattern)
    return heads


@dataclass
class CompiledProgram:
    """Every context of a program in one circuit, with index tables per context.

    ``main`` answers emotion/3 and valid/2 for every context (all that training
    needs), ``explain`` answers via/4 (the source posterior), ``selection``
    answers selected/3 and valid/2 (no networks involved).
    Index tables give, per context, the output column of each query; a source
    that does not exist in a context points at the always-false root.
    """

    contexts: tuple[str, ...]
    sources: tuple[str, ...]  # every source of any context, in program order
    main: CompiledQueries
    explain: CompiledQueries
    selection: CompiledQueries
    emotion_cols: torch.Tensor  # [C, E]
    via_cols: torch.Tensor  # [C, S, E] (in ``explain``)
    valid_cols: torch.Tensor  # [C]
    selected_cols: torch.Tensor  # [C, S] (in ``selection``)
    selection_valid_cols: torch.Tensor  # [C]
    needs: torch.Tensor  # [C, n_blocks] bool: the context reads this (network, source) block


def compile_program(program: Program, contexts, emotions: tuple[str, ...], network_domains: dict) -> CompiledProgram:
    img = PLACEHOLDER
    ctxs = [Term(c) for c in contexts]
    sources = tuple(dict.fromkeys(s for c in contexts for s in program.sources_in(c)))
    selection = compile_queries(
        program, [q for c in ctxs for q in (Term("selected", img, c, Var("S")), Term("valid", img, c))],
        network_domains, neural=False,
    )
    main_queries, via_queries = [], []
    for c in ctxs:
        main_queries += [Term("emotion", img, c, Term(e)) for e in emotions]
        main_queries.append(Term("valid", img, c))
        via_queries += [Term("via", img, c, Term(s), Term(e)) for s in program.sources_in(str(c)) for e in emotions]
    main = compile_queries(program, main_queries, network_domains)
    explain = compile_queries(program, via_queries, network_domains)
    outside = sorted(_derived_emotions(program, contexts) - set(emotions))
    if outside:
        raise ProgramError(
            f"{program.path.name}: emotion/3 derives values outside the vocabulary ({', '.join(outside)}); "
            f"the vocabulary is: {', '.join(emotions)}"
        )

    def col(cq: CompiledQueries, term: Term) -> int:
        return cq.roots.get(term, cq.roots[FALSE])

    emotion_cols = [[col(main, Term("emotion", img, c, Term(e))) for e in emotions] for c in ctxs]
    via_cols = [[[col(explain, Term("via", img, c, Term(s), Term(e))) for e in emotions] for s in sources] for c in ctxs]
    valid_cols = [col(main, Term("valid", img, c)) for c in ctxs]
    selected_cols = [[col(selection, Term("selected", img, c, Term(s))) for s in sources] for c in ctxs]
    selection_valid = [col(selection, Term("valid", img, c)) for c in ctxs]
    needs = torch.zeros(len(ctxs), len(main.nn_blocks), dtype=torch.bool)
    for i, c in enumerate(contexts):
        for j, block in enumerate(main.nn_blocks):
            needs[i, j] = block in _blocks_read(program, c)
    as_long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return CompiledProgram(
        contexts=tuple(contexts), sources=sources, main=main, explain=explain, selection=selection,
        emotion_cols=as_long(emotion_cols), via_cols=as_long(via_cols), valid_cols=as_long(valid_cols),
        selected_cols=as_long(selected_cols), selection_valid_cols=as_long(selection_valid), needs=needs,
    )


def _derived_emotions(program: Program, contexts) -> set[str]:
    engine = DefaultEngine()
    db = engine.prepare(program.translated)
    out = set()
    for c in contexts:
        f = engine.ground(db, Term("emotion", PLACEHOLDER, Term(c), Var("E")), label=LogicFormula.LABEL_QUERY)
        out |= {str(t.args[2]) for t, _ in f.queries()}
    return out


def _blocks_read(program: Program, context: str) -> set[tuple[str, str]]:
    """The (network, source) pairs whose outputs the proofs of ``context`` use."""
    engine = DefaultEngine()
    db = engine.prepare(program.translated)
    f = engine.ground(db, Term("via", PLACEHOLDER, Term(context), Var("S"), Var("E")), label=LogicFormula.LABEL_QUERY)
    out = set()
    for _, atom, kind in f:
        if kind == "atom" and isinstance(atom.probability, Term) and atom.probability.functor == "nn":
            key = leaf_key(atom.probability)
            out.add((key[1], key[2]))
    return out
