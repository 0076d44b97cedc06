"""How a :class:`~experiments.query.program.TrainedProgram` answers a chunk of images.

Each image goes through the program's image pipeline (scene backbone and face
crops), with faces from MTCNN or, for images of a run's synthetic data set,
from its recorded boxes; the batch then goes through the program's logic model
with explanations on (:mod:`experiments.query.explain` with torch, or the served
program's numpy tables). A bad input never raises: it becomes a
:class:`~experiments.query.results.QueryError` with a one-line reason, and the
other inputs are answered.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from experiments.query.annotate import annotate_image
from experiments.query.results import QueryError, QueryResult
from neural.common import UserError


def process(pipeline, samples) -> tuple[list, list]:
    """``pipeline.process(samples)``. Should it fail in a way no check
    foresaw (a library breaking on one odd image), each image is retried
    alone, so one image gets the error line and the others their answers."""
    from pipelines.pipeline import Skip

    try:
        return pipeline.process(samples)
    except UserError:
        raise  # configuration problems concern every image alike
    except Exception as exc:  # noqa: BLE001 - isolate the image that breaks, answer the rest
        if len(samples) == 1:
            return [], [Skip(samples[0].sample_id, f"could not be processed ({type(exc).__name__}: {exc})")]
    processed, skipped = [], []
    for s in samples:
        done, skips = process(pipeline, [s])
        processed += done
        skipped += skips
    return processed, skipped


def answer_chunk(tp, items, pipeline, known, top, out_dir, taken) -> list[QueryResult | QueryError]:
    """Answers for ``items`` (paths, or the :class:`QueryError` of an input already
    refused), in order. ``tp.explain_processed(processed, pipeline, top)`` turns
    the pipeline's output into results: with torch (a trained program) or
    without (a served one, :mod:`experiments.query.served`)."""
    from pipelines.datasets.base import Sample

    answers: list[QueryResult | QueryError | None] = [None] * len(items)
    samples = []
    for i, item in enumerate(items):
        if isinstance(item, QueryError):
            answers[i] = item
            continue
        annotations = {}
        if known is not None:
            sample = known.get(Path(item).resolve())
            if sample is None:
                answers[i] = QueryError(item, "not an image of the run's synthetic data set, so it has no "
                                              "recorded face boxes (use --face-source mtcnn)")
                continue
            annotations = {"boxes": sample.annotations.get("boxes", [])}
        samples.append(Sample(str(i), Path(item), None, None, annotations))
    processed, skipped = process(pipeline, samples) if samples else ([], [])
    for skip in skipped:
        answers[int(skip.sample_id)] = QueryError(items[int(skip.sample_id)], skip.reason)
    if processed:
        for p, result in zip(processed, tp.explain_processed(processed, pipeline, top)):
            pos = int(p.sample_id)
            answers[pos] = dataclasses.replace(result, input=items[pos], faces_found=p.faces_found)
            if out_dir is not None:
                try:
                    answers[pos].annotated = str(annotate_image(answers[pos], out_dir, taken,
                                                                pipeline.cfg.max_pixels))
                except (UserError, OSError) as exc:
                    answers[pos] = QueryError(items[pos], f"answered, but the annotated picture could not "
                                                          f"be written ({exc})")
    return answers
