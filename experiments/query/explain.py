"""A trained program's answers for a processed batch, with torch: the binding
prepares the batch, the logic model answers with explanations on, and
:func:`experiments.query.results.assemble_results` writes the results (the
served program, :mod:`experiments.query.served`, shares that last step).
"""
from __future__ import annotations

import torch

from experiments.query.results import BatchAnswers, QueryResult, assemble_results, own_from_posterior
from neural.common import EMOTIONS

#: What the V/A regressor's output columns are (its bin adapters' ``column``, neural/va.py).
VA_DIMENSIONS = ("valence", "arousal")


@torch.no_grad()
def explain(tp, batch, top: int) -> list[QueryResult]:
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the V/A source's MC dropout: the same image gets the same answer
        prepared = tp.binding.prepare(batch)
    out = tp.model(prepared, explain=True)
    answers = BatchAnswers(contexts=out.contexts, sources=tuple(out.sources), probs=out.probs.double().numpy(),
                           posterior=out.posterior.double().numpy(), own=source_outputs(tp, prepared, out),
                           va=va_estimates(tp, prepared))
    results = assemble_results(answers, batch.image_size.numpy(), batch.face_mask.numpy(), batch.face_boxes.numpy(),
                               batch.face_probs.numpy(), emotions=EMOTIONS, sources_in=tp.program.sources_in,
                               trust=tp.trust, provenance=tp.source_records(), top=top)
    for sample_id, r in zip(batch.sample_ids, results):
        r.input = sample_id
    return results


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


def source_outputs(tp, prepared, out) -> dict:
    """Each source's own emotion distribution, numpy [B, E] (NaN where the source is absent).

    A source one network reads (the scene, the faces): that network's output. Any other source of the
    program (e.g. ``va``, whose emotion comes out of rules): recovered from the logic output
    (:func:`~experiments.query.results.own_from_posterior`).
    """
    own = {s: t.double().numpy() for s, t in tp.binding.source_outputs(prepared).items()
           if len(tp.program.sources[s].networks) == 1}  # several networks' columns (V/A bins) are no emotions
    posterior, probs = out.posterior.double().numpy(), out.probs.double().numpy()
    for i, s in enumerate(out.sources):
        if s not in own:
            own[s] = own_from_posterior(posterior, probs, i)
    return own
