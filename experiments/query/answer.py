"""How a :class:`~experiments.query.program.TrainedProgram` answers a chunk of images.

Each image goes through the program's image pipeline (scene backbone and face
crops), with faces from MTCNN or, for images of a run's synthetic data set,
from its recorded boxes; the batch then goes through the program's logic model
with explanations on. A bad input never raises: it becomes a
:class:`~experiments.query.results.QueryError` with a one-line reason, and the
other inputs are answered.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch

from experiments.query.annotate import annotate_image
from experiments.query.results import Face, QueryError, QueryResult
from neural.common import EMOTIONS, FACE_SLOTS, UserError


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
    from cache.loader import collate
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
        batch = collate(processed, pipeline.cfg)
        for p, result in zip(processed, explain(tp, batch, top)):
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


@torch.no_grad()
def explain(tp, batch, top: int) -> list[QueryResult]:
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the V/A source's MC dropout: the same image gets the same answer
        prepared = tp.binding.prepare(batch)
    va = va_estimates(tp, prepared)
    out = tp.model(prepared, explain=True)
    probs = out.probs.double()  # [B, E]
    own = source_outputs(tp, prepared, out)  # source -> [B, E], NaN where absent
    results = []
    for b in range(len(batch)):
        ctx = out.contexts[b]
        existing = tp.program.sources_in(ctx)
        pred = int(probs[b].argmax())
        post = {s: float(out.posterior[b, out.sources.index(s), pred]) for s in existing}
        ranked = sorted(range(len(EMOTIONS)), key=lambda e: -float(probs[b, e]))[:top]
        faces = []
        w, h = (int(v) for v in batch.image_size[b])
        for k, slot in enumerate(FACE_SLOTS):
            if batch.face_mask[b, k]:
                box = tuple(float(v) for v in batch.face_boxes[b, k])
                size = math.sqrt(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]) / (w * h))
                faces.append(Face(slot, box, float(batch.face_probs[b, k]), size))
        source_probs = {s: dict(zip(EMOTIONS, own[s][b].tolist())) for s in existing
                        if s in own and not torch.isnan(own[s][b]).any()}
        results.append(QueryResult(
            input=batch.sample_ids[b],
            image_size=(w, h),
            faces=faces,
            context=ctx,
            probs={e: float(probs[b, i]) for i, e in enumerate(EMOTIONS)},
            top=[(EMOTIONS[e], float(probs[b, e])) for e in ranked],
            source_probs=source_probs,
            trust=dict(tp.trust(ctx)),
            posterior=dict(sorted(post.items(), key=lambda kv: -kv[1])),
            provenance={src: tp.source_records()[src] for src in existing if src in tp.source_records()},
            va=va[b] if va is not None else None,
        ))
    return results


#: What the V/A regressor's output columns are (its bin adapters' ``column``, neural/va.py).
VA_DIMENSIONS = ("valence", "arousal")


def va_estimates(tp, prepared) -> list[dict] | None:
    """Per image, the V/A source's estimate with its uncertainty and bin masses (None without one).

    Which source and networks: the binding's V/A sources and the networks the program's
    source table says read them (the bin adapters, each reading one column)."""
    if not tp.binding.uses_va:
        return None
    out = [{} for _ in range(len(prepared))]
    for src in tp.binding.va_sources:
        x = prepared.tensors[src]  # [B, 4] = (mean_v, mean_a, var_v, var_a)
        for net in tp.program.sources[src].networks:
            k = tp.binding.networks[net].column
            mass = tp.binding.networks[net](x)  # [B, bins]
            for b, entry in enumerate(out):
                entry[VA_DIMENSIONS[k]] = {"mean": float(x[b, k]), "std": float(x[b, 2 + k].clamp_min(0).sqrt()),
                                           "bins": dict(zip(tp.program.domain_of(net), mass[b].tolist()))}
    return out


def source_outputs(tp, prepared, out) -> dict[str, torch.Tensor]:
    """Each source's own emotion distribution, [B, E] (NaN where the source is absent).

    A source one network reads (the scene, the faces): that network's output. Any other source of the
    program (e.g. ``va``, whose emotion comes out of rules): recovered from the
    logic output, P_s(e) ∝ P(s selected, s says e) = posterior[s, e] * P(e).
    """
    own = {s: t.double() for s, t in tp.binding.source_outputs(prepared).items()}
    for i, s in enumerate(out.sources):
        if s not in own:
            joint = out.posterior[:, i, :].double() * out.probs.double()  # [B, E]
            z = joint.sum(1, keepdim=True)
            own[s] = torch.where(z > 0, joint / z.clamp_min(1e-300), torch.full_like(joint, float("nan")))
    return own
