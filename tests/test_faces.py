"""Face boxes (annotations, MTCNN) and 64x64 grayscale crops."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neural.errors import UserError
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
