"""Face boxes (annotations, MTCNN) and 64x64 grayscale crops."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neural.common import UserError
from pipelines.faces import FaceError, crop_faces, get_detector, list_detectors, square_box


@dataclass(frozen=True)
class _Sample:
    sample_id: str
    image_path: Path = Path("unused.png")
    label: int | None = None
    split: str | None = None
    annotations: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def hopper() -> Image.Image:
    # A real photograph with one face, shipped with matplotlib (a dependency).
    from matplotlib import cbook

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        return im.convert("RGB")


def test_registry_lists_known_sources():
    assert {"annotations", "mtcnn"} <= set(list_detectors())
    with pytest.raises(UserError, match="known face sources: annotations, mtcnn"):
        get_detector("haar")


def test_crop_is_gray_uint8_and_centered_on_the_box():
    img = np.zeros((100, 120, 3), np.uint8)
    img[40:60, 50:70] = 255  # a white 20x20 "face"
    crops = crop_faces(Image.fromarray(img), [[50, 40, 70, 60]], margin=0.5, size=64)
    assert crops.shape == (1, 64, 64) and crops.dtype == np.uint8
    # side 30 around a 20 px face: the face covers the middle 2/3 of the crop
    assert crops[0, 32, 32] == 255 and crops[0, 2, 2] == 0 and crops[0, 32, 2] == 0
    inner = crops[0, 12:52, 12:52]
    assert (inner > 200).all()


def test_crop_near_the_border_is_moved_inside_not_squashed():
    left, top, right, bottom = square_box([0, 0, 20, 10], 100, 80, margin=0.2)
    assert (left, top) == (0, 0) and right - left == pytest.approx(24) and bottom - top == pytest.approx(24)
    left, top, right, bottom = square_box([90, 70, 100, 80], 100, 80, margin=1.0)
    assert (right, bottom) == (100, 80) and right - left == bottom - top == pytest.approx(20)
    # a square larger than the image is clipped to it
    assert square_box([0, 0, 100, 50], 100, 50, 0.2) == (0.0, 0.0, 100.0, 50.0)


def test_no_boxes_gives_no_crops():
    crops = crop_faces(Image.new("RGB", (32, 32)), np.zeros((0, 4)), size=64)
    assert crops.shape == (0, 64, 64)


def test_annotation_faces_sorted_by_area_and_capped():
    boxes = [[0, 0, 10, 10], [0, 0, 30, 30], [5, 5, 25, 25], [0, 0, 5, 5]]
    det = get_detector("annotations", max_faces=3)
    (faces,) = det.detect([Image.new("RGB", (64, 64))], [_Sample("a", annotations={"boxes": boxes})])
    assert faces.boxes.tolist() == [[0, 0, 30, 30], [5, 5, 25, 25], [0, 0, 10, 10]]
    assert faces.probs.tolist() == [1.0, 1.0, 1.0]


def test_annotation_faces_invalid_box_is_a_per_sample_problem():
    det = get_detector("annotations")
    out = det.detect(
        [Image.new("RGB", (64, 64))] * 2,
        [_Sample("a", annotations={"boxes": [[10, 10, 5, 20]]}), _Sample("b", annotations={"boxes": []})],
    )
    assert isinstance(out[0], FaceError) and "invalid face box" in str(out[0])
    assert len(out[1]) == 0


def test_annotation_faces_without_boxes_is_a_config_error():
    with pytest.raises(UserError, match="use face_source='mtcnn'"):
        get_detector("annotations").detect([Image.new("RGB", (8, 8))], [_Sample("a")])


def test_mtcnn_finds_real_faces_largest_first(hopper):
    canvas = Image.new("RGB", (320, 240), "gray")
    canvas.paste(hopper.resize((80, 94)), (200, 60))  # small face on the right
    canvas.paste(hopper.resize((128, 150)), (10, 40))  # large face on the left
    blank = Image.new("RGB", (320, 240), "gray")
    det = get_detector("mtcnn", min_face_size=20, prob_threshold=0.9)
    faces, none = det.detect([canvas, blank])  # one batch: same size
    assert len(faces) == 2 and len(none) == 0
    areas = (faces.boxes[:, 2] - faces.boxes[:, 0]) * (faces.boxes[:, 3] - faces.boxes[:, 1])
    assert areas[0] > areas[1]
    assert faces.boxes[0, 0] < 160 < faces.boxes[1, 0]  # the large one is the left one
    assert (faces.probs >= 0.9).all()
    # a face smaller than min_face_size is dropped
    (big_only,) = get_detector("mtcnn", min_face_size=40).detect([canvas])
    assert len(big_only) == 1 and big_only.boxes[0, 0] < 160
    # an image smaller than min_face_size has no face (and does not crash MTCNN)
    (tiny,) = get_detector("mtcnn", min_face_size=40).detect([Image.new("RGB", (30, 30))])
    assert len(tiny) == 0


def test_mtcnn_searches_a_large_photo_downscaled_and_answers_in_its_pixels(real_photos):
    """A 3072 px photo is searched at max_side (MTCNN's cost grows with the pixels: a
    batch of large camera photos would need tens of GB) and the boxes come back in
    the photo's own pixels, where the same face is in the 512 px original."""
    astronaut = Image.open(real_photos["astronaut"]).convert("RGB")
    det = get_detector("mtcnn", max_side=640)
    seen = []
    detect = det.mtcnn.detect
    det.mtcnn.detect = lambda imgs: (seen.extend(im.size for im in imgs), detect(imgs))[1]
    (small,) = det.detect([astronaut])
    big_photo = astronaut.resize((3072, 3072), Image.Resampling.BICUBIC)
    (big,) = det.detect([big_photo])
    assert seen == [(512, 512), (640, 640)]  # the small one as it is, the large one at max_side
    assert len(small) == len(big) == 1
    # the same face, in the large photo's pixels (6x), to within 6 % of the face size (MTCNN's box
    # regression moves by ~4 % between resolutions)
    side = small.boxes[0, 2] - small.boxes[0, 0]
    np.testing.assert_allclose(big.boxes[0] / 6.0, small.boxes[0], atol=0.06 * side)
    # the crop is cut from the full-resolution photo, and the FER2013 face net reads it as the original's
    import torch

    from neural.face_data import to_model_input
    from neural.fer_weights import pretrained_face_net
    from neural.common import EMOTIONS

    crops = np.concatenate([crop_faces(astronaut, small.boxes), crop_faces(big_photo, big.boxes)])
    with torch.no_grad():
        probs = pretrained_face_net()(to_model_input(torch.from_numpy(crops)))
    assert [EMOTIONS[i] for i in probs.argmax(1)] == ["happy", "happy"]


def test_mtcnn_batches_are_bounded_in_pixels(monkeypatch):
    import pipelines.faces as faces

    det = get_detector("mtcnn", batch_size=32, max_side=1000)
    sizes = []
    monkeypatch.setattr(det, "_one_batch", lambda imgs: (sizes.append(len(imgs)), [faces.Faces.none()] * len(imgs))[1])
    monkeypatch.setattr(faces, "MTCNN_BATCH_PIXELS", 1_000_000)
    det.detect([Image.new("RGB", (2000, 1000))] * 5 + [Image.new("RGB", (100, 100))] * 3)
    assert sizes == [2, 2, 1, 3]  # 1000x500 searched: two per batch; small images together
