"""Programs load and bind; bad programs and bad input are rejected clearly."""
from __future__ import annotations

import json
import re

import pytest
import torch

from logic.model import LogicModel
from logic.program import ProgramError, available_programs, load_program, parse_problog
from neural.registry import get_network, list_networks
from neural.common import EMOTIONS, VocabularyError
from tests.logic_helpers import given_networks, make_batch, random_outputs


@pytest.mark.parametrize("name", available_programs())
def test_every_program_loads_and_binds_to_registered_networks(name):
    program = load_program(name)  # check_bindings=True
    assert program.networks and program.groups
    for net in program.networks:
        assert net in list_networks()
    # every emotion-valued neural predicate uses the vocabulary, in the face net's order
    for n in program.neural:
        if n.network in ("scene2emotion", "face_emotion"):
            assert n.domain == EMOTIONS


def test_programs_bind_to_real_networks_end_to_end():
    program = load_program("context_selection")
    nets = {"scene2emotion": get_network("scene2emotion"), "face_emotion": get_network("face_emotion").eval()}
    batch = make_batch([(0, False), (2, True)], {"scene": torch.randn(2, 512), "face1": torch.rand(2, 1, 64, 64),
                                                 "face2": torch.rand(2, 1, 64, 64), "face3": torch.rand(2, 1, 64, 64)})
    batch.tensors = {k: v.float() for k, v in batch.tensors.items()}
    out = LogicModel(program, nets)(batch, explain=True)
    assert torch.allclose(out.probs.sum(1), torch.ones(2))
    assert out.contexts == ["n0", "n2_large"]


def test_malformed_program_names_file_and_line(tmp_path):
    bad = tmp_path / "broken.pl"
    bad.write_text("% fine\nemotion(I, C, E) :- via(I, C, _, E).\nvia(I, C, S, E :- selected(I, C, S).\n")
    with pytest.raises(ProgramError, match=r"broken\.pl: cannot parse: line 3"):
        load_program(bad)


def test_unregistered_network_names_the_known_ones(tmp_path):
    text = (load_program("context_selection").text
            .replace("nn(face_emotion,", "nn(face_net_v9,"))
    path = tmp_path / "unbound.pl"
    path.write_text(text)
    with pytest.raises(ProgramError, match=r"unbound\.pl:\d+: nn\(face_net_v9, \.\.\.\) names no registered network; "
                                           r"known networks: .*face_emotion"):
        load_program(path)


def test_program_without_the_query_interface_is_rejected(tmp_path):
    path = tmp_path / "partial.pl"
    path.write_text("t(0.5)::trust(n1_small, scene); t(0.5)::trust(n1_small, face1).\n")
    with pytest.raises(ProgramError, match="does not define emotion/3, via/4, selected/3, valid/2"):
        load_program(path)


def test_unknown_program_lists_the_known_ones():
    with pytest.raises(ProgramError, match="known programs: .*context_selection"):
        load_program("no_such_program")


def test_emotion_outside_the_vocabulary_is_rejected(tmp_path):
    program = load_program("context_selection", check_bindings=False)
    model = LogicModel(program, given_networks(program))
    g = torch.Generator().manual_seed(0)
    batch = make_batch([(1, True)], random_outputs(program, 1, g))
    with pytest.raises(VocabularyError, match="unknown emotion 'joy'; the vocabulary is: angry, disgust, fear"):
        model.emotion_probability(batch, "joy")
    assert 0 < float(model.emotion_probability(batch, "happy")[0]) < 1
    # a program whose emotion/3 derives a value outside the vocabulary
    text = program.text.replace("[angry, disgust, fear, happy, sad, surprise, neutral]) :: scene_emotion",
                                "[angry, disgust, fear, joy, sad, surprise, neutral]) :: scene_emotion")
    path = tmp_path / "joy.pl"
    path.write_text(text)
    with pytest.raises(ProgramError, match="outside the vocabulary .*joy.*the vocabulary is: angry"):
        LogicModel(load_program(path, check_bindings=False), given_networks(program))


def test_learned_program_is_valid_problog(tmp_path):
    program = load_program("va_selection", check_bindings=False)
    model = LogicModel(program, given_networks(program))
    g = torch.Generator().manual_seed(1)
    model.set_rule_probabilities(torch.rand(program.n_params, generator=g).tolist())
    model.reset_rules("uniform")
    text = program.with_probabilities(model.rule_probabilities())
    statements = parse_problog(text)
    assert len(statements) >= len(program.groups)
    code = "".join(line.split("%")[0] for line in text.splitlines())
    assert not re.search(r"\bt\(", code)  # every t(...) got its learned value
    # the saved rules round-trip
    model.save_rules(tmp_path / "rules.json")
    other = LogicModel(program, given_networks(program))
    other.load_rules(tmp_path / "rules.json")
    assert other.rule_probabilities() == pytest.approx(model.rule_probabilities())
    assert json.loads((tmp_path / "rules.json").read_text())["program"] == "va_selection"


def test_rule_logits_softmax_per_disjunction_and_sigmoid_per_fact(tmp_path):
    """One softmax over padded groups: a disjunction's choices sum to one, a
    probabilistic fact is the sigmoid of its logit, and set() round-trips."""
    from logic.engines.rule_logits import RuleLogits

    base = load_program("context_selection", check_bindings=False)
    path = tmp_path / "with_fact.pl"
    path.write_text(base.text + "\nt(0.3)::lucky(img).\n")
    program = load_program(path, check_bindings=False)
    rules = RuleLogits(program)
    fact = [g for g in program.groups if len(g.params) == 1]
    assert len(fact) == 1
    (i,) = fact[0].params
    probs = rules.probs()
    assert probs[i].item() == pytest.approx(0.3)
    with torch.no_grad():
        rules.logits.normal_(generator=torch.Generator().manual_seed(0))
    probs = rules.probs()
    assert probs[i].item() == pytest.approx(torch.sigmoid(rules.logits[i]).item())
    for g in program.groups:
        if len(g.params) > 1:
            idx = list(g.params)
            torch.testing.assert_close(probs[idx], torch.softmax(rules.logits[idx], 0))
    probs.sum().backward()  # finite gradients through the padding
    assert rules.logits.grad.isfinite().all()
    rules.set(probs.detach())
    torch.testing.assert_close(rules.probs(), probs.detach())
