"""Building the cache: manifest content, resume after interruption, config refusal, skips."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from cache.build import build_cache
from cache.store import CacheConfigMismatch, read_shard
from pipelines.datasets import Sample
from pipelines.images import sha256_file
from pipelines.pipeline import ImagePipeline, PipelineConfig

pytestmark = pytest.mark.filterwarnings("ignore:SceneBackbone")


@pytest.fixture(scope="module")
def pipeline():
    return ImagePipeline(PipelineConfig(batch_size=4))


class Interrupt(Exception):
    pass


def test_manifest_records_config_identity_versions_and_samples(tmp_path, synthetic_small, pipeline):
    report = build_cache(synthetic_small, tmp_path, pipeline.cfg, split="train", progress=False, pipeline=pipeline)
    assert report.n_cached == len(synthetic_small.by_split("train")) and not report.skipped
    m = json.loads((tmp_path / "train" / "manifest.json").read_text())
    assert m["config"] == pipeline.cfg.to_dict() and m["complete"]
    assert m["identity"]["scene_backbone"] == "random-init-seed0"
    assert {"torch", "torchvision", "facenet-pytorch", "emologic"} <= set(m["versions"])
    by_id = {s.sample_id: s for s in synthetic_small.by_split("train")}
    for e in m["samples"]:
        s = by_id[e["id"]]
        assert e["sha256"] == sha256_file(s.image_path)
        assert e["n_faces"] == len(s.annotations["boxes"]) and e["label"] == s.label
        assert e["annotations"]["true_source"] == s.annotations["true_source"]
    for shard in m["shards"]:
        assert shard["sha256"] == sha256_file(tmp_path / "train" / shard["name"])
    assert not list((tmp_path / "train").glob(".*.tmp"))  # atomic writes leave no temp files


def test_faces_are_stored_ragged_without_invented_rows(tmp_path, synthetic_small, pipeline):
    build_cache(synthetic_small, tmp_path, pipeline.cfg, split="pretrain", progress=False, pipeline=pipeline)
    m = json.loads((tmp_path / "pretrain" / "manifest.json").read_text())
    tensors, ids = read_shard(tmp_path / "pretrain" / m["shards"][0]["name"])
    n_faces = [e["n_faces"] for e in m["samples"]]
    assert tensors["faces"].shape == (sum(n_faces), 64, 64)
    assert np.diff(tensors["face_offsets"].numpy()).tolist() == n_faces
    assert "va" not in tensors  # va_backbone="scene": stored once, as "scene"
    assert ids == [e["id"] for e in m["samples"]]


def test_interrupted_build_resumes_without_recomputing(tmp_path, synthetic_small, pipeline):
    samples = synthetic_small.samples  # 24 samples, 4 splits
    seen = []

    def stop_after_first_shard(split, name, n):
        seen.append((split, name, n))
        raise Interrupt

    with pytest.raises(Interrupt):
        build_cache(samples, tmp_path, pipeline.cfg, split="everything", progress=False,
                    shard_size=5, on_shard=stop_after_first_shard, pipeline=pipeline)
    assert seen == [("everything", "shard-00000.safetensors", 5)]
    m = json.loads((tmp_path / "everything" / "manifest.json").read_text())
    assert len(m["samples"]) == 5 and not m["complete"]

    written = []
    report = build_cache(samples, tmp_path, pipeline.cfg, split="everything", progress=False, shard_size=5,
                         on_shard=lambda split, name, n: written.append(n), pipeline=pipeline)
    r = report.splits["everything"]
    assert r.n_reused == 5 and r.n_processed == len(samples) - 5 and r.n_cached == len(samples)
    assert sum(written) == len(samples) - 5
    assert json.loads((tmp_path / "everything" / "manifest.json").read_text())["complete"]

    again = build_cache(samples, tmp_path, pipeline.cfg, split="everything", progress=False, pipeline=pipeline)
    assert again.n_processed == 0 and again.n_reused == len(samples)


def test_changed_image_is_recomputed_on_rebuild(tmp_path, synthetic_small, pipeline):
    src = synthetic_small.by_split("val")
    local = []
    for s in src:
        shutil.copy(s.image_path, tmp_path / s.image_path.name)
        local.append(Sample(s.sample_id, tmp_path / s.image_path.name, s.label, s.split, s.annotations))
    build_cache(local, tmp_path / "c", pipeline.cfg, progress=False, pipeline=pipeline)
    Image.new("RGB", (128, 128), "purple").save(local[0].image_path)
    report = build_cache(local, tmp_path / "c", pipeline.cfg, progress=False, pipeline=pipeline)
    r = report.splits["val"]
    assert (r.n_changed, r.n_processed, r.n_reused) == (1, 1, len(local) - 1)
    m = json.loads((tmp_path / "c" / "val" / "manifest.json").read_text())
    entry = next(e for e in m["samples"] if e["id"] == local[0].sample_id)
    assert entry["sha256"] == sha256_file(local[0].image_path) and entry["shard"] == "shard-00001.safetensors"


def test_other_config_is_refused_naming_the_keys(tmp_path, synthetic_small, pipeline):
    build_cache(synthetic_small, tmp_path, pipeline.cfg, split="val", progress=False, pipeline=pipeline)
    other = PipelineConfig(scene_size=96, crop_margin=0.3, batch_size=4)
    with pytest.raises(CacheConfigMismatch) as info:
        build_cache(synthetic_small, tmp_path, other, split="val", progress=False)
    msg = str(info.value)
    assert "scene_size: cache=128, requested=96" in msg and "crop_margin: cache=0.2, requested=0.3" in msg
    assert "batch_size" not in msg  # does not change what is cached
    # batch size alone is no mismatch
    build_cache(synthetic_small, tmp_path, PipelineConfig(batch_size=7), split="val", progress=False)


def test_bad_inputs_are_skipped_with_reasons(tmp_path, synthetic_small, pipeline, capsys):
    good = synthetic_small.by_split("val")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    Image.new("RGB", (300, 300)).save(tmp_path / "huge.png")
    Image.fromarray(np.full((40, 40), 60000, np.uint16)).save(tmp_path / "deep.png")
    bad = [
        Sample("missing", tmp_path / "missing.png", 0, "val", {"boxes": []}),
        Sample("empty", tmp_path / "empty.png", 0, "val", {"boxes": []}),
        Sample("text", tmp_path / "text.jpg", 0, "val", {"boxes": []}),
        Sample("huge", tmp_path / "huge.png", 0, "val", {"boxes": []}),
        Sample("badbox", good[0].image_path, 0, "val", {"boxes": [[50, 50, 10, 10]]}),
        Sample("deep", tmp_path / "deep.png", 2, "val", {"boxes": [[5, 5, 30, 30]]}),  # converted, kept
    ]
    cfg = PipelineConfig(max_pixels=50_000, batch_size=4)
    report = build_cache(good + bad, tmp_path / "c", cfg, progress=False)
    reasons = {s.sample_id: s.reason for s in report.skipped}
    assert set(reasons) == {"missing", "empty", "text", "huge", "badbox"}
    assert reasons["missing"] == "file not found" and reasons["empty"] == "empty file (0 bytes)"
    assert "not an image" in reasons["text"] and "above the limit" in reasons["huge"]
    assert "invalid face box" in reasons["badbox"]
    assert report.n_cached == len(good) + 1
    m = json.loads((tmp_path / "c" / "val" / "manifest.json").read_text())
    assert {s["id"] for s in m["skipped"]} == set(reasons)
    assert "skipped: 5" in report.summary()


def test_clip_va_features_are_cached_separately(tmp_path, synthetic_small):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from cache.loader import CachedSplit

    # a tiny local CLIP (no hub access): text 2 layers, vision 2 layers, 16-d projection
    cfg = transformers.CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=20, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=99, max_position_embeddings=16),
        vision_config=dict(hidden_size=16, intermediate_size=20, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    transformers.CLIPModel(cfg).save_pretrained(tmp_path / "clip")
    transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        tmp_path / "clip"
    )
    pcfg = PipelineConfig(va_backbone="clip", clip_model=str(tmp_path / "clip"), batch_size=4)
    build_cache(synthetic_small, tmp_path / "c", pcfg, split="val", progress=False)
    m = json.loads((tmp_path / "c" / "val" / "manifest.json").read_text())
    assert m["identity"]["va_backbone"].startswith(f"clip:{tmp_path / 'clip'}:")
    batch = CachedSplit(tmp_path / "c", "val", expected_cfg=pcfg).batch([s.sample_id for s in synthetic_small.by_split("val")])
    assert batch.tensors["va"].shape == (3, 16) and batch.tensors["scene"].shape == (3, 512)
    assert torch.isfinite(batch.tensors["va"]).all() and batch.tensors["va"].std(0).sum() > 0


def test_unloadable_clip_model_is_a_user_error(tmp_path):
    from neural.common import UserError

    pytest.importorskip("transformers")
    with pytest.raises(UserError, match="cannot load CLIP model"):
        ImagePipeline(PipelineConfig(va_backbone="clip", clip_model=str(tmp_path / "no-such-model")))
