"""``emologic query`` on synthetic images of a finished tiny run (text, --json,
--face-source annotations, --annotate), on bad inputs, and its --help."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.cli import main
from neural.common import EMOTIONS
from tests.run_helpers import tiny_image_run

SLOT_COLOUR_FACE1 = (255, 140, 0)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished run with two logic regimes (so the default choice means something)."""
    return tiny_image_run(tmp_path_factory.mktemp("query_run"), ["frozen", "uniform_rules"])


@pytest.fixture(scope="module")
def synth(tiny_run):
    """(path, annotation) of every image of the run's synthetic data set."""
    data = Path(json.loads((tiny_run / "config.json").read_text())["config"]["data_root"])
    rows = [json.loads(line) for line in (data / "annotations.jsonl").read_text().splitlines()]
    return [(data / "images" / f"{r['sample_id']}.png", r) for r in rows]


def with_faces(synth, n=1):
    return [p for p, r in synth if len(r["boxes"]) >= 1][:n]


def without_faces(synth):
    return next(p for p, r in synth if not r["boxes"])


def query(capsys, *argv):
    rc = main(["query", *map(str, argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def best_logic_regime(run_dir: Path) -> str:
    results = json.loads((run_dir / "results.json").read_text())["regimes"]
    nll = {r: v["per_seed"]["0"]["history"][-1]["val_nll"] for r, v in results.items() if r != "late_fusion"}
    return min(nll, key=nll.get)


def test_text_output_names_run_regime_seed_and_answers_each_image(tiny_run, synth, capsys):
    images = [without_faces(synth), *with_faces(synth, 1)]
    rc, out, _ = query(capsys, *images, "--run", tiny_run, "--top", "2")
    assert rc == 0
    header, *body = out.splitlines()
    assert str(tiny_run) in header and f"regime {best_logic_regime(tiny_run)}" in header and "seed 0" in header
    for image in images:
        assert str(image) in body
    emotion_lines = [line for line in body if line.strip().startswith("emotion")]
    assert len(emotion_lines) == 2 and all(line.count(",") == 1 for line in emotion_lines)  # --top 2
    blocks = "\n".join(body).split("\n" + str(images[1]) + "\n")
    assert len(blocks) == 2
    for block in blocks:
        assert block.count("  answer   ") == 1 and "  sources  scene says " in block
        if "faces    none found" in block:  # no face: the context is n0 and only the scene can be trusted
            assert "context  n0 " in block and "trusted scene (100%)" in block
    assert "faces    none found" in blocks[0]  # a synthetic image without faces


def test_json_records_are_distributions(tiny_run, synth, capsys):
    images = [p for p, _ in synth[:4]]
    rc, out, err = query(capsys, *images, "--run", tiny_run, "--regime", "frozen", "--json", "--top", "3")
    assert rc == 0
    assert "regime frozen" in err  # the header goes to stderr, stdout is pure JSON lines
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["input"] for r in records] == [str(p) for p in images]
    for r in records:
        assert (r["regime"], r["seed"], r["run"]) == ("frozen", 0, str(tiny_run))
        assert list(r["probs"]) == list(EMOTIONS)
        assert sum(r["probs"].values()) == pytest.approx(1.0, abs=1e-6)
        assert len(r["top"]) == 3 and r["top"][0]["emotion"] == r["prediction"] == max(r["probs"], key=r["probs"].get)
        assert [t["p"] for t in r["top"]] == sorted((t["p"] for t in r["top"]), reverse=True)
        existing = {"scene", *(f["slot"] for f in r["faces"])}
        assert set(r["posterior"]) == existing == set(r["sources"])
        assert sum(r["posterior"].values()) == pytest.approx(1.0, abs=1e-6)
        assert sum(r["trust"].values()) == pytest.approx(1.0, abs=1e-6)
        assert r["trusted"] == max(r["posterior"], key=r["posterior"].get)


def test_annotation_faces_give_the_generators_context(tiny_run, synth, capsys):
    picked = [(p, a) for p, a in synth if a["context"] != "n0"][:3]
    rc, out, _ = query(capsys, *(p for p, _ in picked), "--run", tiny_run, "--face-source", "annotations", "--json")
    assert rc == 0
    for line, (path, ann) in zip(out.splitlines(), picked):
        r = json.loads(line)
        assert r["context"] == ann["context"] != "n0"  # the generator uses the same context function
        assert [f["box"] for f in r["faces"]] == sorted(
            (list(map(float, b)) for b in ann["boxes"]), key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))[:3]
        assert "face1" in r["posterior"] and sum(r["posterior"].values()) == pytest.approx(1.0, abs=1e-6)


def test_annotations_refuse_an_image_outside_the_data_set(tiny_run, synth, tmp_path, capsys):
    from PIL import Image

    outside = tmp_path / "outside.png"
    Image.new("RGB", (64, 64), (200, 100, 50)).save(outside)
    good = with_faces(synth, 1)[0]
    rc, out, err = query(capsys, outside, good, "--run", tiny_run, "--face-source", "annotations")
    assert rc == 1
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and str(outside) in errors[0] and "synthetic data set" in errors[0]
    assert str(good) in out.splitlines()


def test_annotate_writes_readable_pngs(tiny_run, synth, tmp_path, capsys):
    from PIL import Image

    images = with_faces(synth, 2)
    out_dir = tmp_path / "annotated"
    rc, out, _ = query(capsys, *images, "--run", tiny_run, "--face-source", "annotations", "--annotate", out_dir,
                       "--json")
    assert rc == 0
    for line, image in zip(out.splitlines(), images):
        r = json.loads(line)
        png = Path(r["annotated"])
        assert png.parent == out_dir and png.suffix == ".png"
        with Image.open(image) as src, Image.open(png) as drawn:
            drawn.load()
            assert drawn.format == "PNG"
            scale = drawn.width // src.width
            assert scale >= 1 and drawn.size == (src.width * scale, src.height * scale)
            x1, y1, x2, y2 = (round(v * scale) for v in r["faces"][0]["box"])
            edge = [drawn.getpixel((x, y2)) for x in range(x1 + 2, x2 - 2)]  # bottom edge of face1's box
            assert edge.count(SLOT_COLOUR_FACE1) > len(edge) // 2


def test_each_bad_input_gets_one_line_and_the_rest_are_answered(tiny_run, synth, tmp_path, capsys):
    good = [p for p, _ in synth[:2]]
    missing = tmp_path / "missing.jpg"
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good[0].read_bytes()[:200])
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    bad = [missing, text, truncated, empty]
    argv = [good[0], *bad, good[1], "--run", tiny_run]

    rc, out, err = query(capsys, *argv)
    assert rc == 1
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == len(bad)
    for path, line in zip(bad, errors):
        assert str(path) in line
    assert "truncated" in errors[2] and "not an image" in errors[1]
    assert [line for line in out.splitlines() if not line.startswith(" ")][1:] == [str(p) for p in good]

    rc, out, _ = query(capsys, *argv, "--json")
    assert rc == 1
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["input"] for r in records] == [str(p) for p in [good[0], *bad, good[1]]]
    assert [("error" in r) for r in records] == [False, True, True, True, True, False]


def test_usage_errors_exit_2_with_one_line(tiny_run, synth, capsys):
    image = synth[0][0]
    rc, out, err = query(capsys, image, "--run", tiny_run, "--regime", "late_fusion")
    assert rc == 2 and "no program" in err and len(err.strip().splitlines()) == 1
    rc, out, err = query(capsys, image, "--run", tiny_run.parent / "no-such-run")
    assert rc == 2 and "not found" in err and len(err.strip().splitlines()) == 1
    rc, out, err = query(capsys, image, "--run", tiny_run, "--seed", "7")
    assert rc == 2 and "seed 7" in err


def test_library_api(tiny_run, synth):
    from experiments.query.program import TrainedProgram
    from experiments.query.results import QueryError, QueryResult

    tp = TrainedProgram.load(tiny_run, regime="uniform_rules")
    assert (tp.regime, tp.seed) == ("uniform_rules", 0) and "uniform_rules" in tp.describe()
    image, ann = next((p, a) for p, a in synth if len(a["boxes"]) == 1)
    result, error = tp.answer([image, image.parent / "nope.png"], face_source="annotations", top=7)
    assert isinstance(result, QueryResult) and isinstance(error, QueryError)
    assert error.input.endswith("nope.png") and "no such file" in error.error
    assert result.context == ann["context"] and set(result.source_probs) == {"scene", "face1"}
    assert len(result.top) == 7 and result.explanation().startswith(f"trusted {result.trusted} (")
    # the program's semantics, from the networks' own outputs and the learned trust:
    # P(e | img) = sum_s t(ctx, s) P_s(e) and P(s | img, e) = t(ctx, s) P_s(e) / P(e)
    t, own = result.trust, result.source_probs
    for e in EMOTIONS:
        assert result.probs[e] == pytest.approx(sum(t[s] * own[s][e] for s in own), rel=1e-5)
    e = result.prediction
    for s in own:
        assert result.posterior[s] == pytest.approx(t[s] * own[s][e] / result.probs[e], rel=1e-5)


def test_help_exits_0_and_ends_with_an_example(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["query", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out.rstrip()
    assert text.splitlines()[-2].strip() == "Example:"
    assert text.splitlines()[-1].strip().startswith("emologic query ")


def test_latest_run_answers_by_default_and_the_prior_on_request(tiny_run, synth, capsys):
    image = synth[0][0]
    rc, out, _ = query(capsys, image, "--runs-dir", tiny_run.parent)
    assert rc == 0 and out.startswith(f"run {tiny_run} | regime ")
    rc, out, _ = query(capsys, image, "--runs-dir", tiny_run.parent, "--prior")
    assert rc == 0 and out.startswith("no trained run (--prior): program context_selection")
    rc, out, err = query(capsys, image, "--runs-dir", tiny_run.parent, "--program", "source_selection")
    assert rc == 2 and "--program sets up the untrained program (--prior)" in err


def test_results_carry_the_provenance_of_their_sources(tiny_run, synth):
    from experiments.query.program import TrainedProgram
    from neural.provenance import provenance_of

    tp = TrainedProgram.load(tiny_run, regime="frozen")
    image = next(p for p, a in synth if len(a["boxes"]) == 2)
    (r,) = tp.answer([image], face_source="annotations")
    assert set(r.provenance) == set(r.source_probs) == {"scene", "face1", "face2"}
    head = provenance_of(tp.pred.scene_head)
    assert head.steps == ("trained in stage 0 on synthetic",) and not r.provenance["scene"]["pretrained"]
    assert r.provenance["scene"]["parts"]["scene2emotion"] == head.to_dict()
    assert r.provenance["scene"]["parts"]["scene backbone"]["description"] == "random init (seed 0)"
    face = provenance_of(tp.pred.face_net)
    assert face.origin == "fer2013" and face.steps == ("fine-tuned in stage 0 on synthetic",)
    assert r.provenance["face1"] == r.provenance["face2"] == {"pretrained": True, "parts": {"face_emotion": face.to_dict()}}
    assert r.says("scene").endswith("[no pretrained knowledge]") and "[" not in r.says("face1")
