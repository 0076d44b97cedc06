"""``emologic bench engines``: the compiled engine against DeepProbLog's exact engine.

Same program, same inputs (network outputs given directly, rule probabilities
random), forward + backward of the training loss. DeepProbLog answers one query
at a time, so it is timed on the first ``dpl_samples`` samples of the batch
(``dpl_repeats`` passes after a warm-up pass that compiles and caches its
circuits) and its rate is queries per second over those; the compiled engine is timed on the
whole batch, in float32 (what training uses) and in float64. The largest
absolute difference of P(emotion | image) between the engines on the shared
samples (float64) is reported next to the speed-ups.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from logic.inputs import ALL_LAYOUTS, given_networks, make_batch, random_outputs, random_rule_probs
from logic.model import LogicModel
from logic.program import load_program
from neural.common import EMOTIONS


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up: compiles circuits, fills caches
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def _klay_module_step(model, batch):
    """The training loss evaluated by KLay's ``CircuitModule`` on the whole circuit
    (every root for every sample), for comparison with the per-sample cones."""
    engine = model.engine
    cp = engine.compiled
    # per key (context * E + label): the root and normaliser columns of the label's and valid's terms
    columns = [[cp.queries.roots[t] for t in terms] for terms in cp.key_terms("label")]
    num = torch.tensor([[c[0] for c in row] for row in columns])
    den = torch.tensor([[c[1] for c in row] for row in columns])

    def run():
        ctx = model.interface.context_keys(batch)
        x0 = cp.queries.encode(engine.leaves(batch, ctx))
        out = cp.queries.circuit(x0[:, 2::2], x0[:, 3::2])  # [B, all roots]
        keys = ctx * engine.spec.families["label"].per_context + model.interface.label_keys(batch)
        p = out.gather(1, num[keys]) / out.gather(1, den[keys])  # [B, 2]
        (-(p[:, 0] / p[:, 1]).log().mean()).backward()
    return run


def bench_engines(program: str = "context_selection", batch_size: int = 512, dpl_samples: int = 64,
                  repeats: int = 100, dpl_repeats: int = 3, seed: int = 0) -> dict:
    prog = load_program(program, check_bindings=False)
    g = torch.Generator().manual_seed(seed)
    layout = [ALL_LAYOUTS[i % len(ALL_LAYOUTS)] for i in torch.randperm(batch_size, generator=g).tolist()]
    outputs = random_outputs(prog, batch_size, g)
    labels = torch.randint(0, len(EMOTIONS), (batch_size,), generator=g)
    rule_probs = random_rule_probs(prog, g)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # DeepProbLog builds its parameters in the default dtype
    try:
        models = {}
        for engine in ("compiled", "deepproblog"):
            models[engine] = LogicModel(prog, given_networks(prog), engine=engine)
            models[engine].set_rule_probabilities(rule_probs)
        big = make_batch(layout, outputs, labels, requires_grad=True)
        big32 = make_batch(layout, {k: v.float() for k, v in outputs.items()}, labels)
        big32.tensors = {k: v.float().requires_grad_(True) for k, v in big32.tensors.items()}
        small = make_batch(layout[:dpl_samples], {k: v[:dpl_samples] for k, v in outputs.items()},
                           labels[:dpl_samples], requires_grad=True)

        def step(model, batch):
            def run():
                model.nll(batch).backward()
            return run

        t_compiled = _timed(step(models["compiled"], big), repeats)
        t_compiled32 = _timed(step(models["compiled"], big32), repeats)
        t_module32 = _timed(_klay_module_step(models["compiled"], big32), repeats)
        t_dpl = _timed(step(models["deepproblog"], small), dpl_repeats)
        with torch.no_grad():
            p_compiled = models["compiled"](small).probs
            p_dpl = models["deepproblog"](small).probs
    finally:
        torch.set_default_dtype(old)
    label_cone = models["compiled"].engine.compiled.cone("label")
    qps_compiled = batch_size / t_compiled
    qps_compiled32 = batch_size / t_compiled32
    qps_dpl = dpl_samples / t_dpl
    return {
        "program": prog.name,
        "batch_size": batch_size,
        "cpu_threads": torch.get_num_threads(),
        "compiled_queries_per_s_float32": round(qps_compiled32, 1),
        "compiled_queries_per_s_float64": round(qps_compiled, 1),
        # the same training query through KLay's own module (every root of every context)
        "klay_module_queries_per_s_float32": round(batch_size / t_module32, 1),
        "deepproblog_queries_per_s": round(qps_dpl, 2),
        "deepproblog_samples_timed": dpl_samples,
        "speedup_float32": round(qps_compiled32 / qps_dpl, 1),
        "speedup_float64": round(qps_compiled / qps_dpl, 1),
        "max_abs_diff": float((p_compiled - p_dpl).abs().max()),
        # circuit edges each training query walks (its own cone), on average, and in the whole circuit
        "edges_per_training_query": round(float(np.mean(label_cone.edges_per_key)), 1),
        "circuit_edges": label_cone.circuit_edges,
        "contexts": sorted({c for c in models["compiled"](small).contexts}),
    }
