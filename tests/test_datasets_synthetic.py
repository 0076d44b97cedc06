import copy
import json
from collections import Counter, defaultdict

import numpy as np
import pytest
from PIL import Image

from neural.common import EMOTIONS, FACE_SLOTS
from pipelines.context import CONTEXTS, context_key, relative_face_size
from pipelines.datasets import DEFAULT_SOURCE_TABLE, DatasetError, SyntheticConfig, ensure_synthetic, generate_synthetic, get_dataset, load_synthetic_dir
from pipelines.datasets.synthetic import _draw_latent, render_image
from pipelines.datasets.synthetic_draw import EXPRESSIONS, SCENES

SMALL = dict(n_images=40, image_size=64, seed=7)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, SyntheticConfig(**SMALL))
    return root


def test_files_and_annotations(small_set):
    ds = load_synthetic_dir(small_set)
    assert len(ds) == 40 and not ds.skipped
    assert set(ds.split_names) == {"pretrain", "train", "val", "test"}
    records = [json.loads(line) for line in (small_set / "annotations.jsonl").read_text().splitlines()]
    assert [r["sample_id"] for r in records] == [s.sample_id for s in ds]
    for s, rec in zip(ds, records):
        a = s.annotations
        assert s.image_path == small_set / "images" / f"{s.sample_id}.png"
        with Image.open(s.image_path) as img:
            assert img.size == (64, 64) and img.mode == "RGB"
        assert rec["split"] == s.split and rec["label"] == s.label_name
        boxes = a["boxes"]
        assert len(boxes) == len(a["face_emotions"]) <= 3
        areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
        assert areas == sorted(areas, reverse=True)
        assert all(0 <= b[0] < b[2] <= 64 and 0 <= b[1] < b[3] <= 64 for b in boxes)
        sizes = [relative_face_size(b, 64, 64) for b in boxes]
        assert a["context"] == context_key(len(boxes), max(sizes) if sizes else None)
        assert a["true_source"] in ("scene", "va") or FACE_SLOTS.index(a["true_source"]) < len(boxes)
        own = {"scene": a["scene_emotion"], "va": a["va_emotion"], **dict(zip(FACE_SLOTS, a["face_emotions"]))}
        assert s.label == EMOTIONS.index(own[a["true_source"]])
        assert -1 <= a["valence"] <= 1 and -1 <= a["arousal"] <= 1
        assert a["scene_category"] in [sc.name for sc in SCENES]


def test_same_seed_gives_identical_files_and_another_seed_does_not(small_set, tmp_path):
    generate_synthetic(tmp_path / "again", SyntheticConfig(**SMALL), workers=1)
    for name in ("annotations.jsonl", "config.json", "truth.json", "images/syn7-00003.png"):
        assert (tmp_path / "again" / name).read_bytes() == (small_set / name).read_bytes()
    generate_synthetic(tmp_path / "other", SyntheticConfig(**{**SMALL, "seed": 8}))
    assert (tmp_path / "other" / "annotations.jsonl").read_bytes() != (small_set / "annotations.jsonl").read_bytes()


def test_ensure_reuses_a_matching_set_and_refuses_a_different_one(small_set):
    image = small_set / "images" / "syn7-00000.png"
    before = image.stat().st_mtime_ns
    ensure_synthetic(small_set, SyntheticConfig(**SMALL))
    assert image.stat().st_mtime_ns == before
    with pytest.raises(DatasetError, match="n_images: on disk 40, requested 41; domain_shift: on disk 0.6, requested 0.2"):
        ensure_synthetic(small_set, SyntheticConfig(**{**SMALL, "n_images": 41, "domain_shift": 0.2}))


def test_registry_generates_then_loads_with_the_stored_config(tmp_path):
    root = tmp_path / "syn"
    ds = get_dataset("synthetic", root=root, n_images=12, image_size=48, seed=1)
    assert len(ds) == 12
    again = get_dataset("synthetic", root=root)  # options taken from the set on disk
    assert [s.sample_id for s in again] == [s.sample_id for s in ds]
    with pytest.raises(DatasetError, match="seed: on disk 1, requested 2"):
        get_dataset("synthetic", root=root, seed=2)
    with pytest.raises(DatasetError, match="unknown synthetic option\\(s\\) faces; known options: root, n_images"):
        get_dataset("synthetic", root=root, faces=3)


def test_missing_image_is_skipped_with_its_reason(tmp_path):
    root = generate_synthetic(tmp_path / "syn", SyntheticConfig(n_images=10, image_size=48))
    (root / "images" / "syn0-00004.png").unlink()
    ds = load_synthetic_dir(root)
    assert len(ds) == 9 and "syn0-00004" not in ds
    assert ds.skipped == [("syn0-00004", f"image missing: {root / 'images' / 'syn0-00004.png'}")]


def test_interrupted_generation_is_regenerated(tmp_path):
    root = generate_synthetic(tmp_path / "syn", SyntheticConfig(n_images=6, image_size=48))
    (root / "config.json").unlink()  # what an interrupted run leaves behind
    (root / "annotations.jsonl").write_text("garbage")
    ensure_synthetic(root, SyntheticConfig(n_images=6, image_size=48))
    assert len(load_synthetic_dir(root)) == 6


def test_source_table_decides_the_label(tmp_path):
    faces_decide = {ctx: ({"scene": 1.0} if ctx == "n0" else {"face1": 1.0}) for ctx in CONTEXTS}
    cfg = SyntheticConfig(n_images=30, image_size=48, source_table=faces_decide)
    for i in range(30):
        lat = _draw_latent(i, cfg)
        expected = lat["face_emotions"][0] if lat["boxes"] else lat["scene_emotion"]
        assert lat["label"] == expected
        assert lat["true_source"] == ("face1" if lat["boxes"] else "scene")


def test_latent_statistics_follow_the_config():
    cfg = SyntheticConfig(n_images=3000)
    latents = [_draw_latent(i, cfg) for i in range(3000)]
    by_context = defaultdict(Counter)
    for lat in latents:
        by_context[lat["context"]][lat["true_source"]] += 1
    for ctx in CONTEXTS:
        n = sum(by_context[ctx].values())
        assert n > 150, ctx  # every context is common
        for source, p in DEFAULT_SOURCE_TABLE[ctx].items():
            assert abs(by_context[ctx][source] / n - p) < 4 * np.sqrt(p * (1 - p) / n) + 0.01, (ctx, source)
    with_faces = [lat for lat in latents if lat["boxes"]]
    large = sum(lat["context"].endswith("large") for lat in with_faces) / len(with_faces)
    assert 0.4 < large < 0.6
    # faces mostly show their own expression, not just the scene's
    agree = np.mean([e == lat["scene_emotion"] for lat in with_faces for e in lat["face_emotions"]])
    assert 0.3 < agree < 0.5
    # a scene's emotion follows its category's prior: peaked, not one-hot
    for spec in SCENES:
        emotions = Counter(lat["scene_emotion"] for lat in latents if lat["scene_category"] == spec.name)
        share = emotions[spec.emotion] / sum(emotions.values())
        assert 0.4 < share < 0.6 and len(emotions) == 7


def test_scene_priors_and_expressions_are_distinct():
    assert sorted(spec.emotion for spec in SCENES) == sorted(EMOTIONS)
    for spec in SCENES:
        assert spec.prior().sum() == pytest.approx(1.0) and spec.prior().max() == 0.5
    # every pair of expressions is told apart by at least three facial actions:
    # parameters whose ranges do not overlap (so no jitter turns one into the other)
    names = list(EXPRESSIONS)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ra, rb = EXPRESSIONS[a], EXPRESSIONS[b]
            assert set(ra) == set(rb)
            assert all(lo <= hi for lo, hi in ra.values())
            apart = [p for p in ra if ra[p][1] < rb[p][0] or rb[p][1] < ra[p][0]]
            assert len(apart) >= 3, (a, b, apart)


def test_domain_shift_changes_only_pretrain_faces():
    cfg = SyntheticConfig(n_images=10, image_size=64, domain_shift=0.8)
    index = next(i for i in range(10) if _draw_latent(i, cfg)["boxes"])
    lat = _draw_latent(index, cfg)
    assert render_image(lat, index, "train", cfg) == render_image(lat, index, "test", cfg)
    assert render_image(lat, index, "pretrain", cfg) != render_image(lat, index, "train", cfg)
    unshifted = SyntheticConfig(n_images=10, image_size=64, domain_shift=0.0)
    assert render_image(lat, index, "pretrain", unshifted) == render_image(lat, index, "train", unshifted)
    # the shift lives in the faces: pixels outside every box barely change
    import io

    a = np.asarray(Image.open(io.BytesIO(render_image(lat, index, "pretrain", cfg))), dtype=float)
    b = np.asarray(Image.open(io.BytesIO(render_image(lat, index, "train", cfg))), dtype=float)
    outside = np.ones((64, 64), bool)
    for x1, y1, x2, y2 in lat["boxes"]:
        outside[max(0, y1 - 8) : y2 + 8, max(0, x1 - 8) : x2 + 8] = False
    inside = ~outside
    assert np.abs(a - b)[inside].mean() > 5 * np.abs(a - b)[outside].mean()


@pytest.mark.parametrize(
    "change, match",
    [
        ({"n_images": 0}, "n_images must be a positive integer"),
        ({"split_fractions": {"train": 0.5, "test": 0.6}}, "sum to 1"),
        ({"face_count_probs": (0.5, 0.5)}, "face_count_probs must be 4 probabilities"),
        ({"domain_shift": 1.5}, "domain_shift must be in \\[0, 1\\]"),
        ({"large_face_threshold": 0.9}, "large_face_threshold"),
    ],
)
def test_bad_config_is_a_user_error(change, match):
    with pytest.raises(DatasetError, match=match):
        SyntheticConfig(**change)


def test_bad_source_tables_are_user_errors():
    table = copy.deepcopy(DEFAULT_SOURCE_TABLE)
    table["n1_small"] = {"scene": 0.5, "face2": 0.5}
    with pytest.raises(DatasetError, match="source_table\\['n1_small'\\] gives probability to face2, which do not exist"):
        SyntheticConfig(source_table=table)
    table = copy.deepcopy(DEFAULT_SOURCE_TABLE)
    table["n2_large"] = {"scene": 0.5, "face1": 0.4}
    with pytest.raises(DatasetError, match="summing to 1"):
        SyntheticConfig(source_table=table)
    table = copy.deepcopy(DEFAULT_SOURCE_TABLE)
    del table["n3_small"]
    with pytest.raises(DatasetError, match="missing: n3_small"):
        SyntheticConfig(source_table=table)
