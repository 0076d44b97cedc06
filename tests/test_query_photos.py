"""``emologic query`` on real photos with the untrained program (no run needed),
and on every kind of awkward input derived from them: EXIF rotation, colour
modes, faces too small, more than three faces, no face, decompression bombs."""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from experiments.cli import main
from experiments.query.program import TrainedProgram
from experiments.query.results import QueryError, QueryResult
from neural.common import EMOTIONS

ASTRONAUT_HEAD = (150, 30, 300, 210)  # around the face MTCNN finds at about (181, 62)-(268, 172)


@pytest.fixture(scope="module", params=["torch", "onnx"])
def prior(request):
    """The untrained program, answered by torch and by its served copy (every test below runs on both)."""
    from experiments.query.open_program import open_program

    return open_program(prior=True, runtime=request.param)


@pytest.fixture(scope="module")
def astronaut_answer(prior, real_photos):
    (r,) = prior.answer([real_photos["astronaut"]])
    return r


def query(capsys, *argv):
    rc = main(["query", *map(str, argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def astronaut_image(real_photos) -> Image.Image:
    with Image.open(real_photos["astronaut"]) as im:
        return im.convert("RGB")


# --------------------------------------------------------------------------- the untrained program

def test_prior_answers_the_astronaut_with_fer2013_in_proportion_to_its_trust(astronaut_answer):
    r = astronaut_answer
    assert [f.slot for f in r.faces] == ["face1"] and r.faces_found == 1
    assert r.context in ("n1_small", "n1_large")
    face, scene = r.source_probs["face1"], r.source_probs["scene"]
    assert max(face, key=face.get) == "happy" and face["happy"] > 0.99  # FER2013 on the MTCNN crop
    assert scene == pytest.approx({e: 1 / len(EMOTIONS) for e in EMOTIONS}, abs=1e-7)  # no scene knowledge
    assert r.trust == pytest.approx({"scene": 0.5, "face1": 0.5})  # context_selection.pl's t(0.5) values
    assert r.prediction == "happy" and r.decided
    # P(e) = sum_s t(s) P_s(e): the uniform scene adds the same to every emotion
    for e in EMOTIONS:
        assert r.probs[e] == pytest.approx(0.5 / len(EMOTIONS) + 0.5 * face[e], abs=1e-6)
    assert r.trusted == "face1" and r.posterior["face1"] == pytest.approx(0.5 * face["happy"] / r.probs["happy"])
    face_net = r.provenance["face1"]["parts"]["face_emotion"]
    assert r.provenance["face1"]["pretrained"] and face_net["origin"] == "fer2013" and not face_net["steps"]
    scene = r.provenance["scene"]
    assert not scene["pretrained"] and not r.knows("scene") and r.knows("face1")
    assert scene["parts"]["scene backbone"]["description"] == "random init (seed 0)"  # said as it is
    assert "no scene knowledge" in scene["parts"]["scene2emotion"]["description"]
    assert r.says("scene") == "nothing (uniform) [no pretrained knowledge]"


def test_without_runs_the_cli_uses_the_prior_and_says_so(real_photos, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no runs/ here
    rc, out, err = query(capsys, real_photos["astronaut"])
    assert rc == 0
    header = out.splitlines()[0]
    assert header.startswith("no trained run (no runs/latest): program context_selection with its documented "
                             "prior trust; face predicate FER2013 mini-XCEPTION")
    assert "scene: no scene knowledge (uniform)" in header
    assert "  answer   happy: trusted face1 (" in out
    assert "  sources  scene says nothing (uniform) [no pretrained knowledge]; face1 says happy (1.00)" in out
    assert "  knowledge scene: NO PRETRAINED KNOWLEDGE (scene backbone: random init (seed 0)" in out
    assert "  knowledge face1, face2, face3: face_emotion: FER2013 mini-XCEPTION" in out
    assert "SceneBackbone" not in err  # the header already says the scene knows nothing

    rc, out, err = query(capsys, real_photos["astronaut"], "--prior", "--json")
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and "no trained run (--prior)" in err
    assert record["prediction"] == "happy" and (record["run"], record["regime"], record["seed"]) == (None, None, None)
    assert record["sources"]["scene"]["emotion"] is None and record["sources"]["face1"]["emotion"] == "happy"
    model = record["model"]
    assert model["kind"] == "prior" and model["program"] == "context_selection"
    assert model["trust"] == "the program's documented t(p) values"
    assert model["sources"]["face1"]["parts"]["face_emotion"]["origin"] == "fer2013"
    assert not model["sources"]["scene"]["pretrained"]
    assert record["pretrained_knowledge"] == {"scene": False, "face1": True}


def test_prior_options_are_checked_by_name(real_photos, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image = real_photos["astronaut"]
    not_weights = tmp_path / "notes.pth"
    not_weights.write_text("not a checkpoint")
    for argv, words in (
        (["--prior", "--run", "somerun"], "give one of them"),
        (["--regime", "joint"], "--regime chooses within a trained run, and none is used (no runs/latest)"),
        (["--prior", "--program", "va_selection"], "va_valence, va_arousal, which only a trained run has"),
        (["--prior", "--program", "clip_sentiment"], "is a clip program"),
        (["--prior", "--program", "nope"], "nope"),
        (["--run", "somerun", "--scene-weights", "w.pth"], "--scene-weights sets up the untrained program"),
        (["--prior", "--face-source", "annotations"], "untrained program finds faces with MTCNN"),
        (["--prior", "--max-pixels", "0"], "--max-pixels must be positive"),
        (["--prior", "--scene-weights", "no-such.pth"], "scene weights file not found: no-such.pth"),
        (["--prior", "--scene-weights", not_weights], "not a loadable torch checkpoint"),
    ):
        rc, out, err = query(capsys, image, *argv)
        assert rc == 2 and words in err and len(err.strip().splitlines()) <= 2, (argv, err)


def test_scene_weights_make_a_real_backbone_but_the_untrained_head_stays_uniform(real_photos, tmp_path):
    import torch

    from neural.registry import get_network

    backbone = get_network("scene_backbone", seed=3)  # stands in for a Places365 checkpoint, in its format
    state = {f"module.{k}": v for k, v in backbone.state_dict().items()}
    state |= {"module.fc.weight": torch.zeros(365, 512), "module.fc.bias": torch.zeros(365)}
    weights = tmp_path / "resnet18_places365.pth.tar"
    torch.save({"state_dict": state}, weights)
    tp = TrainedProgram.prior(scene_weights=str(weights))
    (r,) = tp.answer([real_photos["astronaut"]])
    assert "over a backbone from " + str(weights) in tp.describe()
    backbone = r.provenance["scene"]["parts"]["scene backbone"]
    assert backbone["origin"] == "places365" and backbone["description"] == "Places365 ResNet-18 (resnet18_places365.pth.tar)"
    assert r.source_probs["scene"] == pytest.approx({e: 1 / len(EMOTIONS) for e in EMOTIONS}, abs=1e-7)
    assert r.prediction == "happy"


def test_another_image_program_answers_with_its_own_prior(real_photos, tmp_path):
    (r,) = TrainedProgram.prior("source_selection").answer([real_photos["astronaut"]])
    assert r.prediction == "happy" and set(r.source_probs) == {"scene", "face1"}
    assert r.trust == pytest.approx({"scene": 0.5, "face1": 0.5})  # choose/1 renormalised over existing sources
    # a program file of one's own, whose documented trust is not uniform: its t(p) values are used
    from logic.program import PROGRAM_DIR

    text = (PROGRAM_DIR / "context_selection.pl").read_text()
    for ctx in ("n1_small", "n1_large"):
        text = text.replace(f"t(0.5)::trust({ctx}, scene); t(0.5)::trust({ctx}, face1)",
                            f"t(0.1)::trust({ctx}, scene); t(0.9)::trust({ctx}, face1)")
    own = tmp_path / "face_first.pl"
    own.write_text(text)
    (r,) = TrainedProgram.prior(str(own)).answer([real_photos["astronaut"]])
    assert r.trust == pytest.approx({"scene": 0.1, "face1": 0.9})
    assert r.probs["happy"] == pytest.approx(0.1 / len(EMOTIONS) + 0.9 * r.source_probs["face1"]["happy"])


# --------------------------------------------------------------------------- photos as they come

def test_cat_has_no_face_so_the_scene_alone_answers_and_prefers_nothing(prior, real_photos, capsys, tmp_path,
                                                                     monkeypatch):
    (r,) = prior.answer([real_photos["cat"]])
    assert r.faces == [] and r.context == "n0" and r.posterior == {"scene": 1.0}
    assert not r.decided and r.to_dict()["prediction"] is None
    monkeypatch.chdir(tmp_path)
    rc, out, _ = query(capsys, real_photos["cat"], "--prior")
    assert "faces    none found (the detector finds faces of at least 20 px): the scene alone answers" in out
    assert "emotion  none preferred: every emotion 0.14 (uniform)" in out
    assert "answer   no emotion preferred: trusted scene (100%)" in out


def test_grayscale_camera_is_answered(prior, real_photos):
    with Image.open(real_photos["camera"]) as im:
        assert im.mode == "L"
    (r,) = prior.answer([real_photos["camera"]])
    assert isinstance(r, QueryResult) and r.image_size == (512, 512)
    assert len(r.faces) >= 1 and r.context.startswith(f"n{len(r.faces)}_")  # the cameraman's face


def test_exif_rotated_jpeg_is_answered_upright(prior, real_photos, astronaut_answer, tmp_path):
    upright = astronaut_image(real_photos).crop((0, 0, 512, 400))  # not square: the orientation shows
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a sideways camera writes, 400 x 512
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "sideways.jpg"
    stored.save(path, exif=exif.tobytes(), quality=95)
    (r,) = prior.answer([path], annotate=tmp_path / "out")
    assert r.image_size == (512, 400)
    assert len(r.faces) == 1 and iou(r.faces[0].box, astronaut_answer.faces[0].box) > 0.8  # where the face is upright
    assert r.prediction == "happy"
    with Image.open(r.annotated) as drawn:
        scale = drawn.width // 512
        assert drawn.size == (512 * scale, 400 * scale)
        x1, y1, x2, y2 = (int(v * scale) for v in r.faces[0].box)
        band = np.asarray(drawn.convert("RGB"))[y2 - 3:y2 + 2, x1 + 4:x2 - 4]  # around the box's bottom edge
        assert (band == (255, 140, 0)).all(-1).any(0).mean() > 0.9  # face1's box, drawn on the upright picture


def _modes(real_photos, tmp_path) -> dict[str, Path]:
    rgb = astronaut_image(real_photos)
    gray16 = np.asarray(rgb.convert("L")).astype(np.uint16) * 257
    rgba = rgb.convert("RGBA")
    alpha = np.full((512, 512), 255, np.uint8)
    alpha[400:, :200] = 0  # a transparent corner, away from the face
    rgba.putalpha(Image.fromarray(alpha))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    made = {
        "CMYK": (rgb.convert("CMYK"), "jpg", {}),
        "I;16": (Image.fromarray(gray16), "png", {}),
        "I": (Image.fromarray(gray16.astype(np.int32)), "tif", {}),
        "P": (palette, "png", {}),
        "P+transparency": (palette, "png", {"transparency": int(np.asarray(palette)[511, 0])}),
        "RGBA": (rgba, "png", {}),
    }
    paths = {}
    for name, (im, ext, kw) in made.items():
        path = tmp_path / f"astronaut-{name.replace(';', '').replace('+', '-')}.{ext}"
        im.save(path, **kw)
        with Image.open(path) as back:
            assert back.mode == name.split("+")[0] and ("transparency" in back.info) == ("transparency" in kw)
        paths[name] = path
    return paths


def test_every_colour_mode_is_answered_like_the_original(prior, real_photos, astronaut_answer, tmp_path):
    paths = _modes(real_photos, tmp_path)
    results = prior.answer(list(paths.values()))
    for (name, path), r in zip(paths.items(), results):
        assert isinstance(r, QueryResult), (name, r)
        assert r.image_size == (512, 512) and len(r.faces) == 1, name
        assert iou(r.faces[0].box, astronaut_answer.faces[0].box) > 0.8, name
        assert r.prediction == "happy", name


def test_a_face_below_the_detectors_minimum_leaves_the_scene_alone(prior, real_photos, tmp_path):
    small = tmp_path / "small.png"
    astronaut_image(real_photos).resize((64, 64), Image.Resampling.LANCZOS).save(small)  # the face: ~12 px
    (r,) = prior.answer([small])
    assert r.faces == [] and r.faces_found == 0 and r.context == "n0" and set(r.source_probs) == {"scene"}


def test_more_than_three_faces_keeps_the_three_largest_and_says_how_many(prior, real_photos, tmp_path, capsys,
                                                                         monkeypatch):
    head = astronaut_image(real_photos).crop(ASTRONAUT_HEAD)
    canvas = Image.new("RGB", (1000, 260), (128, 128, 128))
    pasted, x = [], 10
    for w in (110, 170, 90, 150, 130):  # not in size order: the selection must sort
        h = int(w * 1.2)
        canvas.paste(head.resize((w, h)), (x, 250 - h))
        pasted.append((w, (x, 250 - h, x + w, 250)))
        x += w + 30
    path = tmp_path / "five.png"
    canvas.save(path)
    (r,) = prior.answer([path])
    assert r.faces_found == 5 and [f.slot for f in r.faces] == ["face1", "face2", "face3"]
    assert r.context == "n3_small" and r.prediction == "happy"
    largest = [box for _, box in sorted(pasted, reverse=True)[:3]]
    for face, region in zip(r.faces, largest):  # each kept face lies in one of the three largest pastes
        assert region[0] <= face.box[0] and face.box[2] <= region[2], (face.box, region)
    assert [f.size for f in r.faces] == sorted((f.size for f in r.faces), reverse=True)
    monkeypatch.chdir(tmp_path)
    rc, out, _ = query(capsys, path, "--prior")
    assert "  faces    5 found, the 3 largest used: face1 (" in out


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that claims ``width`` x ``height`` pixels and holds almost nothing."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_bad_inputs_get_one_line_each_and_the_rest_are_answered(real_photos, tmp_path, capsys, monkeypatch):
    bomb = _png_header(tmp_path / "bomb.png", 30_000, 30_000)  # 900 Mpx: PIL's own guard
    big = _png_header(tmp_path / "big.png", 8_000, 6_000)  # 48 Mpx: our limit, before decoding
    out_of_range = tmp_path / "int32.tif"
    Image.fromarray(np.full((64, 64), 100_000, np.int32)).save(out_of_range)
    good = [real_photos["astronaut"], real_photos["cat"]]
    monkeypatch.chdir(tmp_path)
    rc, out, err = query(capsys, good[0], bomb, big, out_of_range, good[1], "--prior")
    assert rc == 1
    errors = [line for line in err.splitlines() if line.startswith("emologic query: error:")]
    assert len(errors) == 3
    assert str(bomb) in errors[0] and "decompression bomb" in errors[0]
    assert str(big) in errors[1] and "8000x6000 = 48,000,000 pixels, above the limit of 40,000,000" in errors[1]
    assert "--max-pixels" in errors[1]
    assert str(out_of_range) in errors[2] and "outside the 16-bit range" in errors[2]
    assert [line for line in out.splitlines() if not line.startswith(" ")][1:] == [str(p) for p in good]

    rc, out, err = query(capsys, good[0], good[1], "--prior", "--max-pixels", "200000")  # a lower limit
    assert rc == 1 and str(good[0]) in err and "above the limit of 200,000" in err
    assert str(good[1]) in out  # the cat is 451 x 300 = 135,300 pixels


def test_an_image_that_breaks_a_library_loses_only_itself(prior, real_photos, tmp_path, monkeypatch):
    odd = tmp_path / "odd.png"
    Image.new("RGB", (77, 77), (10, 200, 30)).save(odd)
    detector = prior.pipeline("mtcnn").detector
    real_detect = detector.detect

    def fragile(images, samples=None):  # a detector bug that only this image size triggers
        if any(im.size == (77, 77) for im in images):
            raise RuntimeError("odd size")
        return real_detect(images, samples)

    monkeypatch.setattr(detector, "detect", fragile)
    good, bad, cat = prior.answer([real_photos["astronaut"], odd, real_photos["cat"]])
    assert isinstance(good, QueryResult) and good.prediction == "happy" and isinstance(cat, QueryResult)
    assert isinstance(bad, QueryError) and bad.error == "could not be processed (RuntimeError: odd size)"


# --------------------------------------------------------------------------- the benchmark

def test_bench_query_times_a_fresh_process_and_a_folder(real_photos, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut", "cat"):
        (folder / real_photos[name].name).write_bytes(real_photos[name].read_bytes())
    assert main(["bench", "query", "--images", str(folder), "--cold-runs", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["query"]
    cold, batch = result["first_answer_cold"], result["folder"]
    assert cold["photo"] == "astronaut.jpg" and cold["runs"] == 1 and 0 < cold["min_s"] == cold["max_s"] < 120
    assert batch["images"] == batch["answered"] == 2 and batch["images_per_s"] > 0 and batch["images_per_cpu_s"] > 0
    assert cold["cpu_median_s"] > 0
    assert batch["model"].startswith("no trained run (--prior)")


def test_bench_default_folder_mixes_photos_and_synthetic_images(tmp_path):
    from experiments.query.bench import SKIMAGE_PHOTOS, write_default_images

    images = write_default_images(tmp_path, n_images=12)
    assert len(images) == len(set(images)) == 12
    names = [p.name for p in images]
    assert all(any(photo in n for n in names) for photo in SKIMAGE_PHOTOS) and any("syn" in n for n in names)
    for p in images:
        with Image.open(p) as im:
            im.load()
