"""The synthetic faces are readable by the real FER2013 recogniser, unchanged.

``experiments/harness/face_zero_shot.py`` (per-class recall of FER2013 on a split's
faces) and ``emologic bench faces``. The faces are rendered through the real
path: ``render_image`` -> PNG -> ``crop_faces`` -> FER2013.
"""
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from experiments.cli import main
from experiments.harness.face_zero_shot import format_recall, predict_faces, recall_report
from neural.fer_weights import pretrained_face_net
from neural.common import EMOTIONS
from pipelines.datasets.synthetic import _draw_latent, render_image
from pipelines.datasets.synthetic_config import SyntheticConfig
from pipelines.faces import crop_faces

N_FACES = 140  # 20 per emotion


@pytest.fixture(scope="module")
def fer():
    return pretrained_face_net()


def _face_crops(split: str, n_faces: int = N_FACES, seed: int = 0):
    """Crops [F, 1, 64, 64] in [-1, 1] and labels [F] of freshly generated faces in ``split``'s style.

    The latent images (scenes, boxes, sizes) are the generator's own; only the
    expressions are assigned in turn, so every emotion gets the same number of faces.
    """
    cfg = SyntheticConfig(n_images=1000, seed=seed)
    crops, labels, index = [], [], 0
    while len(labels) < n_faces:
        lat = _draw_latent(index, cfg)
        lat["face_emotions"] = [EMOTIONS[(len(labels) + j) % len(EMOTIONS)] for j in range(len(lat["boxes"]))]
        if lat["boxes"]:
            img = Image.open(io.BytesIO(render_image(lat, index, split, cfg))).convert("RGB")
            crops.append(crop_faces(img, np.asarray(lat["boxes"], dtype=float)))
            labels += [EMOTIONS.index(e) for e in lat["face_emotions"]]
        index += 1
    x = torch.from_numpy(np.concatenate(crops)).float().div(127.5).sub(1.0).unsqueeze(1)
    return x, np.asarray(labels)


@pytest.fixture(scope="module")
def standard(fer):
    crops, labels = _face_crops("test")
    return recall_report(predict_faces(crops, fer).numpy(), labels)


def test_fer2013_reads_the_standard_faces(standard):
    # measured 0.71-0.79 over seeds at 84 faces; the old schematic faces gave 0.20-0.26
    assert standard["n_faces"] >= N_FACES and min(standard["counts"].values()) >= N_FACES // 7
    assert standard["macro_recall"] >= 0.6, standard
    # no emotion is left unreadable (disgust is the hardest for FER2013)
    assert all(r >= 0.2 for r in standard["per_class_recall"].values()), standard["per_class_recall"]


def test_pretrain_faces_are_shifted_but_readable(fer, standard):
    crops, labels = _face_crops("pretrain")  # same latent faces, the pretrain split's style
    shifted = recall_report(predict_faces(crops, fer).numpy(), labels)
    assert shifted["counts"] == standard["counts"]
    # read noticeably worse (stage 0's fine-tuning has something to learn) but far above chance (1/7)
    assert shifted["macro_recall"] <= standard["macro_recall"] - 0.08, (shifted, standard)
    assert shifted["macro_recall"] >= 0.4, shifted


def test_recall_report_per_class_macro_and_missing_classes():
    probs = np.eye(7)[[0, 0, 1, 3, 3, 3]]  # predicted: angry, angry, disgust, happy x3
    labels = [0, 1, 1, 3, 3, 0]  # no fear, sad, surprise or neutral face
    r = recall_report(probs, labels)
    assert r["per_class_recall"] == {"angry": 0.5, "disgust": 0.5, "fear": None, "happy": 1.0, "sad": None,
                                     "surprise": None, "neutral": None}
    assert r["macro_recall"] == pytest.approx(2 / 3) and r["accuracy"] == pytest.approx(4 / 6)
    assert r["n_faces"] == 6 and r["counts"]["happy"] == 2 and r["counts"]["fear"] == 0
    empty = recall_report(np.zeros((0, 7)), [])
    assert empty["n_faces"] == 0 and empty["macro_recall"] is None and empty["accuracy"] is None
    table = format_recall(r)
    assert "happy" in table and "1.000" in table and "macro" in table and "0.667" in table


def test_bench_faces_json_and_table(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the data set and cache land under data/ and .emologic/ here
    assert main(["bench", "faces", "--n-images", "40", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["faces"]  # stdout is pure JSON
    root = tmp_path / out["dataset"]
    records = [json.loads(line) for line in (root / "annotations.jsonl").read_text().splitlines()]
    test_faces = [e for r in records if r["split"] == "test" for e in r["face_emotions"]]
    assert out["split"] == "test" and out["n_faces"] == len(test_faces) > 0
    assert out["counts"] == {e: test_faces.count(e) for e in EMOTIONS}
    assert set(out["per_class_recall"]) == set(EMOTIONS)
    for e, r in out["per_class_recall"].items():
        assert (r is None) == (out["counts"][e] == 0)
    present = [r for r in out["per_class_recall"].values() if r is not None]
    assert out["macro_recall"] == pytest.approx(np.mean(present))

    # the cached set is reused; the text table names every emotion
    assert main(["bench", "faces", "--n-images", "40", "--split", "pretrain"]) == 0
    text = capsys.readouterr().out
    assert "pretrain faces" in text and all(e in text for e in EMOTIONS) and "macro" in text


def test_bench_faces_too_few_images_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "faces", "--n-images", "2", "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no samples in split" in err
