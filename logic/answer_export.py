"""Export a model's compiled engine into :class:`logic.answer_tables.AnswerTables`.

The torch side of the torch-free query path: it reads, from a
:class:`~logic.model.LogicModel` over the ``compiled`` engine, exactly what
the engine evaluates for the ``main`` and ``explain`` families (the cones and
the leaf encoding of its circuit), the rule probabilities as they are now
(learned, or the program's ``t(p)``) and the trust table, so that
:meth:`AnswerTables.answer` gives the model's answers without it.

    export_answer_tables(model, directory)   # or answer_tables(model).save(directory)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from logic.answer_tables import CONE_ARRAYS, ENCODING_ARRAYS, FAMILIES, AnswerTables, AnswerTablesError
from logic.engines.compiled import CompiledEngine
from pipelines.context import CONTEXTS


def answer_tables(model) -> AnswerTables:
    """The numpy tables of ``model`` (an image program on the compiled engine), with its
    current rule probabilities. Other programs and engines are answered by the torch
    path (``LogicModel``): asking for their tables is an :class:`AnswerTablesError`."""
    name = model.program.path.name
    if model.program.kind != "image":
        raise AnswerTablesError(f"{name} is a {model.program.kind} program: only image programs have answer "
                                "tables; the torch path (LogicModel) answers it")
    if not isinstance(model.engine, CompiledEngine):
        raise AnswerTablesError(f"answer tables are exported from the compiled engine, not {model.engine_name}; "
                                "the torch path (LogicModel) answers with it")
    compiled = model.engine.compiled
    queries = compiled.queries
    cones = {f: compiled.cone(f) for f in FAMILIES}
    encoding = cones["main"].encoding  # one circuit, one encoding for every neural family
    const, term_start, term_block, term_index, coef = encoding.arrays(np.float64)
    contexts = tuple(model.contexts)
    with torch.no_grad():
        rules = model.engine.rule_probs_tensor().detach().cpu().to(torch.float64)[queries.rule_params].numpy()
    return AnswerTables(
        program=model.program.name,
        emotions=tuple(model.interface.emotions),
        sources=tuple(model.sources),
        contexts=contexts,
        code_names=tuple(CONTEXTS),
        from_codes=np.array([contexts.index(c) if c in contexts else -1 for c in CONTEXTS], dtype=np.int64),
        face_size_threshold=float(model.face_size_threshold),
        blocks=tuple((str(n), str(s)) for n, s in queries.nn_blocks),
        block_sizes=tuple(int(k) for k in queries.block_sizes),
        needs=compiled.needs.numpy().astype(bool),
        encoding=dict(zip(ENCODING_ARRAYS, (a.copy() for a in (const, term_start, term_block, term_index, coef)))),
        cones={f: dict(zip(CONE_ARRAYS, (a.copy() for a in cone.arrays))) for f, cone in cones.items()},
        rules=np.ascontiguousarray(rules, dtype=np.float64),
        trust={c: {s: float(p) for s, p in model.source_probabilities_for(c).items()} for c in contexts},
    )


def export_answer_tables(model, directory: str | Path) -> Path:
    """:func:`answer_tables` saved to ``directory`` (see :meth:`AnswerTables.save`)."""
    return answer_tables(model).save(directory)
