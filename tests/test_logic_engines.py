"""The two engines give the same probabilities and gradients, and both agree
with plain ProbLog when the same numbers are written into the program."""
from __future__ import annotations

import pytest
import torch
from problog.logic import Term
from problog.program import PrologString
from problog.sdd_formula import SDD

from logic.model import LogicModel
from logic.program import available_programs, load_program
from neural.common import EMOTIONS
from tests.logic_helpers import (
    ALL_LAYOUTS,
    explained_with_rule_grad,
    given_networks,
    make_batch,
    random_outputs,
    random_rule_probs,
)

PROGRAMS = available_programs("image")


# DeepProbLog builds its parameter tensors with the default dtype: run in float64.
pytestmark = pytest.mark.usefixtures("float64")


def run_engine(program, engine, batch_args, rule_probs):
    model = LogicModel(program, given_networks(program), engine=engine)
    batch = make_batch(*batch_args, requires_grad=True)

    def loss_of(out):  # touches every output: log-likelihood of the labels plus the posterior
        return -out.probs[torch.arange(len(batch)), batch.labels].log().sum() + (out.posterior ** 2).sum()

    out, rule_grad = explained_with_rule_grad(model, engine, batch, rule_probs, loss_of)
    nn_grads = {k: v.grad.nan_to_num() for k, v in batch.tensors.items()}
    return out, rule_grad, nn_grads, model


@pytest.mark.parametrize("name", PROGRAMS)
def test_engines_agree_on_probabilities_and_gradients(name):
    program = load_program(name, check_bindings=False)
    g = torch.Generator().manual_seed(7)
    layout = ALL_LAYOUTS * 2
    outputs = random_outputs(program, len(layout), g)
    labels = torch.randint(0, len(EMOTIONS), (len(layout),), generator=g)
    rule_probs = random_rule_probs(program, g)
    a_out, a_rg, a_nn, model = run_engine(program, "compiled", (layout, outputs, labels), rule_probs)
    b_out, b_rg, b_nn, _ = run_engine(program, "deepproblog", (layout, outputs, labels), rule_probs)

    assert set(a_out.contexts) == {"n0", "n1_small", "n1_large", "n2_small", "n2_large", "n3_small", "n3_large"}
    assert torch.allclose(a_out.probs.sum(1), torch.ones(len(layout)))
    assert (a_out.probs - b_out.probs).abs().max() <= 1e-6
    assert (a_out.posterior - b_out.posterior).abs().max() <= 1e-6
    assert (a_rg - b_rg).abs().max() <= 1e-5
    assert a_rg.abs().max() > 0  # the rule parameters do receive a gradient
    for k in a_nn:
        assert (a_nn[k] - b_nn[k]).abs().max() <= 1e-5, k
        assert a_nn[k].abs().max() > 0, k
    # the posterior over sources is a distribution for each emotion, and absent sources get 0
    post = a_out.posterior
    assert torch.allclose(post.sum(1), torch.ones_like(post.sum(1)))
    for i, (k, _) in enumerate(layout):
        for j in range(k + 1, 3):
            assert post[i, model.sources.index(f"face{j + 1}")].abs().max() == 0


def plain_problog(program, sample_outputs: dict, rule_probs, context: str):
    """P(emotion | image) from ProbLog itself, with the numbers written into the program."""
    text = "".join(
        line for line in program.with_probabilities(rule_probs).splitlines(keepends=True)
        if not line.lstrip().startswith("nn(")
    )
    facts = []
    preds = {"scene": "scene_emotion", "face1": "face_emotion", "face2": "face_emotion", "face3": "face_emotion"}
    for src, probs in sample_outputs.items():
        if src == "va":
            kv = len(program.domain_of("va_valence"))
            for pred, dom, ps in (("valence_bin", program.domain_of("va_valence"), probs[:kv]),
                                  ("arousal_bin", program.domain_of("va_arousal"), probs[kv:])):
                facts.append("; ".join(f"{p:.17g}::{pred}(tensor(va(img)), {v})" for v, p in zip(dom, ps.tolist())) + ".")
        else:
            facts.append("; ".join(
                f"{p:.17g}::{preds[src]}(tensor({src}(img)), {e})" for e, p in zip(EMOTIONS, probs.tolist())
            ) + ".")
    queries = [f"query(emotion(img, {context}, {e}))." for e in EMOTIONS] + [f"query(valid(img, {context}))."]
    # ProbLog's SDD compiler with dynamic vtree minimisation: with its default static
    # vtree the circumplex table of va_selection makes the SDD explode.
    sdd = SDD.create_from(PrologString(text + "\n" + "\n".join(facts + queries)), sdd_auto_gc=True)
    result = sdd.evaluate()
    valid = result[Term("valid", Term("img"), Term(context))]
    return torch.tensor([result[Term("emotion", Term("img"), Term(context), Term(e))] / valid for e in EMOTIONS])


@pytest.mark.parametrize("name", PROGRAMS)
def test_engines_agree_with_plain_problog(name):
    program = load_program(name, check_bindings=False)
    g = torch.Generator().manual_seed(3)
    # plain ProbLog compiles the circumplex table of va_selection slowly: fewer images there
    layout = ALL_LAYOUTS if name != "va_selection" else [(0, False), (1, True), (3, False)]
    outputs = random_outputs(program, len(layout), g)
    rule_probs = random_rule_probs(program, g)
    answers = {}
    for engine in ("compiled", "deepproblog"):
        model = LogicModel(program, given_networks(program), engine=engine)
        model.set_rule_probabilities(rule_probs)
        with torch.no_grad():
            answers[engine] = model(make_batch(layout, outputs))
    contexts = answers["compiled"].contexts
    for i, (k, _) in enumerate(layout):
        present = {s: v[i] for s, v in outputs.items() if not s.startswith("face") or int(s[-1]) <= k}
        expected = plain_problog(program, present, rule_probs, contexts[i])
        for engine, out in answers.items():
            assert (out.probs[i] - expected).abs().max() <= 1e-6, (engine, contexts[i])


def test_absent_faces_are_never_evaluated():
    """A network never sees a missing face: the face net is called on existing crops only."""
    program = load_program("source_selection", check_bindings=False)
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(x.detach().clone())
            return x

    nets = given_networks(program)
    nets["face_emotion"] = Recorder()
    g = torch.Generator().manual_seed(0)
    layout = ALL_LAYOUTS
    model = LogicModel(program, nets, engine="compiled")
    out = model(make_batch(layout, random_outputs(program, len(layout), g)))
    faces_seen = sum(len(x) for x in seen)
    assert faces_seen == sum(k for k, _ in layout)
    assert all(not torch.isnan(x).any() for x in seen)
    assert torch.isfinite(out.probs).all()


def test_seed_program_renormalises_over_existing_sources():
    program = load_program("source_selection", check_bindings=False)
    model = LogicModel(program, given_networks(program), engine="compiled")
    model.set_rule_probabilities([0.1, 0.2, 0.3, 0.4])
    assert model.source_probabilities_for("n0") == pytest.approx({"scene": 1.0})
    assert model.source_probabilities_for("n2_small") == pytest.approx({"scene": 1 / 6, "face1": 2 / 6, "face2": 3 / 6})
    assert model.source_probabilities_for("n3_large") == pytest.approx(
        {"scene": 0.1, "face1": 0.2, "face2": 0.3, "face3": 0.4})


def test_engine_benchmark_reports_agreeing_engines():
    from logic.bench import bench_engines

    r = bench_engines(batch_size=32, dpl_samples=4, repeats=1)
    assert r["max_abs_diff"] <= 1e-6
    assert r["compiled_queries_per_s_float32"] > 0 and r["deepproblog_queries_per_s"] > 0
    assert len(r["contexts"]) >= 3


def test_engine_benchmark_json_is_json(capsys):
    """Nothing but the JSON on stdout (DeepProbLog's own notices included)."""
    import json

    from experiments.cli import main

    assert main(["bench", "engines", "--json", "--batch-size", "16", "--dpl-samples", "2", "--repeats", "1"]) == 0
    out = json.loads(capsys.readouterr().out)["engines"]
    assert out["batch_size"] == 16 and out["deepproblog_samples_timed"] == 2


@pytest.mark.parametrize("name", PROGRAMS)
def test_circuit_evaluator_answers_like_the_cones(name):
    """evaluator="circuit" (KLay's whole circuit, for answering without numba)
    gives the cones' numbers; with gradients enabled it uses the cones."""
    program = load_program(name, check_bindings=False)
    g = torch.Generator().manual_seed(11)
    layout = ALL_LAYOUTS * 2
    outputs = random_outputs(program, len(layout), g)
    labels = torch.randint(0, len(EMOTIONS), (len(layout),), generator=g)
    rule_probs = random_rule_probs(program, g)
    answers = {}
    for evaluator in ("cones", "circuit"):
        model = LogicModel(program, given_networks(program), engine="compiled", evaluator=evaluator)
        model.set_rule_probabilities(rule_probs)
        batch = make_batch(layout, outputs, labels)
        with torch.no_grad():
            answers[evaluator] = (model(batch, explain=True), model.label_log_probs(batch))
    (a, a_ll), (b, b_ll) = answers["cones"], answers["circuit"]
    assert not torch.isnan(b.probs).any() and not torch.isnan(b.posterior).any()
    assert (a.probs - b.probs).abs().max() <= 1e-12
    assert (a.posterior - b.posterior).abs().max() <= 1e-12
    assert (a_ll - b_ll).abs().max() <= 1e-12
    batch = make_batch(layout, outputs, labels, requires_grad=True)
    model.label_log_probs(batch).sum().backward()  # the circuit model trains through the cones
    assert any(v.grad is not None and v.grad.nan_to_num().abs().max() > 0 for v in batch.tensors.values())


def test_unknown_evaluator_is_refused_by_name():
    program = load_program("context_selection", check_bindings=False)
    with pytest.raises(Exception, match="unknown evaluator 'fast'.*cones, circuit"):
        LogicModel(program, given_networks(program), evaluator="fast")
    with pytest.raises(Exception, match="evaluator 'circuit' is an option of the compiled engine"):
        LogicModel(program, given_networks(program), engine="deepproblog", evaluator="circuit")
