"""The numpy answer tables give the compiled engine's answers, save and load
exactly, refuse what they cannot answer in one line, and never import torch."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from logic.answer_export import answer_tables, export_answer_tables
from logic.answer_tables import META, NPZ, AnswerTables, AnswerTablesError
from logic.model import LogicModel
from logic.program import available_programs, load_program
from neural.common import UserError
from pipelines.context import CONTEXTS
from tests.logic_helpers import ALL_LAYOUTS, given_networks, make_batch, random_outputs, random_rule_probs

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = available_programs("image")


def model_of(name: str, **options) -> LogicModel:
    program = load_program(name, check_bindings=False)
    return LogicModel(program, given_networks(program), engine="compiled", evaluator="circuit", **options)


def batch_and_outputs(model, layout, seed: int):
    """A batch of given network outputs (absent faces NaN, as the cache stores them), the
    model's answers to it, and the same outputs per (network, source) block, in numpy."""
    batch = make_batch(layout, random_outputs(model.program, len(layout), torch.Generator().manual_seed(seed)))
    with torch.no_grad():
        expected = model(batch, explain=True)
        outputs = {(net, src): model.networks[net](batch.tensors[src]).numpy()
                   for net, src in model.engine.compiled.queries.nn_blocks}
    return batch, expected, outputs


def shuffled_layout(seed: int, repeat: int = 3):
    """Every context, several times, in a random order (keys interleaved in the batch)."""
    layout = ALL_LAYOUTS * repeat
    return [layout[i] for i in np.random.default_rng(seed).permutation(len(layout))]


def assert_same_answers(tables, model, batch, expected, outputs):
    got = tables.answer(outputs, batch.context_codes(tables.face_size_threshold).numpy())
    assert got.contexts == expected.contexts
    assert got.sources == expected.sources
    assert got.probs.dtype == np.float64 and got.posterior.shape == tuple(expected.posterior.shape)
    assert np.abs(got.probs - expected.probs.numpy()).max() <= 1e-9
    assert np.abs(got.posterior - expected.posterior.numpy()).max() <= 1e-9
    return got


@pytest.mark.parametrize("name", PROGRAMS)
def test_tables_answer_as_the_compiled_engine(name):
    model = model_of(name)
    layout = shuffled_layout(0)
    batch, default_out, outputs = batch_and_outputs(model, layout, seed=1)
    tables = answer_tables(model)
    assert set(default_out.contexts) == set(CONTEXTS)
    default = assert_same_answers(tables, model, batch, default_out, outputs)

    # learned (here: random) rule probabilities are exported with the tables
    model.set_rule_probabilities(random_rule_probs(model.program, torch.Generator().manual_seed(2)))
    with torch.no_grad():
        learned_out = model(batch, explain=True)
    learned_tables = answer_tables(model)
    learned = assert_same_answers(learned_tables, model, batch, learned_out, outputs)
    assert np.abs(learned.probs - default.probs).max() > 1e-3  # the rules do change the answers
    for c in model.contexts:
        assert learned_tables.trust[c] == pytest.approx(model.source_probabilities_for(c), abs=1e-12)
        assert list(learned_tables.trust[c]) == model.program.sources_in(c)
    # uniform rules: another point, and the default tables are still the program's
    model.reset_rules("uniform")
    with torch.no_grad():
        assert_same_answers(answer_tables(model), model, batch, model(batch, explain=True), outputs)


def test_va_sources_read_several_networks():
    """va_selection's va source is read by two networks: two blocks, each its own output."""
    tables = answer_tables(model_of("va_selection"))
    va = [(b, k) for b, k in zip(tables.blocks, tables.block_sizes) if b[1] == "va"]
    assert sorted(va) == [(("va_arousal", "va"), 3), (("va_valence", "va"), 3)]


def test_images_read_only_their_contexts_blocks():
    model = model_of("context_selection")
    layout = [(0, False), (1, True), (0, False), (3, False)]
    batch, expected, outputs = batch_and_outputs(model, layout, seed=3)
    tables = answer_tables(model)
    codes = batch.context_codes(tables.face_size_threshold).numpy()
    read = tables.blocks_read(codes)
    face = [tables.blocks.index(("face_emotion", f"face{i}")) for i in (1, 2, 3)]
    scene = tables.blocks.index(("scene2emotion", "scene"))
    assert read[:, scene].all()
    assert read[:, face].tolist() == [[False] * 3, [True, False, False], [False] * 3, [True] * 3]
    # rows an image does not read are ignored, whatever they hold
    junk = {b: np.where(read[:, [j]], y, np.nan) for j, (b, y) in enumerate(
        (b, outputs[b]) for b in tables.blocks)}
    got = tables.answer(junk, codes)
    assert np.abs(got.probs - expected.probs.numpy()).max() <= 1e-9
    # images without faces need no face outputs at all
    no_faces = [0, 2]
    only_scene = {("scene2emotion", "scene"): outputs[("scene2emotion", "scene")][no_faces]}
    alone = tables.answer(only_scene, codes[no_faces])
    assert np.array_equal(alone.probs, got.probs[no_faces])
    assert np.array_equal(tables.answer(junk, codes, explain=False).probs, got.probs)


def test_face_size_threshold_and_contexts_come_from_the_model():
    model = model_of("context_selection", face_size_threshold=0.5, contexts=("n0", "n1_small", "n1_large"))
    tables = answer_tables(model)
    assert tables.face_size_threshold == 0.5
    assert tables.contexts == ("n0", "n1_small", "n1_large")
    assert tables.from_codes.tolist() == [0, 1, 2, -1, -1, -1, -1]
    layout = [(0, False), (1, True), (1, False)]  # large at 0.4 is small at 0.5
    batch, expected, outputs = batch_and_outputs(model, layout, seed=4)
    got = assert_same_answers(tables, model, batch, expected, outputs)
    assert got.contexts == ["n0", "n1_small", "n1_small"]
    with pytest.raises(AnswerTablesError, match="context 'n2_small' is not one of n0, n1_small, n1_large"):
        tables.answer(outputs, np.array([0, CONTEXTS.index("n2_small"), 1]))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """context_selection's tables at random rules, saved, with a batch and its answers."""
    model = model_of("context_selection")
    model.set_rule_probabilities(random_rule_probs(model.program, torch.Generator().manual_seed(5)))
    batch, expected, outputs = batch_and_outputs(model, shuffled_layout(6, repeat=2), seed=7)
    directory = export_answer_tables(model, tmp_path_factory.mktemp("tables") / "answers")
    codes = batch.context_codes(model.face_size_threshold).numpy()
    return directory, answer_tables(model), outputs, codes, expected


def test_save_and_load_give_identical_answers(saved):
    directory, tables, outputs, codes, expected = saved
    loaded = AnswerTables.load(directory)
    a, b = tables.answer(outputs, codes), loaded.answer(outputs, codes)
    assert np.array_equal(a.probs, b.probs) and np.array_equal(a.posterior, b.posterior)
    assert np.abs(b.probs - expected.probs.numpy()).max() <= 1e-9
    assert (loaded.trust, loaded.blocks, loaded.block_sizes, loaded.contexts, loaded.sources, loaded.emotions) == \
        (tables.trust, tables.blocks, tables.block_sizes, tables.contexts, tables.sources, tables.emotions)
    assert np.array_equal(loaded.rules, tables.rules) and np.array_equal(loaded.needs, tables.needs)


def copy_of(directory: Path, to: Path) -> Path:
    to.mkdir()
    for name in (NPZ, META):
        (to / name).write_bytes((directory / name).read_bytes())
    return to


def one_line_error(directory, match: str):
    with pytest.raises(AnswerTablesError, match=match) as info:
        AnswerTables.load(directory)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, UserError)


def test_damaged_or_other_version_files_are_refused(saved, tmp_path):
    directory = saved[0]
    one_line_error(tmp_path / "nowhere", "no answer tables")

    truncated = copy_of(directory, tmp_path / "truncated")
    (truncated / NPZ).write_bytes((directory / NPZ).read_bytes()[:-100])
    one_line_error(truncated, "damaged or from another export")

    old = copy_of(directory, tmp_path / "old")
    meta = json.loads((old / META).read_text())
    (old / META).write_text(json.dumps(meta | {"version": 0}))
    one_line_error(old, "format version 0; this emologic reads version 1")

    garbage = copy_of(directory, tmp_path / "garbage")
    (garbage / META).write_text("{not json")
    one_line_error(garbage, "unreadable")

    foreign = copy_of(directory, tmp_path / "foreign")
    (foreign / META).write_text(json.dumps({"rules": [1, 2]}))
    one_line_error(foreign, "does not hold emologic answer tables")

    # a consistent hash over arrays that do not fit the names: caught by the shape checks
    with np.load(directory / NPZ) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for name, change in (("needs", lambda a: a[:, :2]), ("main.outputs", lambda a: a[:3])):
        bad = copy_of(directory, tmp_path / f"bad_{name}")
        buf = io.BytesIO()
        np.savez(buf, **(arrays | {name: change(arrays[name])}))
        (bad / NPZ).write_bytes(buf.getvalue())
        (bad / META).write_text(json.dumps(meta | {"npz_sha256": hashlib.sha256(buf.getvalue()).hexdigest()}))
        one_line_error(bad, "corrupt answer tables")
    missing = copy_of(directory, tmp_path / "missing")
    buf = io.BytesIO()
    np.savez(buf, **{k: v for k, v in arrays.items() if k != "rules"})
    (missing / NPZ).write_bytes(buf.getvalue())
    (missing / META).write_text(json.dumps(meta | {"npz_sha256": hashlib.sha256(buf.getvalue()).hexdigest()}))
    one_line_error(missing, "damaged answer tables")


def test_questions_it_cannot_answer_are_refused(saved):
    _, tables, outputs, codes, _ = saved
    n1 = np.array([CONTEXTS.index("n1_large")])
    one = {b: y[:1] for b, y in outputs.items()}
    without_face = {b: y for b, y in one.items() if b[1] != "face1"}
    with pytest.raises(AnswerTablesError, match=r"image 0 \(context n1_large\) needs the output of network "
                                                r"face_emotion on source face1, which was not given"):
        tables.answer(without_face, n1)
    for code in (len(CONTEXTS), -1):
        with pytest.raises(AnswerTablesError, match=f"context code {code} is not one of 0..6"):
            tables.answer(outputs, np.full(len(codes), code))
    with pytest.raises(AnswerTablesError, match="1-D integer array"):
        tables.answer(outputs, codes.astype(float))
    with pytest.raises(AnswerTablesError, match=r"must be \[1, 7\], got \[1, 6\]"):
        tables.answer({b: y[:, :6] for b, y in one.items()}, n1)
    nan_face = one | {("face_emotion", "face1"): np.full((1, 7), np.nan)}
    with pytest.raises(AnswerTablesError, match="image 0: the output of network face_emotion on source face1 is not "
                                                "finite"):
        tables.answer(nan_face, n1)


def test_other_engines_and_clip_programs_are_refused():
    program = load_program("context_selection", check_bindings=False)
    dpl = LogicModel(program, given_networks(program), engine="deepproblog")
    with pytest.raises(AnswerTablesError, match="exported from the compiled engine, not deepproblog"):
        answer_tables(dpl)
    clip = load_program("clip_sentiment", check_bindings=False)
    with pytest.raises(AnswerTablesError, match="clip program: only image programs"):
        answer_tables(LogicModel(clip, given_networks(clip)))


# A fresh interpreter that only loads and answers: no torch, ProbLog, PySDD, KLay or numba.
TORCH_FREE = """
import json, sys
import numpy as np
from logic.answer_tables import AnswerTables
tables = AnswerTables.load(sys.argv[1])
data = np.load(sys.argv[2])
outputs = {tuple(b): data[str(j)] for j, b in enumerate(tables.blocks)}
out = tables.answer(outputs, data["codes"])
heavy = sorted(m for m in ("torch", "problog", "pysdd", "klay", "numba") if m in sys.modules)
assert not heavy, f"imported: {heavy}"
print(json.dumps({"probs": out.probs.tolist(), "posterior": out.posterior.tolist()}))
"""


def test_answers_without_torch(saved, tmp_path):
    directory, tables, outputs, codes, expected = saved
    np.savez(tmp_path / "inputs.npz", codes=codes, **{str(j): outputs[b] for j, b in enumerate(tables.blocks)})
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", TORCH_FREE, str(directory), str(tmp_path / "inputs.npz")],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert np.abs(np.array(got["probs"]) - expected.probs.numpy()).max() <= 1e-9
    assert np.abs(np.array(got["posterior"]) - expected.posterior.numpy()).max() <= 1e-9
