"""What every program that answers queries shares: inputs in, results out, chunk by chunk.

Two kinds answer: a :class:`~experiments.query.program.TrainedProgram` (torch:
the run's networks and logic model) and a
:class:`~experiments.query.served.ServedProgram` (no torch: the same networks as
ONNX, the logic as numpy tables). Both provide ``pipeline(face_source)``,
``explain_processed(processed, pipeline, top)``, ``synthetic_samples()`` and
``trust(context)``; the loop over inputs is this one.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

from experiments.query.answer import answer_chunk
from experiments.query.results import QueryError, QueryResult, expand_inputs
from neural.common import EMOTIONS, UserError


class AnsweringProgram:
    #: said once by ``emologic query`` (stderr): e.g. that a served copy was built just now, or why torch answers
    note: str | None = None

    def answer(self, inputs: Sequence[str | os.PathLike], face_source: str = "mtcnn", top: int = 3,
               annotate: str | os.PathLike | None = None) -> list[QueryResult | QueryError]:
        """One result per image (directories expanded), in input order. See :meth:`iter_answers`."""
        return list(self.iter_answers(inputs, face_source, top, annotate))

    def iter_answers(self, inputs: Sequence[str | os.PathLike], face_source: str = "mtcnn", top: int = 3,
                     annotate: str | os.PathLike | None = None, chunk: int = 32) -> Iterator[QueryResult | QueryError]:
        """Like :meth:`answer`, yielding results chunk by chunk (large directories).

        ``top``: how many emotions ``QueryResult.top`` lists. ``annotate``: a
        directory for one annotated PNG per image. Configuration problems
        (unknown face source, annotations without a synthetic run) raise
        :class:`UserError` before any image is read.
        """
        if top < 1:
            raise UserError(f"--top must be at least 1, got {top}")
        pipeline = self.pipeline(face_source)
        known = self.synthetic_samples() if face_source == "annotations" else None
        out_dir = Path(annotate) if annotate is not None else None
        if out_dir is not None:
            if out_dir.exists() and not out_dir.is_dir():
                raise UserError(f"--annotate {out_dir}: exists and is not a directory")
            out_dir.mkdir(parents=True, exist_ok=True)
        taken: set[str] = set()
        items = expand_inputs(inputs)
        for start in range(0, len(items), chunk):
            yield from answer_chunk(self, items[start:start + chunk], pipeline, known, min(top, len(EMOTIONS)),
                                    out_dir, taken)
