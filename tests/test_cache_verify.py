"""``verify_cache`` finds each kind of damage (and a clean cache has none)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from cache.build import build_cache
from cache.store import read_shard, write_json, write_shard
from cache.verify import verify_cache
from pipelines.datasets import Sample
from pipelines.pipeline import ImagePipeline, PipelineConfig

pytestmark = pytest.mark.filterwarnings("ignore:SceneBackbone")


@pytest.fixture(scope="module")
def built(tmp_path_factory, synthetic_small):
    """A clean cache of the train split, built once; each test works on a copy."""
    root = tmp_path_factory.mktemp("verify")
    samples = []
    for s in synthetic_small.by_split("train"):
        shutil.copy(s.image_path, root / s.image_path.name)
        samples.append(Sample(s.sample_id, root / s.image_path.name, s.label, s.split, s.annotations))
    build_cache(samples, root / "cache", PipelineConfig(), progress=False, shard_size=4,
                pipeline=ImagePipeline(PipelineConfig()))
    return root


@pytest.fixture
def cache(built, tmp_path):
    """A private copy of the cache and its images (the manifest points at the copies)."""
    shutil.copytree(built, tmp_path / "copy")
    d = tmp_path / "copy" / "cache" / "train"
    m = _manifest(d)
    for e in m["samples"]:
        e["image_path"] = str(tmp_path / "copy" / Path(e["image_path"]).name)
    write_json(d / "manifest.json", m)
    return d


def _manifest(d):
    return json.loads((d / "manifest.json").read_text())


def _rewrite_shard(d, index, edit):
    """Apply ``edit(tensors, ids)`` to a shard and record its new hash (a consistent but wrong shard)."""
    m = _manifest(d)
    info = m["shards"][index]
    tensors, ids = read_shard(d / info["name"])
    edit(tensors, ids)
    info["sha256"] = write_shard(d / info["name"], tensors, ids)
    write_json(d / "manifest.json", m)
    return ids


def test_clean_cache_is_ok(cache):
    report = verify_cache(cache.parent)
    assert report.ok, report.summary()
    assert report.n_samples == 8 and report.n_shards == 2 and report.n_images_checked == 8


def test_missing_sample(cache):
    m = _manifest(cache)
    m["samples"].append(dict(m["samples"][0], id="ghost"))
    write_json(cache / "manifest.json", m)
    report = verify_cache(cache.parent)
    assert [(p.kind, p.where) for p in report.problems] == [("missing_sample", "ghost")]


def test_changed_image(cache):
    m = _manifest(cache)
    Image.new("RGB", (128, 128), "orange").save(m["samples"][3]["image_path"])
    report = verify_cache(cache.parent)
    assert [(p.kind, p.where) for p in report.problems] == [("image_changed", m["samples"][3]["id"])]
    assert verify_cache(cache.parent, check_images=False).ok


def test_wrong_shape(cache):
    _rewrite_shard(cache, 0, lambda t, ids: t.update(scene=t["scene"][:, :256].contiguous()))
    report = verify_cache(cache.parent)
    assert {p.kind for p in report.problems} == {"shape"}
    assert "scene is (4, 256)" in report.problems[0].message


def test_nan_and_inf(cache):
    def poison(t, ids):
        t["scene"][1, 7] = float("nan")
        t["scene"][2, 0] = float("inf")

    ids = _rewrite_shard(cache, 1, poison)
    report = verify_cache(cache.parent)
    assert sorted((p.kind, p.where) for p in report.problems) == sorted(
        [("nonfinite", ids[1]), ("nonfinite", ids[2])]
    )


def test_tampered_shard(cache):
    name = _manifest(cache)["shards"][1]["name"]
    data = bytearray((cache / name).read_bytes())
    data[-5] ^= 0xFF  # flip bits inside the tensor data; the file still parses
    (cache / name).write_bytes(bytes(data))
    report = verify_cache(cache.parent)
    assert [(p.kind, p.where) for p in report.problems] == [("shard_tampered", name)]


def test_missing_shard(cache):
    name = _manifest(cache)["shards"][0]["name"]
    (cache / name).unlink()
    report = verify_cache(cache.parent)
    assert [(p.kind, p.where) for p in report.problems] == [("shard_missing", name)]


def test_config_mismatch(cache):
    assert verify_cache(cache.parent, expected_cfg=PipelineConfig(batch_size=99)).ok
    report = verify_cache(cache.parent, expected_cfg=PipelineConfig(crop_size=48))
    assert [p.kind for p in report.problems] == ["config_mismatch"]
    assert "crop_size: cache=64, requested=48" in report.problems[0].message


def test_face_count_disagreeing_with_manifest(cache):
    m = _manifest(cache)
    m["samples"][0]["n_faces"] += 1
    write_json(cache / "manifest.json", m)
    report = verify_cache(cache.parent)
    assert [(p.kind, p.where) for p in report.problems] == [("shape", m["samples"][0]["id"])]


def test_missing_source_image_is_only_a_warning(cache):
    m = _manifest(cache)
    Path(m["samples"][0]["image_path"]).unlink()
    report = verify_cache(cache.parent)
    assert report.ok and [w.kind for w in report.warnings] == ["image_missing"]
