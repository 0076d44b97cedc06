"""Grad-CAM / Grad-CAM++ panels of the face predicate (emologic explain-face)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from neural.face import FaceEmotionConfig, FaceEmotionNet
from neural.gradcam import GradCamError, explain, explain_files
from neural.registry import save_network


def _face_png(path, smile: bool):
    """A schematic face: bright disc, dark eyes, a mouth curved up or down."""
    yy, xx = np.mgrid[:64, :64]
    img = np.full((64, 64), 60, np.uint8)
    img[(yy - 32) ** 2 + (xx - 32) ** 2 < 26 ** 2] = 200
    for cx in (22, 42):
        img[(yy - 24) ** 2 + (xx - cx) ** 2 < 9] = 20
    curve = 44 + (1 if smile else -1) * ((xx - 32) / 12.0) ** 2 * 3
    img[(np.abs(yy - curve) < 1.5) & (np.abs(xx - 32) < 12)] = 20
    Image.fromarray(img, "L").save(path)
    return str(path)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return FaceEmotionNet(FaceEmotionConfig()).eval()


def test_panels_exist_and_heat_maps_are_not_constant(model, tmp_path):
    files = [_face_png(tmp_path / "a.png", True), _face_png(tmp_path / "b.png", False)]
    exps = explain_files(model, files, tmp_path / "cams", labels=[3, 4])
    assert [e.panel.name for e in exps] == ["a_cam.png", "b_cam.png"]
    for e in exps:
        assert e.gradcam.shape == e.gradcam_pp.shape == (64, 64)
        assert e.gradcam.std() > 1e-3 and e.gradcam_pp.std() > 1e-3
        assert 0.0 <= e.gradcam.min() and e.gradcam.max() <= 1.0
        panel = np.asarray(Image.open(e.panel).convert("RGB"), dtype=np.float32)
        assert panel.shape[0] > 100 and panel.std() > 10
    assert exps[0].true == 3 and exps[0].pred == int(np.argmax(exps[0].probs))


def test_explanations_target_the_predicted_class(model):
    x = torch.rand(3, 1, 64, 64) * 2 - 1
    exps = explain(model, x, ["x0", "x1", "x2"])
    with torch.no_grad():
        preds = model(x).argmax(1).tolist()
    assert [e.pred for e in exps] == preds


def test_cli_writes_panels_with_labels_from_folder_names(model, tmp_path, capsys):
    from experiments.cli import main

    save_network(model, tmp_path / "ckpt")
    (tmp_path / "val" / "happy").mkdir(parents=True)
    face = _face_png(tmp_path / "val" / "happy" / "f.png", True)
    assert main(["explain-face", str(tmp_path / "ckpt"), face, "--out", str(tmp_path / "out")]) == 0
    assert "true happy" in capsys.readouterr().out
    assert (tmp_path / "out" / "f_cam.png").is_file()
    assert main(["explain-face", str(tmp_path / "ckpt"), face, "--labels", "happy", "sad", "--out", str(tmp_path / "o")]) == 2
    assert "2 label(s) for 1 image(s)" in capsys.readouterr().err


def test_label_count_must_match(model, tmp_path):
    with pytest.raises(GradCamError):
        explain_files(model, [_face_png(tmp_path / "a.png", True)], tmp_path, labels=[1, 2])
