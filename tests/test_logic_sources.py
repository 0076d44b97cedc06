"""The source table is read from the program (logic/sources.py), the engines are
found by name (logic/engines/base.py), and nothing in logic/ spells a network."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from logic.engines import ENGINES, engine_class, register_engine
from logic.engines.compiled import CompiledEngine
from logic.given import Given, GivenSlice
from logic.model import LogicModel
from logic.program import PROGRAM_DIR, available_programs, load_program
from logic.sources import Source
from neural.common import EMOTIONS, UserError
from tests.logic_helpers import ALL_LAYOUTS, explained_with_rule_grad, given_networks, make_batch, random_outputs, \
    random_rule_probs

ROOT = Path(__file__).resolve().parents[1]
FACES = {f"face{i}": Source(f"face{i}", ("face_emotion",), f"face{i}", "image", (7,)) for i in (1, 2, 3)}
SCENE = {"scene": Source("scene", ("scene2emotion",), "scene", "image", (7,))}
EXPECTED = {
    "context_selection": SCENE | FACES,
    "source_selection": SCENE | FACES,
    "va_selection": SCENE | FACES | {"va": Source("va", ("va_valence", "va_arousal"), "va", "image", (3, 3))},
    "clip_sentiment": {"clip": Source("clip", ("multimodal_emotion", "multimodal_sentiment"), "clip", "clip", (7, 3))},
}


def test_every_shipped_program_has_its_source_table():
    assert set(available_programs()) == set(EXPECTED)  # a new program gets its table here
    for name, expected in EXPECTED.items():
        program = load_program(name, check_bindings=False)
        assert program.sources == expected, name
        assert list(program.sources) == list(expected), name  # the order the program reads them
        assert program.tensor_networks == {k: s.networks for k, s in expected.items()}
    va = EXPECTED["va_selection"]["va"]
    assert va.width == 6 and va.columns == {"va_valence": (0, 3), "va_arousal": (3, 6)}


def test_given_networks_and_random_outputs_follow_the_table():
    va = load_program("va_selection", check_bindings=False)
    nets = given_networks(va)
    assert isinstance(nets["face_emotion"], Given) and isinstance(nets["scene2emotion"], Given)
    assert (nets["va_valence"].start, nets["va_valence"].stop) == (0, 3)
    assert (nets["va_arousal"].start, nets["va_arousal"].stop) == (3, 6)
    clip = load_program("clip_sentiment", check_bindings=False)
    nets = given_networks(clip)
    assert [(n.start, n.stop) for n in nets.values()] == [(0, 7), (7, 10)]
    out = random_outputs(clip, 4, torch.Generator().manual_seed(0))
    assert list(out) == ["clip"] and out["clip"].shape == (4, 10)
    assert torch.allclose(out["clip"][:, :7].sum(1), torch.ones(4, dtype=torch.float64))
    assert torch.allclose(out["clip"][:, 7:].sum(1), torch.ones(4, dtype=torch.float64))


def plugin_program(tmp_path) -> Path:
    """context_selection with one more source, ``pose``, read by a network no module spells."""
    text = (PROGRAM_DIR / "context_selection.pl").read_text()
    text = text.replace("trust(n0, scene).", "t(0.5)::trust(n0, scene); t(0.5)::trust(n0, pose).")
    text += (f"\nnn(pose_net, [X], E, [{', '.join(EMOTIONS)}]) :: pose_emotion(X, E).\n"
             "source_emotion(Img, pose, E) :- pose_emotion(tensor(pose(Img)), E).\n")
    path = tmp_path / "with_pose.pl"
    path.write_text(text)
    return path


@pytest.mark.usefixtures("float64")
def test_a_new_source_in_a_program_is_in_its_table_and_both_engines_answer_it(tmp_path):
    program = load_program(plugin_program(tmp_path), check_bindings=False)
    assert program.sources["pose"] == Source("pose", ("pose_net",), "pose", "image", (7,))
    assert list(program.sources)[-1] == "pose"
    assert isinstance(given_networks(program)["pose_net"], Given)
    g = torch.Generator().manual_seed(5)
    layout = [(0, False), (0, False), (1, True), (2, False)]
    outputs = random_outputs(program, len(layout), g)
    assert outputs["pose"].shape == (len(layout), 7)
    rule_probs = random_rule_probs(program, g)
    answers = {}
    for engine in ENGINES:
        model = LogicModel(program, given_networks(program), engine=engine)
        batch = make_batch(layout, outputs, labels=torch.tensor([3, 1, 0, 6]), requires_grad=True)
        out, rule_grad = explained_with_rule_grad(model, engine, batch, rule_probs,
                                                  lambda o: -o.probs[torch.arange(4), batch.labels].log().sum())
        answers[engine] = (out, rule_grad, batch.tensors["pose"].grad.nan_to_num())
        assert "pose" in model.sources and set(model.source_probabilities()["n0"]) == {"scene", "pose"}
    (a, ga, pa), (b, gb, pb) = answers.values()
    assert (a.probs - b.probs).abs().max() <= 1e-6 and (a.posterior - b.posterior).abs().max() <= 1e-6
    assert (ga - gb).abs().max() <= 1e-5 and (pa - pb).abs().max() <= 1e-5
    assert pa[:2].abs().max() > 0 and pa[2:].abs().max() == 0  # only n0 images read the pose
    pose = a.sources.index("pose")
    assert a.posterior[:2, pose].abs().max() > 0 and a.posterior[2:, pose].abs().max() == 0


def test_two_networks_on_one_source_get_columns_in_the_order_the_program_calls_them(tmp_path):
    text = (PROGRAM_DIR / "va_selection.pl").read_text()
    swapped = text.replace("valence_bin(tensor(va(Img)), V), arousal_bin(tensor(va(Img)), A)",
                           "arousal_bin(tensor(va(Img)), A), valence_bin(tensor(va(Img)), V)")
    assert swapped != text
    path = tmp_path / "swapped.pl"
    path.write_text(swapped)
    va = load_program(path, check_bindings=False).sources["va"]
    assert va.networks == ("va_arousal", "va_valence") and va.columns["va_valence"] == (3, 6)
    nets = given_networks(load_program(path, check_bindings=False))
    assert isinstance(nets["va_valence"], GivenSlice) and nets["va_valence"].start == 3


def test_unknown_engines_and_options_are_refused_by_name():
    program = load_program("context_selection", check_bindings=False)
    with pytest.raises(UserError, match="unknown engine 'fast'; known engines: compiled, deepproblog"):
        LogicModel(program, given_networks(program), engine="fast")
    with pytest.raises(UserError, match="unknown engine 'fast'"):
        engine_class("fast")
    with pytest.raises(UserError, match="evaluator 'circuit' is an option of the compiled engine, not of 'deepproblog'"):
        LogicModel(program, given_networks(program), engine="deepproblog", evaluator="circuit")


def test_a_registered_engine_is_found_by_name(monkeypatch):
    class Counting(CompiledEngine):
        name = "counting"
        calls = 0

        def evaluate(self, *args, **kwargs):
            Counting.calls += 1
            return super().evaluate(*args, **kwargs)

    monkeypatch.setitem(ENGINES, "counting", Counting)  # removed again after the test
    assert register_engine(Counting) is Counting
    program = load_program("source_selection", check_bindings=False)
    model = LogicModel(program, given_networks(program), engine="counting")
    batch = make_batch(ALL_LAYOUTS, random_outputs(program, len(ALL_LAYOUTS), torch.Generator().manual_seed(0)))
    assert model(batch).probs.shape == (len(ALL_LAYOUTS), 7) and Counting.calls == 1
    assert model.rules_state()["engine"] == "counting"


def test_no_network_or_engine_name_is_spelled_above_the_engines():
    """Networks are named in programs (and their own modules), not in logic/;
    nothing above logic/engines compares engine names."""
    networks = {n for name in available_programs() for n in load_program(name, check_bindings=False).networks}
    for path in sorted((ROOT / "logic").rglob("*.py")):
        text = path.read_text()
        for net in networks:
            assert not re.search(rf"\b{net}\b", text), f"{path.relative_to(ROOT)} spells network {net}"
    comparison = re.compile(r"""[=!]=\s*["'](compiled|deepproblog)["']|["'](compiled|deepproblog)["']\s*[=!]=""")
    for folder in ("logic", "experiments"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "engines" not in path.relative_to(ROOT).parts:
                assert not comparison.search(path.read_text()), f"{path.relative_to(ROOT)} branches on an engine name"
