"""The clip program: emotion and sentiment tied by a learnable polarity table.

Both engines give the same probabilities and gradients, agree with plain ProbLog
and with the closed form written in clip_sentiment.pl; logic-only training
recovers a known polarity table and source probabilities; bad input is refused.
"""
from __future__ import annotations

import pytest
import torch
from problog import get_evaluatable
from problog.logic import Term
from problog.program import PrologString

from logic.model import ClipInputs, LogicModel
from logic.given import GivenSlice
from logic.inputs import random_rule_probs
from logic.learning import train_rules
from logic.program import ProgramError, available_programs, load_program
from neural.common import EMOTIONS, SENTIMENTS, UserError
from tests.logic_helpers import explained_with_rule_grad

pytestmark = pytest.mark.usefixtures("float64")
E, S = len(EMOTIONS), len(SENTIMENTS)


def given_heads():
    """The fusion net's two heads, read from precomputed outputs [B, 7 | 3]."""
    return {"multimodal_emotion": GivenSlice(0, E), "multimodal_sentiment": GivenSlice(E, E + S)}


def random_clips(n, g, sharp=2.0, requires_grad=False):
    x = torch.cat([torch.softmax(sharp * torch.randn(n, E, generator=g), 1),
                   torch.softmax(sharp * torch.randn(n, S, generator=g), 1)], 1)
    return ClipInputs([f"dia{i}_utt0" for i in range(n)], {"clip": x.requires_grad_(requires_grad)},
                      torch.randint(0, E, (n,), generator=g), torch.randint(0, S, (n,), generator=g))


def test_clip_program_is_a_clip_program_and_binds():
    assert "clip_sentiment" in available_programs("clip")
    assert "clip_sentiment" not in available_programs("image")
    program = load_program("clip_sentiment", check_bindings=False)
    assert program.kind == "clip"
    assert program.networks == ("multimodal_emotion", "multimodal_sentiment")
    assert program.domain_of("multimodal_emotion") == EMOTIONS
    assert program.domain_of("multimodal_sentiment") == SENTIMENTS
    model = LogicModel("clip_sentiment", networks=given_heads())
    assert model.sources == ("head", "emotion")
    table = model.polarity_table()
    assert set(table) == set(EMOTIONS)
    assert table["happy"]["positive"] == pytest.approx(0.8) and table["angry"]["negative"] == pytest.approx(0.8)
    assert table["surprise"]["positive"] == pytest.approx(table["surprise"]["negative"])
    assert model.sentiment_sources() == pytest.approx({"head": 0.5, "emotion": 0.5})


def run_engine(engine, batch, rule_probs):
    i = torch.arange(len(batch))

    def loss_of(out):
        return (-out.joint[i, batch.labels, batch.sentiments].log().sum() - out.emotion[i, batch.labels].log().sum()
                + (out.sentiment ** 2).sum() + (out.posterior ** 2).sum())

    model = LogicModel("clip_sentiment", networks=given_heads(), engine=engine)
    out, rule_grad = explained_with_rule_grad(model, engine, batch, rule_probs, loss_of)
    nn_grad = batch.tensors["clip"].grad.clone()
    batch.tensors["clip"].grad = None
    return out, rule_grad, nn_grad


def test_engines_agree_on_probabilities_and_gradients():
    g = torch.Generator().manual_seed(5)
    batch = random_clips(6, g, requires_grad=True)
    rule_probs = random_rule_probs(load_program("clip_sentiment", check_bindings=False), g)
    a, a_rg, a_nn = run_engine("compiled", batch, rule_probs)
    b, b_rg, b_nn = run_engine("deepproblog", batch, rule_probs)
    for k in ("emotion", "sentiment", "joint", "posterior"):
        assert (getattr(a, k) - getattr(b, k)).abs().max() <= 1e-6, k
    assert (a_rg - b_rg).abs().max() <= 1e-5 and a_rg.abs().max() > 0
    assert (a_nn - b_nn).abs().max() <= 1e-5 and a_nn.abs().max() > 0
    # distributions, and the joint's marginals are the two queries
    ones = torch.ones(len(batch))
    assert torch.allclose(a.emotion.sum(1), ones) and torch.allclose(a.sentiment.sum(1), ones)
    assert torch.allclose(a.joint.sum(2), a.emotion) and torch.allclose(a.joint.sum(1), a.sentiment)
    assert torch.allclose(a.posterior.sum(1), torch.ones(len(batch), S))


def test_closed_form_and_plain_problog():
    """P(E, S) = P_emo(E) (t_head P_head(S) + t_emotion polarity(E, S)), as the program file says;
    plain ProbLog with the same numbers written in gives the same answers."""
    g = torch.Generator().manual_seed(11)
    batch = random_clips(3, g)
    program = load_program("clip_sentiment", check_bindings=False)
    rule_probs = random_rule_probs(program, g)
    model = LogicModel("clip_sentiment", networks=given_heads())
    model.set_rule_probabilities(rule_probs)
    with torch.no_grad():
        out = model(batch)
    pol = torch.tensor([[model.polarity_table()[e][s] for s in SENTIMENTS] for e in EMOTIONS])
    src = model.sentiment_sources()
    x = batch.tensors["clip"]
    expected = x[:, :E, None] * (src["head"] * x[:, None, E:] + src["emotion"] * pol[None])
    assert (out.joint - expected).abs().max() <= 1e-12

    text = "".join(line for line in program.with_probabilities(rule_probs).splitlines(keepends=True)
                   if not line.lstrip().startswith("nn("))
    for i in range(len(batch)):
        facts = ["; ".join(f"{p:.17g}::emotion_head(tensor(clip(img)), {e})" for e, p in zip(EMOTIONS, x[i, :E].tolist())) + ".",
                 "; ".join(f"{p:.17g}::sentiment_head(tensor(clip(img)), {s})" for s, p in zip(SENTIMENTS, x[i, E:].tolist())) + "."]
        queries = [f"query(label(img, {e}, {s}))." for e in EMOTIONS for s in SENTIMENTS]
        result = get_evaluatable().create_from(PrologString(text + "\n".join(facts + queries))).evaluate()
        plain = torch.tensor([[result[Term("label", Term("img"), Term(e), Term(s))] for s in SENTIMENTS] for e in EMOTIONS])
        assert (out.joint[i] - plain).abs().max() <= 1e-6


def test_logic_only_training_recovers_the_polarity_table():
    """Labels drawn from a known polarity table and source probabilities, on fixed
    network outputs: training the rules alone recovers both. (The deepproblog
    engine computes the same gradients, tested above; its one-query-at-a-time SGD
    is too slow for a few thousand clips in a unit test.)"""
    g = torch.Generator().manual_seed(0)
    n = 6000
    truth_pol = torch.softmax(2.0 * torch.randn(E, S, generator=g), 1)
    t_head = 0.3
    emo = torch.randint(0, E, (n,), generator=g)
    # the emotion head is confident and right; the sentiment head is a noisy guess
    p_emo = torch.full((n, E), 0.01 / (E - 1)).scatter(1, emo[:, None], 0.99)
    p_head = torch.softmax(3 * torch.randn(n, S, generator=g), 1)
    route_head = torch.rand(n, generator=g) < t_head
    probs = torch.where(route_head[:, None], p_head, truth_pol[emo])
    sent = torch.multinomial(probs, 1, generator=g)[:, 0]
    x = torch.cat([p_emo, p_head], 1)
    model = LogicModel("clip_sentiment", networks=given_heads())
    model.reset_rules("uniform")
    bs = 200
    batches = [ClipInputs([f"c{j}" for j in range(i, i + bs)], {"clip": x[i:i + bs]}, emo[i:i + bs], sent[i:i + bs])
               for i in range(0, n, bs)]
    train_rules(model, batches, epochs=30, lr=0.05)
    learned = torch.tensor([[model.polarity_table()[e][s] for s in SENTIMENTS] for e in EMOTIONS])
    # what the data can reveal: the sentiments drawn through the table, per emotion
    via = ~route_head
    empirical = torch.stack([torch.bincount(sent[via & (emo == e)], minlength=S).double() for e in range(E)])
    empirical = empirical / empirical.sum(1, keepdim=True)
    tol = 0.03
    assert (learned - empirical).abs().mean() <= tol
    assert (learned - truth_pol).abs().mean() <= 2 * tol
    assert abs(model.sentiment_sources()["head"] - float(route_head.double().mean())) <= 0.05


def test_bad_input_is_refused():
    with pytest.raises(ProgramError, match="no network bound to scene2emotion, face_emotion"):
        LogicModel("context_selection", networks=given_heads())  # an image program wants the image networks
    with pytest.raises(UserError, match="face_size_threshold does not apply to clip program"):
        LogicModel("clip_sentiment", networks=given_heads(), face_size_threshold=0.2)
    with pytest.raises(ProgramError, match="selects no source per context"):
        LogicModel("clip_sentiment", networks=given_heads()).source_probabilities()
    with pytest.raises(ProgramError, match="no network bound to multimodal_sentiment"):
        LogicModel("clip_sentiment", networks={"multimodal_emotion": GivenSlice(0, E)})
    with pytest.raises(UserError, match="unknown engine"):
        LogicModel("clip_sentiment", networks=given_heads(), engine="nope")
    g = torch.Generator().manual_seed(0)
    batch = random_clips(2, g)
    batch.sentiments[1] = -1
    with pytest.raises(UserError, match="sentiment label"):
        LogicModel("clip_sentiment", networks=given_heads()).nll(batch)
