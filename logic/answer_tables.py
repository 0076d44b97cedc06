"""The compiled engine's answers in numpy: a trained image program without torch.

``emologic query`` must answer a photo within 3 s, and importing torch alone
takes about that long. :func:`logic.answer_export.answer_tables` reads, once,
what the compiled engine evaluates (its per-context cones, the linear map from
network outputs and rule probabilities to literal weights, the rule
probabilities themselves and the learned trust table) into an
:class:`AnswerTables`; from there this module answers with numpy alone:

    tables = AnswerTables.load(directory)
    need = tables.blocks_read(codes)      # [B, n_blocks] bool: which (network, source) outputs to run
    out = tables.answer({(net, src): y, ...}, codes)   # y: [B, K] float
    out.probs, out.posterior              # [B, E], [B, S, E]: LogicModel(..., explain=True)'s numbers

It must never import torch, problog, pysdd, klay or numba, even indirectly (a
test runs it in a fresh interpreter and checks): numpy, the standard library
and :mod:`neural.common` and :mod:`pipelines.context` only. Context codes index
``pipelines.context.CONTEXTS``, whose names the tables carry (and ``load`` checks).

The evaluation is ``engines/cone_kernels.py``'s ``_forward`` in numpy, per
key (context) and vectorised over that key's images: the literal weights the
cone reads (``const + sum coef * leaf``, as one small matrix product), then the
cone's nodes level by level (a level's nodes depend only on lower levels, so
each level is one gather and one product or sum), then numerator / normaliser.
Float64 throughout.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neural.common import UserError, atomic_write_bytes

FORMAT, VERSION = "emologic-answer-tables", 1
NPZ, META = "answer_tables.npz", "answer_tables.json"
FAMILIES = ("main", "explain")
#: KeyedCone.arrays and LeafEncoding's arrays, in the kernels' argument order
CONE_ARRAYS = ("input_start", "inputs", "node_start", "kind", "child_start", "children", "outputs")
ENCODING_ARRAYS = ("const", "term_start", "term_block", "term_index", "coef")
ZERO, ONE = 0, 1  # the encoding's first two positions hold the constants 0 and 1 (engines/cone.py)
PROD = 1  # a cone node's kind (engines/cone.py: SUM = 0, PROD = 1)


class AnswerTablesError(UserError):
    """Answer tables that cannot be read, or a question they cannot answer."""


@dataclass
class TableAnswers:
    """What :meth:`AnswerTables.answer` returns: ``LogicOutput``'s numbers, in numpy."""

    probs: np.ndarray  # [B, E] float64 P(emotion | image)
    posterior: np.ndarray | None  # [B, S, E] float64 P(source | image, emotion); None unless explained
    contexts: list[str]  # each image's context
    sources: tuple[str, ...]  # the order of the posterior's source axis


@dataclass
class _KeyPlan:
    """One key's cone, laid out for numpy (see :meth:`AnswerTables._plan`)."""

    blocks: list[int]  # the blocks its literal weights read, in the column order of ``weights``
    weights: np.ndarray  # [sum of those blocks' sizes, n_inputs]: coefficients of the network outputs
    const: np.ndarray  # [n_inputs]: constant terms plus the rule terms (the rules are fixed per table)
    inputs: np.ndarray  # [n_inputs] the encoding positions it reads (its values' first columns)
    width: int  # n_in + its nodes
    levels: list[tuple[bool, np.ndarray, np.ndarray]]  # (product?, node codes [n], child codes [n, w])
    num: np.ndarray  # [R] codes of the numerators
    den: np.ndarray  # [R] codes of the normalisers


@dataclass
class AnswerTables:
    """Everything the compiled engine reads to answer an image program, as arrays.

    ``code_names``: ``pipelines.context.CONTEXTS`` (what a context code means);
    ``from_codes`` [len(code_names)]: code -> index into ``contexts`` (-1: not answered);
    ``blocks``/``block_sizes``: the (network, source) outputs the circuit reads;
    ``needs`` [C, n_blocks] bool: which of them context ``c`` reads;
    ``encoding``: LeafEncoding's arrays (block -1 = rule column);
    ``cones[family]``: KeyedCone's arrays for "main" (emotion/3 per E, valid/2)
    and "explain" (via/4 per source and emotion), one key per context;
    ``rules``: the rule probabilities the circuit reads (already selected by rule_params);
    ``trust``: {context: {source: P(source selected | context)}}."""

    program: str
    emotions: tuple[str, ...]
    sources: tuple[str, ...]
    contexts: tuple[str, ...]
    code_names: tuple[str, ...]
    from_codes: np.ndarray
    face_size_threshold: float
    blocks: tuple[tuple[str, str], ...]
    block_sizes: tuple[int, ...]
    needs: np.ndarray
    encoding: dict[str, np.ndarray]
    cones: dict[str, dict[str, np.ndarray]]
    rules: np.ndarray
    trust: dict[str, dict[str, float]]

    def __post_init__(self):
        self._plans: dict[tuple[str, int], _KeyPlan] = {}
        self._check()

    # -- questions --------------------------------------------------------------
    def keys(self, context_codes) -> np.ndarray:
        """[B] int64: each image's index into ``contexts``; a code that is not a context,
        or a context the program does not answer, is an :class:`AnswerTablesError`."""
        codes = np.asarray(context_codes)
        if codes.ndim != 1 or (codes.size and not np.issubdtype(codes.dtype, np.integer)):
            raise AnswerTablesError(f"context codes must be a 1-D integer array, got shape {codes.shape} "
                                    f"of {codes.dtype}")
        codes = codes.astype(np.int64)
        bad = (codes < 0) | (codes >= len(self.code_names))
        if bad.any():
            raise AnswerTablesError(f"context code {int(codes[bad][0])} is not one of 0..{len(self.code_names) - 1} "
                                    f"({', '.join(self.code_names)})")
        keys = self.from_codes[codes]
        if (keys < 0).any():
            name = self.code_names[int(codes[keys < 0][0])]
            raise AnswerTablesError(f"context {name!r} is not one of {', '.join(self.contexts)} "
                                    f"(the contexts program {self.program} answers)")
        return keys

    def blocks_read(self, context_codes) -> np.ndarray:
        """[B, n_blocks] bool: the (network, source) outputs each image's context reads
        (``blocks[j]``); the caller runs only those."""
        return self.needs[self.keys(context_codes)]

    def answer(self, outputs: dict, context_codes, explain: bool = True) -> TableAnswers:
        """P(emotion | image) and, with ``explain``, P(source | image, emotion), as
        ``LogicModel(...)(batch, explain=True)`` answers them.

        outputs: {(network, source): [B, K] float} for every block some image's context
            reads; rows of images that do not read a block are ignored (may be NaN)
        context_codes: [B] int, indices into ``code_names``"""
        keys = self.keys(context_codes)
        b, e, s = len(keys), len(self.emotions), len(self.sources)
        given = self._given(outputs, keys)
        main = np.empty((b, e + 1))
        expl = np.empty((b, s * e)) if explain else None
        for k in np.unique(keys):
            rows = np.flatnonzero(keys == k)
            main[rows] = self._evaluate("main", int(k), given, rows)
            if explain:
                expl[rows] = self._evaluate("explain", int(k), given, rows)
        emotion, valid = main[:, :e], main[:, e]
        posterior = None
        if explain:  # P(via S, E) / P(E): the emotion's joint, before conditioning on valid
            posterior = expl.reshape(b, s, e) / np.maximum(emotion, 1e-30)[:, None, :]
        return TableAnswers(probs=emotion / valid[:, None], posterior=posterior,
                            contexts=[self.contexts[k] for k in keys.tolist()], sources=self.sources)

    # -- evaluation ---------------------------------------------------------------
    def _given(self, outputs: dict, keys: np.ndarray) -> dict[int, np.ndarray]:
        """The blocks the images read, as float64 [B, K] by block index; a block an
        image reads must be given, of the right shape, and finite on its rows."""
        need = self.needs[keys]  # [B, n_blocks]
        given = {}
        for j in np.flatnonzero(need.any(0)):
            block, k = self.blocks[j], self.block_sizes[j]
            rows = np.flatnonzero(need[:, j])
            if block not in outputs:
                i = int(rows[0])
                raise AnswerTablesError(f"image {i} (context {self.contexts[keys[i]]}) needs the output of network "
                                        f"{block[0]} on source {block[1]}, which was not given")
            y = np.asarray(outputs[block], dtype=np.float64)
            if y.shape != (len(keys), k):
                raise AnswerTablesError(f"the output of network {block[0]} on source {block[1]} must be "
                                        f"[{len(keys)}, {k}], got {list(y.shape)}")
            bad = ~np.isfinite(y[rows]).all(1)
            if bad.any():
                raise AnswerTablesError(f"image {int(rows[bad][0])}: the output of network {block[0]} on source "
                                        f"{block[1]} is not finite")
            given[int(j)] = y
        return given

    def _evaluate(self, family: str, key: int, given: dict[int, np.ndarray], rows: np.ndarray) -> np.ndarray:
        """[len(rows), R]: ``_forward`` for images ``rows``, which all have ``key``."""
        plan = self._plan(family, key)
        v = np.zeros((len(rows), plan.width))
        v[:, ONE] = 1.0
        x = plan.const
        if plan.blocks:
            leaves = np.concatenate([given[j][rows] for j in plan.blocks], 1)
            x = x + leaves @ plan.weights
        v[:, plan.inputs] = x
        for product, nodes, kids in plan.levels:
            g = v[:, kids]  # [b, n, w]
            v[:, nodes] = g.prod(2) if product else g.sum(2)
        return v[:, plan.num] / v[:, plan.den]

    def _plan(self, family: str, key: int) -> _KeyPlan:
        """One key's cone for numpy, built at its first use (a photo needs one key).

        Inputs: the positions the cone reads, ``const + sum coef * leaf`` over
        their terms, the network leaves as a dense [leaves, inputs] matrix (at
        most a few hundred entries). Nodes: grouped by depth (1 + the deepest
        child's, inputs at 0) and kind; a level's children are padded with the
        operation's neutral element (1 for products, 0 for sums), which is
        exact, as the engine's flattening already relies on."""
        if (family, key) in self._plans:
            return self._plans[(family, key)]
        cone, enc = self.cones[family], self.encoding
        n_in = len(enc["const"])
        inputs = cone["inputs"][cone["input_start"][key]:cone["input_start"][key + 1]]
        const = enc["const"][inputs].astype(np.float64)
        terms = []  # (input column, block, index, coefficient)
        for i, p in enumerate(inputs.tolist()):
            for t in range(int(enc["term_start"][p]), int(enc["term_start"][p + 1])):
                blk, idx, coef = int(enc["term_block"][t]), int(enc["term_index"][t]), float(enc["coef"][t])
                if blk < 0:
                    const[i] += coef * self.rules[idx]
                else:
                    terms.append((i, blk, idx, coef))
        blocks = sorted({blk for _, blk, _, _ in terms})
        if not set(blocks) <= set(np.flatnonzero(self.needs[key]).tolist()):
            raise AnswerTablesError(f"corrupt answer tables: context {self.contexts[key]}'s {family} cone reads "
                                    "network outputs its context does not need")
        start = dict(zip(blocks, np.cumsum([0] + [self.block_sizes[j] for j in blocks]).tolist()))
        weights = np.zeros((sum(self.block_sizes[j] for j in blocks), len(inputs)))
        for i, blk, idx, coef in terms:
            weights[start[blk] + idx, i] += coef
        first, last = int(cone["node_start"][key]), int(cone["node_start"][key + 1])
        depth = [0] * (n_in + last - first)
        groups: dict[tuple[int, bool], list[tuple[int, list[int]]]] = {}
        for j in range(first, last):  # children first, so a child's depth is known
            kids = cone["children"][cone["child_start"][j]:cone["child_start"][j + 1]].tolist()
            code = n_in + j - first
            depth[code] = 1 + max(depth[c] for c in kids)
            groups.setdefault((depth[code], bool(cone["kind"][j] == PROD)), []).append((code, kids))
        levels = []
        for (_, product), members in sorted(groups.items()):
            w = max(len(kids) for _, kids in members)
            pad = ONE if product else ZERO
            kids = np.array([kids + [pad] * (w - len(kids)) for _, kids in members], dtype=np.int64)
            levels.append((product, np.array([c for c, _ in members], dtype=np.int64), kids))
        r = cone["outputs"].shape[1] // 2
        plan = _KeyPlan(blocks, weights, const, inputs.astype(np.int64), n_in + last - first, levels,
                        cone["outputs"][key, :r].astype(np.int64), cone["outputs"][key, r:].astype(np.int64))
        self._plans[(family, key)] = plan
        return plan

    # -- consistency ----------------------------------------------------------------
    def _check(self) -> None:
        """Shapes that tie the arrays together, so that a damaged file fails here, in one line."""
        c, n_blocks, e, s = len(self.contexts), len(self.blocks), len(self.emotions), len(self.sources)
        n_in = len(self.encoding.get("const", ()))
        problems = []
        if self.from_codes.shape != (len(self.code_names),) or (self.from_codes >= c).any():
            problems.append("the context code map does not fit the contexts")
        if self.needs.shape != (c, n_blocks) or len(self.block_sizes) != n_blocks:
            problems.append("the blocks a context reads do not fit the blocks")
        if sorted(self.encoding) != sorted(ENCODING_ARRAYS) or len(self.encoding["term_start"]) != n_in + 1:
            problems.append("the literal-weight encoding is incomplete")
        elif len(self.encoding["term_index"]) and (self.encoding["term_block"] >= n_blocks).any():
            problems.append("the literal-weight encoding reads unknown blocks")
        for family, width in zip(FAMILIES, (e + 1, s * e)):
            cone = self.cones.get(family, {})
            if sorted(cone) != sorted(CONE_ARRAYS) or cone["outputs"].shape != (c, 2 * width) \
                    or len(cone["input_start"]) != c + 1 or len(cone["node_start"]) != c + 1:
                problems.append(f"the {family} cones do not fit {c} contexts")
        if problems:
            raise AnswerTablesError(f"corrupt answer tables of program {self.program}: {'; '.join(problems)}")

    # -- files ------------------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        out = {"from_codes": self.from_codes, "needs": self.needs, "rules": self.rules}
        out.update({f"encoding.{k}": v for k, v in self.encoding.items()})
        out.update({f"{f}.{k}": v for f, cone in self.cones.items() for k, v in cone.items()})
        return out

    def save(self, directory) -> Path:
        """``directory/answer_tables.npz`` (the arrays) and ``answer_tables.json`` (names,
        the format version and the arrays' hash), each written atomically, arrays first."""
        directory = Path(directory)
        buf = io.BytesIO()
        np.savez(buf, **self._arrays())
        data = buf.getvalue()
        meta = {"format": FORMAT, "version": VERSION, "program": self.program, "emotions": list(self.emotions),
                "sources": list(self.sources), "contexts": list(self.contexts), "code_names": list(self.code_names),
                "face_size_threshold": self.face_size_threshold, "blocks": [list(b) for b in self.blocks],
                "block_sizes": list(self.block_sizes), "trust": self.trust,
                "npz_sha256": hashlib.sha256(data).hexdigest()}
        atomic_write_bytes(directory / NPZ, data)
        atomic_write_bytes(directory / META, json.dumps(meta, indent=1).encode())
        return directory

    @classmethod
    def load(cls, directory) -> "AnswerTables":
        """Tables saved by :meth:`save`; anything else (missing, damaged, another format
        version, arrays from another export) is one :class:`AnswerTablesError`."""
        directory = Path(directory)
        where = f"{directory}: "
        try:
            meta = json.loads((directory / META).read_text())
            data = (directory / NPZ).read_bytes()
        except FileNotFoundError as exc:
            raise AnswerTablesError(f"{where}no answer tables ({Path(exc.filename).name} is missing); "
                                    "export them from a trained run") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AnswerTablesError(f"{where}{META} is unreadable ({exc}); export the answer tables again") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise AnswerTablesError(f"{where}{META} does not hold emologic answer tables")
        if meta.get("version") != VERSION:
            raise AnswerTablesError(f"{where}answer tables of format version {meta.get('version')!r}; this emologic "
                                    f"reads version {VERSION}: export them again")
        if hashlib.sha256(data).hexdigest() != meta.get("npz_sha256"):
            raise AnswerTablesError(f"{where}{NPZ} is damaged or from another export (its hash differs from "
                                    f"{META}'s); export the answer tables again")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            tables = cls(
                program=str(meta["program"]), emotions=tuple(meta["emotions"]), sources=tuple(meta["sources"]),
                contexts=tuple(meta["contexts"]), code_names=tuple(meta["code_names"]),
                from_codes=arrays.pop("from_codes"), face_size_threshold=float(meta["face_size_threshold"]),
                blocks=tuple((str(n), str(s)) for n, s in meta["blocks"]),
                block_sizes=tuple(int(k) for k in meta["block_sizes"]), needs=arrays.pop("needs"),
                encoding={k: arrays.pop(f"encoding.{k}") for k in ENCODING_ARRAYS},
                cones={f: {k: arrays.pop(f"{f}.{k}") for k in CONE_ARRAYS} for f in FAMILIES},
                rules=arrays.pop("rules"),
                trust={str(c): {str(s): float(p) for s, p in row.items()} for c, row in meta["trust"].items()})
        except AnswerTablesError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, OSError, zipfile.BadZipFile) as exc:
            raise AnswerTablesError(f"{where}damaged answer tables ({type(exc).__name__}: {exc}); "
                                    "export them again") from None
        from pipelines.context import CONTEXTS

        if tables.code_names != CONTEXTS:
            raise AnswerTablesError(f"{where}answer tables for the contexts {', '.join(tables.code_names)}; this "
                                    f"emologic has {', '.join(CONTEXTS)}: export them again")
        return tables
