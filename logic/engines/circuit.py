"""The ``compiled`` engine's compiler: ground and knowledge-compile once, evaluate in batches.

A program is grounded once with ProbLog for a placeholder image ``img`` and
every context (the structure of a proof depends on the context, never on the
image), compiled to one SDD with PySDD through ProbLog's own ``SDD`` formula (so
annotated-disjunction constraints are exactly ProbLog's), and handed to KLay,
which turns it into a layered circuit over all query roots of all contexts.
A batch is evaluated per sample on the cone of the roots that sample's
context (and label) needs (``engines/cone.py``); KLay's own torch module,
which evaluates every root for every sample, answers the network-free
selection queries and is the reference the cones are tested against.

Literal weights are *linear* in the leaves: every weight ProbLog assigns is a
network output ``nn(Net, [tensor(Src(img))], J)``, a rule probability ``t(I)``,
a constant, or a complement ``1 - sum(...)`` of an annotated disjunction. We
obtain them by running ProbLog's ``extract_weights`` with a symbolic semiring
(:class:`_LinearSemiring`) and store them as a matrix, so per batch the weights
are one matrix product ``[1, leaves] @ M``. This is written by hand because
no library maps ProbLog's weight semantics onto a batched circuit; ProbLog,
PySDD and KLay build the circuit.

Queries follow ProbLog's semantics exactly: ``P(q) = WMC(q & C) / WMC(C)`` with
``C`` the conjunction of the annotated-disjunction constraints.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from problog.engine import DefaultEngine
from problog.evaluator import Semiring
from problog.formula import LogicDAG, LogicFormula
from problog.logic import Term, Var
from problog.sdd_formula import SDD

from logic.engines.base import FALSE
from logic.engines.cone import FlatCircuit, KeyedCone, LeafEncoding, PackedLeaves
from logic.program import Program

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
    """A circuit over some ground queries, with its literal weights.

    ``roots[q] = (numerator, normaliser)``: output columns of the query
    conjoined with the constraints it touches, and of those constraints alone,
    so ``P(q) = out[:, numerator] / out[:, normaliser]`` (see
    :func:`compile_queries`).
    """

    roots: dict  # Term -> (column, normaliser column)
    circuit: torch.nn.Module  # KLay's module: every root for every sample
    weight_matrix: torch.Tensor  # [1 + n_leaves, 2 + 2 * n_vars] float64: leaves -> KLay's input encoding
    nn_blocks: tuple[tuple[str, str], ...]  # (network, tensor source) column blocks
    block_sizes: tuple[int, ...]  # the number of columns (the network's domain) of each block
    rule_params: list[int]  # parameter index of each rule-probability column

    def __post_init__(self):
        self._flat: FlatCircuit | None = None
        self._encoding: LeafEncoding | None = None

    @functools.cached_property
    def groups(self) -> list[tuple[str, list[int]]]:
        """The blocks of each network, in block order: [(network, block indices)]
        (the blocks are sorted by network, so each network's are consecutive)."""
        out: dict[str, list[int]] = {}
        for j, (net, _) in enumerate(self.nn_blocks):
            out.setdefault(net, []).append(j)
        return list(out.items())

    def pack(self, outputs: list, masks: list, rule_probs: torch.Tensor, batch_size: int) -> PackedLeaves:
        """The leaves of a batch: per network of :meth:`groups`, its outputs
        and mask (see :meth:`PackedLeaves.pack`); ``rule_probs`` [n_params]
        the probabilities of all the program's parameters."""
        return PackedLeaves.pack(outputs, masks, rule_probs[self.rule_params], batch_size)

    def pack_all(self, outputs: dict, rule_probs: torch.Tensor, batch_size: int) -> PackedLeaves:
        """:meth:`pack` for every block evaluated for every sample: ``outputs[block]`` [B, K]."""
        ys, masks = [], []
        for _, js in self.groups:
            ys.append(torch.stack([outputs[self.nn_blocks[j]] for j in js], 1).flatten(0, 1))
            masks.append(None if len(js) == 1 else torch.ones(batch_size, len(js), dtype=torch.bool))
        return self.pack(ys, masks, rule_probs, batch_size)

    def encode(self, leaves: PackedLeaves) -> torch.Tensor:
        """KLay's input encoding ``[b, 2 + 2 * n_vars]``: ``[0, 1, pos_1, neg_1, ...]``,
        as one dense matrix product (literal weights are linear in the leaves
        ``[1, network outputs, rule probabilities]``). Rows of blocks not
        evaluated for a sample are 0. For KLay's own module; the cones read the
        leaves directly."""
        m = self.weight_matrix.to(leaves.values.dtype)
        n_nn = 1 + sum(self.block_sizes)
        const = m[0] + leaves.rules @ m[n_nn:]  # the same for every sample
        return torch.addmm(const, leaves.dense(self.block_sizes), m[1:n_nn])

    def evaluate(self, leaves: PackedLeaves, terms) -> torch.Tensor:
        """``[b, len(terms)]``: P(term) for every sample, all roots by KLay's module."""
        x0 = self.encode(leaves)
        out = self.circuit(x0[:, 2::2], x0[:, 3::2])  # [b, n_roots]
        num, den = zip(*(self.roots[t] for t in terms))
        return out[:, list(num)] / out[:, list(den)]

    def cone(self, key_terms: list[list[Term]]) -> KeyedCone:
        """Answers ``key_terms[k]`` for samples with key ``k``, evaluating only
        the cone of those roots (callers keep it: building walks the circuit)."""
        if self._flat is None:
            self._flat = FlatCircuit(self.circuit, self.weight_matrix.shape[1], self.constant_inputs())
            self._encoding = LeafEncoding(self.weight_matrix, list(self.block_sizes))
        last = self._flat.layer_ids[-1]  # KLay's roots are the outputs of its last layer
        pairs = [[self.roots[t] for t in terms] for terms in key_terms]
        return KeyedCone(self._flat, self._encoding, [[last[n] for n, _ in row] for row in pairs],
                         [[last[d] for _, d in row] for row in pairs])

    def constant_inputs(self) -> dict[int, int]:
        """Input positions whose weight is 0 or 1 whatever the leaves: position -> constant."""
        m = self.weight_matrix
        fixed = ~m[1:].any(0) & ((m[0] == 0) | (m[0] == 1))
        return {int(p): int(m[0, p]) for p in fixed.nonzero().flatten()}


def _constraint_nodes(sdd, mgr) -> list[tuple[set, object]]:
    """Each annotated disjunction's constraint on its own: (its atoms, SDD node).
    ProbLog conjoins them all into one constraint (``build_constraint_dd``)."""
    out = []
    for c in sdd.constraints():
        node = mgr.true()
        for clause in c.as_clauses():
            node = mgr.conjoin(node, mgr.disjoin(*[sdd.get_inode(r) for r in clause]))
        out.append(({abs(n) for n in c.get_nodes()}, node))
    return out


def _support(sdd, node: int, memo: dict) -> frozenset:
    """The atoms (formula node ids) a formula node depends on structurally."""
    node = abs(node)
    if not node:  # 0 is ProbLog's deterministic ``true``
        return frozenset()
    if node not in memo:
        n = sdd.get_node(node)
        kids = getattr(n, "children", None)
        memo[node] = frozenset([node]) if kids is None else frozenset().union(*(_support(sdd, c, memo) for c in kids))
    return memo[node]


def compile_queries(program: Program, queries: list[Term], network_domains: dict, neural: bool = True) -> CompiledQueries:
    """Ground ``queries`` (may contain variables) and compile them into one KLay circuit.

    ``neural=False`` for queries whose proofs involve no neural predicate.
    """
    import klay

    engine = DefaultEngine()
    db = engine.prepare(program.translated)
    formula = LogicFormula(keep_all=True)
    for term in _disjunction_heads(program, engine, db, queries, neural):
        # labelled, so that the DAG (built by traversal from the names) keeps this order
        formula = engine.ground(db, term, target=formula, label=LogicFormula.LABEL_QUERY)
    for q in queries:
        formula = engine.ground(db, q, target=formula, label=LogicFormula.LABEL_QUERY)
    dag = LogicDAG.create_from(formula, keep_named=True)
    sdd = SDD.create_from(dag)
    mgr = sdd.get_manager()

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
    # leaves [1, nn outputs, rule probabilities] -> KLay's input [0, 1, pos_1, neg_1, ...]
    matrix = torch.zeros(1 + len(col), 2 + 2 * n_vars, dtype=torch.float64)
    matrix[0, 1] = 1.0
    for var in range(1, n_vars + 1):
        pair = forms.get(var, ({_ONE: 1.0}, {_ONE: 1.0}))  # unweighted: 1 both ways
        for sign, form in enumerate(pair):
            for k, c in form.items():
                matrix[0 if k == _ONE else col[leaves[k]], 2 * var + sign] += c

    # P(q) = WMC(q & C) / WMC(C), with C the conjunction of the annotated
    # disjunctions' constraints (ProbLog's semantics). The constraints have
    # disjoint atoms, so those of disjunctions q does not touch factor out of
    # both counts and cancel: P(q) = WMC(q & C_q) / WMC(C_q) with C_q the
    # constraints of the disjunctions sharing an atom with q. Exact, and each
    # root's circuit then holds its own context's disjunctions only.
    constraints = _constraint_nodes(sdd, mgr)
    touched: dict[frozenset, object] = {}
    support_memo: dict = {}
    nodes = []  # the roots, in KLay's root order
    roots = {}

    def add_root(node) -> int:
        node.ref()  # kept through the minimisation below
        nodes.append(node)
        return len(nodes) - 1

    def normaliser(support: frozenset) -> int:
        key = frozenset(i for i, (atoms, _) in enumerate(constraints) if atoms & support)
        if key not in touched:
            node = mgr.true()
            for i in sorted(key):
                node = mgr.conjoin(node, constraints[i][1])
            touched[key] = (node, add_root(node))
        return touched[key]

    wanted = {q for q in queries if q.is_ground()}
    open_queries = [q for q in queries if not q.is_ground()]
    for term, node in sdd.queries():
        if term not in wanted and not any(_matches(q, term) for q in open_queries):
            continue  # an ordering helper, not a query
        if node is None:  # no proof: probability 0
            roots[term] = (add_root(mgr.false()), normaliser(frozenset())[1])
            continue
        c_node, c_col = normaliser(_support(sdd, node, support_memo))
        roots[term] = (add_root(mgr.conjoin(sdd.get_inode(node), c_node)), c_col)
    roots[FALSE] = (add_root(mgr.false()), normaliser(frozenset())[1])  # always 0 (sources absent in a context)
    # Every other node of the manager is garbage from here on.
    _minimize(mgr.get_manager())
    circuit = klay.Circuit()
    for node in nodes:
        circuit.add_sdd(node)
    module = circuit.to_torch_module(semiring="real", compile=False)
    return CompiledQueries(roots, module, matrix, nn_blocks, tuple(len(network_domains[net]) for net, _ in nn_blocks),
                           rule_params)


#: above this many live SDD nodes the vtree search is bounded in time
FULL_MINIMIZE_NODES = 50_000
MINIMIZE_SECONDS = 10.0


def _minimize(manager) -> None:
    """Search for the vtree that makes the referenced roots' SDDs smallest
    (same functions, fewer nodes): context_selection's label queries go from
    124 to 66 circuit edges each, in 0.3 s. Large managers get a search bounded
    to :data:`MINIMIZE_SECONDS` (va_selection: 335,359 live nodes; its full
    search would take about 30 s for 1/70 of the edges)."""
    if manager.live_size() <= FULL_MINIMIZE_NODES:
        manager.minimize()
    else:
        manager.set_vtree_search_time_limit(MINIMIZE_SECONDS)
        manager.minimize_limited()


def _matches(pattern: Term, term: Term) -> bool:
    """Whether ground ``term`` is an instance of ``pattern`` (variables match anything)."""
    if isinstance(pattern, Var):
        return True
    if pattern.functor != term.functor or pattern.arity != term.arity:
        return False
    return all(_matches(p, t) for p, t in zip(pattern.args, term.args))


def _disjunction_heads(program: Program, engine, db, queries: list[Term], neural: bool) -> list[Term]:
    """Open head patterns of every annotated disjunction the queries can use:
    the rule groups in program order (``trust(n1_large, S)``,
    ``circumplex(negative, low, E)``, ...), then the neural predicates the
    queries' proofs call (``scene_emotion(tensor(scene(img)), E)``, ...).

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
    for q in queries:
        scratch = engine.ground(db, q, target=scratch, label=LogicFormula.LABEL_QUERY)
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
