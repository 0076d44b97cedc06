"""MTCNN without torch: the ONNX export cache, the numpy mirror of facenet's detect_face,
and MTCNNFaces(runtime="onnx") finding the same faces as runtime "torch"."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import neural.mtcnn_onnx as mo
from neural.common import UserError
from pipelines import mtcnn_onnx as po
from pipelines.faces import MTCNNFaces, detector_from_config
from pipelines.images import load_image

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("torch", "torchvision", "facenet_pytorch")


@pytest.fixture(scope="module")
def onnx_dir():
    return mo.mtcnn_onnx_dir()  # exported once per cache (a few seconds), reused afterwards


@pytest.fixture(scope="module")
def runtimes(onnx_dir):
    """(torch, onnx) MTCNNFaces of equal settings, built once per keyword set."""
    built: dict = {}

    def get(**kw):
        key = tuple(sorted(kw.items()))
        if key not in built:
            built[key] = (MTCNNFaces(runtime="torch", **kw), MTCNNFaces(runtime="onnx", **kw))
        return built[key]

    return get


def _record(detector) -> list:
    """Wrap ``detector.mtcnn.detect`` to record each batch: its image sizes, its raw (boxes, probs)."""
    seen: list = []
    inner = detector.mtcnn.detect

    def detect(images):
        out = inner(images)
        seen.append(([im.size for im in images], out))
        return out

    detector.mtcnn.detect = detect
    return seen


def same_faces(runtimes, images, **kw):
    """Detect ``images`` with both runtimes; assert the raw detections (every box facenet
    returns, before MTCNNFaces' thresholds) and the final faces agree; return the faces."""
    torch_det, onnx_det = runtimes(**kw)
    raw_t, raw_o = _record(torch_det), _record(onnx_det)
    try:
        want, got = torch_det.detect(images), onnx_det.detect(images)
    finally:
        del torch_det.mtcnn.detect, onnx_det.mtcnn.detect  # back to the class's method
    assert [n for n, _ in raw_o] == [n for n, _ in raw_t]  # the same batches
    for (_, (tb, tp)), (_, (ob, op)) in zip(raw_t, raw_o):
        for boxes_t, probs_t, boxes_o, probs_o in zip(tb, tp, ob, op):
            assert (boxes_t is None) == (boxes_o is None)
            if boxes_t is not None:  # facenet's are object arrays (np.array(..., dtype=object))
                boxes_t = np.asarray(boxes_t, np.float32)
                assert boxes_o.dtype == np.float32 and boxes_o.shape == boxes_t.shape
                np.testing.assert_allclose(boxes_o, boxes_t, atol=0.05, rtol=0)
                np.testing.assert_allclose(probs_o, np.asarray(probs_t, np.float32), atol=1e-4, rtol=0)
    for w, g in zip(want, got):
        assert len(g) == len(w) and g.n_found == w.n_found
        np.testing.assert_allclose(g.boxes, w.boxes, atol=0.05, rtol=0)
        np.testing.assert_allclose(g.probs, w.probs, atol=1e-4, rtol=0)
    return got


@pytest.fixture(scope="module")
def astronaut(real_photos):
    return load_image(real_photos["astronaut"])


def _collage(astronaut, real_photos, size=(900, 700)) -> Image.Image:
    """The astronaut's face at three sizes and the camera man on a gray canvas."""
    face = astronaut.crop((150, 30, 300, 210))
    canvas = Image.new("RGB", size, (128, 128, 128))
    canvas.paste(face.resize((250, 300)), (20, 20))
    canvas.paste(face.resize((100, 120)), (400, 50))
    canvas.paste(face.resize((45, 54)), (620, 300))
    canvas.paste(load_image(real_photos["camera"]).resize((300, 300)), (380, 380))
    return canvas


# --------------------------------------------------------------------------- same faces as facenet-pytorch

@pytest.mark.parametrize("name, n_faces", [("astronaut", 1), ("camera", 1), ("cat", 0)])
def test_real_photos(runtimes, real_photos, name, n_faces):
    (faces,) = same_faces(runtimes, [load_image(real_photos[name])])  # camera: grayscale PNG -> RGB
    assert len(faces) == n_faces


@pytest.mark.parametrize("name", ["coffee", "rocket"])
def test_scikit_image_photos(runtimes, name):
    from skimage import data

    same_faces(runtimes, [Image.fromarray(getattr(data, name)())])


def test_collage_of_faces_of_different_sizes(runtimes, astronaut, real_photos):
    (faces,) = same_faces(runtimes, [_collage(astronaut, real_photos)])
    assert len(faces) == 3 and faces.n_found == 4  # all four faces; the three largest kept


@pytest.mark.parametrize("region", [(190, 70, 450, 330), (0, 0, 262, 168)])  # face cut top-left, bottom-right
def test_faces_cut_by_the_border(runtimes, astronaut, region):
    # boxes reach past the image: facenet's pad clamps them (x, y >= 1, ex <= w, ey <= h) before cropping
    (faces,) = same_faces(runtimes, [astronaut.crop(region)], prob_threshold=0.0)
    assert len(faces) >= 1


def test_low_thresholds_many_candidates(runtimes, astronaut, real_photos, monkeypatch):
    # thousands of first-stage boxes: torchvision's per-image NMS branch (> 1000 boxes) runs too
    sizes = []
    inner = po.batched_nms
    monkeypatch.setattr(po, "batched_nms", lambda boxes, *a: (sizes.append(len(boxes)), inner(boxes, *a))[1])
    (faces,) = same_faces(runtimes, [_collage(astronaut, real_photos)], thresholds=(0.05, 0.3, 0.5),
                          prob_threshold=0.0, max_faces=10)
    assert faces.n_found >= 4 and max(sizes) > 1000


def test_batch_of_equal_size_images_in_one_call(runtimes, astronaut, real_photos):
    images = [astronaut, load_image(real_photos["camera"]), astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
              Image.new("RGB", astronaut.size, (128, 128, 128))]
    torch_det, onnx_det = runtimes()
    seen = _record(onnx_det)
    found = onnx_det.detect(images)
    del onnx_det.mtcnn.detect
    assert [len(sizes) for sizes, _ in seen] == [4]  # one batch of four
    assert [len(f) for f in found] == [1, 1, 1, 0]
    same_faces(runtimes, images)


def test_image_smaller_than_min_face_size(runtimes, onnx_dir):
    (faces,) = same_faces(runtimes, [Image.new("RGB", (15, 30))])
    assert len(faces) == 0
    # OnnxMTCNN itself answers an empty pyramid with no face (facenet's detect_face raises there)
    assert po.OnnxMTCNN(model_dir=onnx_dir).detect([Image.new("RGB", (19, 40))]) == ([None], [None])


def test_photo_larger_than_max_side_is_searched_downscaled(runtimes, astronaut, real_photos):
    photo = _collage(astronaut, real_photos).resize((1600, 1244), Image.Resampling.BICUBIC)
    torch_det, onnx_det = runtimes()
    seen = _record(onnx_det)
    onnx_det.detect([photo])
    del onnx_det.mtcnn.detect
    assert [sizes for sizes, _ in seen] == [[(1280, 995)]]  # searched at max_side
    (faces,) = same_faces(runtimes, [photo])
    assert len(faces) == 3 and faces.boxes[0, 2] - faces.boxes[0, 0] > 220  # in the photo's pixels (~150 at 900 px)


# --------------------------------------------------------------------------- facenet's helpers in numpy

@pytest.mark.parametrize("shape, size", [
    ((2, 3, 37, 53), (13, 19)), ((1, 3, 13, 11), (24, 24)), ((3, 1, 101, 77), (48, 31)),
    ((1, 3, 7, 5), (48, 48)), ((2, 3, 1, 1), (5, 3)), ((1, 2, 64, 64), (64, 64)),
    ((1, 3, 1001, 2), (3, 1)), ((1, 3, 481, 641), (289, 385)),  # wide rows: the row-by-row running sums
])
def test_imresample_is_torch_area_interpolation(shape, size):
    from torch.nn.functional import interpolate

    rng = np.random.default_rng(sum(shape))
    pixels = rng.integers(0, 256, shape).astype(np.uint8)
    want = interpolate(torch.from_numpy(pixels.astype(np.float32)), size=size, mode="area").numpy()
    got = po.imresample(pixels, size)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.array_equal(got, want)  # bit-identical on pixels, as the detector feeds it
    values = (rng.standard_normal(shape) * 50).astype(np.float32)
    want = interpolate(torch.from_numpy(values), size=size, mode="area").numpy()
    np.testing.assert_allclose(po.imresample(values, size), want, atol=1e-4, rtol=1e-5)


def test_crops_resample_like_their_slices():
    """RNet/ONet crops come from the integral image of the whole batch: equal to resampling the slice."""
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (2, 3, 60, 70)).astype(np.uint8)
    regions = [(0, 5, 7, 40, 33), (1, 0, 0, 60, 70), (1, 59, 69, 1, 1), (0, 10, 3, 9, 50)]  # image, top, left, h, w
    got = po.area_resample(po.integral_image(pixels), *map(np.array, zip(*regions)), (24, 24))
    for crop, (i, top, left, h, w) in zip(got, regions):
        assert np.array_equal(crop, po.imresample(pixels[i : i + 1, :, top : top + h, left : left + w], (24, 24))[0])


def _random_boxes(rng, n, n_images, ties):
    xy = rng.uniform(0, 200, (n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(4, 60, (n, 2))], 1).astype(np.float32)
    scores = (rng.choice([0.7, 0.8, 0.9, 1.0], n) if ties else rng.uniform(0.6, 1.0, n)).astype(np.float32)
    return boxes, scores, rng.integers(0, n_images, n)


@pytest.mark.parametrize("n, ties", [(300, True), (2500, False)])  # offset trick; per image (> 1000 boxes)
def test_batched_nms_is_torchvisions(n, ties):
    from torchvision.ops import batched_nms

    boxes, scores, idxs = _random_boxes(np.random.default_rng(n), n, 3, ties)
    for threshold in (0.5, 0.7):
        want = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(idxs), threshold)
        assert np.array_equal(po.batched_nms(boxes, scores, idxs, threshold), want.numpy())


def test_min_nms_is_facenets():
    from facenet_pytorch.models.utils.detect_face import batched_nms_numpy

    boxes, scores, idxs = _random_boxes(np.random.default_rng(7), 400, 2, ties=False)
    want = batched_nms_numpy(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(idxs), 0.7, "Min")
    assert np.array_equal(po.batched_nms_min(boxes, scores, idxs, 0.7), want.numpy())


# --------------------------------------------------------------------------- no torch on the query path

def test_onnx_runtime_imports_no_torch(onnx_dir, real_photos):
    code = (
        "import sys\n"
        "import pipelines.mtcnn_onnx\n"
        "from neural.mtcnn_onnx import mtcnn_onnx_ready\n"
        "from pipelines.faces import MTCNNFaces\n"
        "from pipelines.images import load_image\n"
        f"faces = MTCNNFaces(runtime='onnx').detect([load_image({str(real_photos['astronaut'])!r})])[0]\n"
        "assert len(faces) == 1 and mtcnn_onnx_ready(), faces\n"
        f"loaded = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "assert not loaded, f'imported {loaded}'\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_runtime_and_device_are_checked_in_one_line(onnx_dir, tmp_path):
    with pytest.raises(UserError, match="known runtimes: onnx, torch"):
        MTCNNFaces(runtime="tensorrt")
    with pytest.raises(UserError, match="runs on the CPU"):
        MTCNNFaces(runtime="onnx", device="cuda")
    with pytest.raises(UserError, match="cannot load the MTCNN network"):
        po.OnnxMTCNN(model_dir=tmp_path)  # an empty directory
    with pytest.raises(UserError, match="one size"):
        po.OnnxMTCNN(model_dir=onnx_dir).detect([Image.new("RGB", (40, 40)), Image.new("RGB", (40, 41))])


def test_from_config_takes_the_runtime(onnx_dir):
    from pipelines.pipeline import PipelineConfig

    cfg = PipelineConfig(face_source="mtcnn", min_face_size=30, mtcnn_max_side=640)
    det = MTCNNFaces.from_config(cfg, runtime="onnx")
    assert det.runtime == "onnx" and isinstance(det.mtcnn, po.OnnxMTCNN) and det.mtcnn.min_face_size == 30
    assert det.max_side == 640
    assert detector_from_config(cfg, runtime="onnx").runtime == "onnx"
    assert detector_from_config(cfg).runtime == "torch"  # the default is unchanged
    # recorded boxes need no network: the runtime does not apply to them
    assert detector_from_config(PipelineConfig(face_source="annotations"), runtime="onnx").name == "annotations"


# --------------------------------------------------------------------------- the export cache

def _mtimes(directory: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in sorted(directory.iterdir())}


def _leftovers(root: Path) -> list:
    return [p.name for p in root.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")]


def test_export_is_cached_verified_and_rebuilt_when_damaged(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOLOGIC_CACHE", str(tmp_path))
    assert not mo.mtcnn_onnx_ready()
    with pytest.raises(mo.MtcnnOnnxError, match="not exported yet"):
        mo.mtcnn_onnx_dir(export=False)
    directory = mo.mtcnn_onnx_dir()
    assert directory == tmp_path / "onnx" / f"mtcnn-{mo.mtcnn_key()}" and mo.mtcnn_onnx_ready()
    manifest = json.loads((directory / "manifest.json").read_text())
    assert set(manifest["files"]) == {"pnet.onnx", "rnet.onnx", "onet.onnx"}
    assert max(manifest["max_abs_diff"].values()) <= 1e-4
    before = _mtimes(directory)

    exports = []
    real_export = mo.export_mtcnn
    monkeypatch.setattr(mo, "export_mtcnn", lambda *a, **k: (exports.append(1), real_export(*a, **k))[1])
    assert mo.mtcnn_onnx_dir() == directory and _mtimes(directory) == before and exports == []

    onet = directory / "onet.onnx"
    onet.write_bytes(onet.read_bytes()[: onet.stat().st_size // 2])  # a truncated file
    assert not mo.mtcnn_onnx_ready()
    assert mo.mtcnn_onnx_dir() == directory and mo.mtcnn_onnx_ready() and exports == [1]

    (directory / "manifest.json").unlink()  # a partial directory: crashed before its manifest
    assert not mo.mtcnn_onnx_ready()
    assert mo.mtcnn_onnx_dir() == directory and mo.mtcnn_onnx_ready() and exports == [1, 1]
    assert _leftovers(directory.parent) == []  # no temporary or stale directories left behind


def test_unwritable_cache_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a directory")
    monkeypatch.setenv("EMOLOGIC_CACHE", str(tmp_path / "file" / "cache"))
    with pytest.raises(mo.MtcnnOnnxError, match="point EMOLOGIC_CACHE at a writable directory"):
        mo.mtcnn_onnx_dir()


def test_concurrent_exports_give_one_complete_directory(tmp_path):
    """Two processes asking at once for a missing export: one exports, the other waits for it."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "EMOLOGIC_CACHE": str(tmp_path)}
    code = (
        "import neural.mtcnn_onnx as mo\n"
        "real, runs = mo.export_mtcnn, []\n"
        "mo.export_mtcnn = lambda *a, **k: (runs.append(1), real(*a, **k))[1]\n"
        "print(mo.mtcnn_onnx_dir(), len(runs))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-1000:] for _, err in outs]
    (path_a, runs_a), (path_b, runs_b) = (out.split() for out, _ in outs)
    assert path_a == path_b and int(runs_a) + int(runs_b) == 1  # exported once
    directory = Path(path_a)
    assert mo._is_complete(directory, directory.name.split("-", 1)[1])
    assert [p.name for p in (tmp_path / "onnx").iterdir() if not p.name.endswith(".lock")] == [directory.name]


def test_key_follows_the_weight_bytes_and_the_format(tmp_path, monkeypatch):
    copies = []
    for path in mo.facenet_weight_files():
        copies.append(tmp_path / path.name)
        copies[-1].write_bytes(path.read_bytes())
    monkeypatch.setattr(mo, "facenet_weight_files", lambda: copies)
    key = mo.mtcnn_key()
    assert len(key) == 16 and mo.mtcnn_key() == key
    data = bytearray(copies[1].read_bytes())
    data[-1] ^= 1  # one bit of RNet's weights
    copies[1].write_bytes(bytes(data))
    assert mo.mtcnn_key() != key
    data[-1] ^= 1
    copies[1].write_bytes(bytes(data))
    assert mo.mtcnn_key() == key
    monkeypatch.setattr(mo, "EXPORT_FORMAT", mo.EXPORT_FORMAT + 1)
    assert mo.mtcnn_key() != key
