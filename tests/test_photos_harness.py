"""End to end on real photos: a ``--dataset csv`` table of scikit-image photos through
the whole harness (MTCNN faces, the FER2013 face predicate, stage 0, every regime)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from cache.loader import CachedSplit
from experiments.joint_vs_frozen import main
from neural.registry import load_network
from neural.common import EMOTIONS
from tests.photo_helpers import write_photo
from tests.run_helpers import numbers

#: (file, label, split): every split has photos with and without a face; the
#: astronaut's own photo is in test, variants of it (flipped, grayscale, half
#: size, cropped, 2048 px) elsewhere.
TABLE = [
    ("astronaut_flip.jpg", "happy", "pretrain"), ("camera.png", "neutral", "pretrain"),
    ("chelsea.jpg", "neutral", "pretrain"), ("rocket.jpg", "surprise", "pretrain"), ("moon.png", "sad", "pretrain"),
    ("astronaut_crop.jpg", "happy", "train"), ("astronaut_gray.png", "happy", "train"),
    ("astronaut_large.jpg", "Happy", "train"), ("camera_flip.png", "neutral", "train"),
    ("coffee.jpg", "neutral", "train"), ("motorcycle.jpg", "surprise", "train"), ("clock.png", "sad", "train"),
    ("astronaut_half.jpg", "happy", "val"), ("rocket_flip.jpg", "surprise", "val"), ("coins.png", "neutral", "val"),
    ("astronaut.jpg", "happy", "test"), ("chelsea_flip.jpg", "neutral", "test"), ("moon_flip.png", "sad", "test"),
]
#: rows the harness must leave out and say so: an image that is not there, a file that is not an image
BAD = [("gone.jpg", "happy", "train"), ("notes.jpg", "sad", "test")]


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    for name, _, _ in TABLE:
        write_photo(root / "img" / name, name.rsplit(".", 1)[0])
    (root / "img" / "notes.jpg").write_text("not a photo\n")
    rows = ["image_path,label,split"] + [f"img/{name},{label},{split}" for name, label, split in TABLE + BAD]
    (root / "table.csv").write_text("\n".join(rows) + "\n")
    argv = ["--dataset", "csv", "--csv", str(root / "table.csv"), "--seeds", "0", "--epochs", "1",
            "--head-epochs", "5", "--no-progress", "--runs-dir", str(root / "runs"), "--cache", str(root / "cache")]
    assert main(argv) == 0
    return root / "runs" / "latest", root / "cache"


def test_run_finishes_with_results_and_report(photo_run):
    run_dir, _ = photo_run
    results = json.loads((run_dir / "results.json").read_text())
    assert results["dataset"] == "csv" and results["n_test"] == 3
    assert set(results["regimes"]) == {"frozen", "joint", "uniform_rules", "late_fusion"}
    assert all(math.isfinite(x) for x in numbers(results["regimes"]))
    report = (run_dir / "report.md").read_text()
    assert "--dataset csv" in report and "| joint |" in report


def test_the_cache_holds_mtcnn_faces_of_the_photos(photo_run):
    _, cache = photo_run
    test = CachedSplit(cache, "test")
    assert test.manifests[0]["identity"]["face_detector"] == "mtcnn"
    batch = test.batch(["img/astronaut.jpg", "img/chelsea_flip.jpg", "img/moon_flip.png"])
    assert batch.n_faces.tolist()[0] >= 1 and batch.contexts()[0] != "n0"
    x1, y1, x2, y2 = batch.face_boxes[0, 0].tolist()  # her face, in the 512 px photo
    assert 150 < x1 < x2 < 300 and 30 < y1 < y2 < 200
    assert batch.n_faces.tolist()[1:] == [0, 0]  # a cat and the moon: no face invented
    # the 2048 px copy (searched downscaled) and the grayscale one find her face too
    train = CachedSplit(cache, "train").batch(["img/astronaut_large.jpg", "img/astronaut_gray.png"])
    assert train.n_faces.tolist() == [1, 1]
    x1, y1, x2, y2 = train.face_boxes[0, 0].tolist()
    assert 600 < x1 < x2 < 1200 and 120 < y1 < y2 < 800


def test_the_face_predicate_is_fer2013_and_still_reads_her_smile(photo_run):
    from neural.fer_weights import pretrained_face_net

    run_dir, cache = photo_run
    results = json.loads((run_dir / "results.json").read_text())
    for regime in ("frozen", "joint"):
        face = results["regimes"][regime]["per_seed"]["0"]["provenance"]["face1"]["parts"]["face_emotion"]
        assert face["origin"] == "fer2013" and face["pretrained"], regime
    fer = pretrained_face_net().state_dict()
    frozen = load_network(run_dir / "checkpoints/seed0/frozen/networks/face_emotion").state_dict()
    assert all(torch.equal(frozen[k], fer[k]) for k in fer)  # no per-face labels: FER2013 as it is
    crop = CachedSplit(cache, "test").batch(["img/astronaut.jpg"]).tensors["face1"]  # [1, 1, 64, 64]
    for regime in ("frozen", "joint", "uniform_rules"):
        net = load_network(run_dir / f"checkpoints/seed0/{regime}/networks/face_emotion").eval()
        with torch.no_grad():
            probs = net(crop)[0]
        assert EMOTIONS[int(probs.argmax())] == "happy" and probs.max() > 0.5, regime


def test_left_out_rows_are_counted_and_listed(photo_run):
    run_dir, _ = photo_run
    results = json.loads((run_dir / "results.json").read_text())
    skipped = dict(map(tuple, results["skipped"]["images"]))
    assert set(skipped) == {"img/gone.jpg", "img/notes.jpg"}
    assert skipped["img/gone.jpg"].startswith("image missing") and "not an image" in skipped["img/notes.jpg"]
    assert results["skipped"]["n"] == 2
    report = (run_dir / "report.md").read_text()
    assert "## Left out (2 images)" in report and "`img/notes.jpg`" in report


def test_explain_face_reads_the_runs_face_predicate_on_the_photo(photo_run, tmp_path, capsys):
    from experiments.cli import main as emologic

    run_dir, _ = photo_run
    photo = run_dir.parent.parent / "img" / "astronaut.jpg"
    net = run_dir / "checkpoints/seed0/joint/networks/face_emotion"
    assert emologic(["explain-face", str(net), str(photo), "--detect", "--out", str(tmp_path), "--json"]) == 0
    (face,) = json.loads(capsys.readouterr().out)
    assert face["predicted"] == face["explained_class"] == "happy"
    # well above the face box's share of the crop (0.55): the heat is on her face
    assert face["heat_in_face_box"]["gradcam"] > 0.75, face["heat_in_face_box"]
