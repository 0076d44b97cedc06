"""Serving batches by sample id: padding with NaN + mask, shuffles and re-splits stay aligned."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from cache.build import build_cache
from cache.batch import ImageBatch
from cache.loader import CachedSplit, UnknownSampleError, collate
from cache.store import CacheConfigMismatch, CacheError
from neural.common import EMOTIONS
from pipelines.faces import crop_faces
from pipelines.images import load_image
from pipelines.pipeline import ImagePipeline, PipelineConfig

pytestmark = pytest.mark.filterwarnings("ignore:SceneBackbone")

CFG = PipelineConfig(batch_size=5)


@pytest.fixture(scope="module")
def pipeline():
    return ImagePipeline(CFG)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, synthetic_small, pipeline):
    root = tmp_path_factory.mktemp("loader")
    # Build from a shuffled copy of the data set, in small shards.
    samples = list(synthetic_small.samples)
    random.Random(1).shuffle(samples)
    build_cache(samples, root, CFG, progress=False, shard_size=3, pipeline=pipeline)
    return root


def test_batch_follows_the_requested_ids(cache_dir, synthetic_small):
    split = CachedSplit(cache_dir, "train", expected_cfg=CFG)
    assert sorted(split.sample_ids) == sorted(s.sample_id for s in synthetic_small.by_split("train"))
    ids = list(reversed(split.sample_ids))[:5]
    batch = split.batch(ids)
    assert batch.sample_ids == ids and len(batch) == 5
    for i, sid in enumerate(ids):
        sample = synthetic_small[sid]
        n = len(sample.annotations["boxes"])
        assert batch.face_mask[i].tolist() == [k < n for k in range(3)]
        assert batch.labels[i] == sample.label
        assert batch.meta["scene_category"][i] == sample.annotations["scene_category"]
        assert batch.image_size[i].tolist() == [128, 128]
        assert torch.equal(batch.face_boxes[i, :n], torch.tensor(sample.annotations["boxes"], dtype=torch.float32).reshape(-1, 4))


def test_select_and_to_keep_every_field_row_aligned(cache_dir):
    """``select``/``to`` are written once for every batch kind, over the dataclass fields."""
    split = CachedSplit(cache_dir, "train")
    ids = split.sample_ids[:6]
    batch = split.batch(ids)
    assert isinstance(batch, ImageBatch)
    sub = batch.select([4, 1])
    want = split.batch([ids[4], ids[1]])
    assert sub.sample_ids == want.sample_ids and sub.meta == want.meta
    for name in ("face_mask", "face_boxes", "face_probs", "image_size", "labels"):
        torch.testing.assert_close(getattr(sub, name), getattr(want, name), equal_nan=True, msg=name)
    assert sub.tensors.keys() == want.tensors.keys()
    for k in sub.tensors:
        torch.testing.assert_close(sub.tensors[k], want.tensors[k], equal_nan=True, msg=k)
    masked = batch.select(torch.arange(6) % 2 == 1)  # a bool mask
    assert masked.sample_ids == ids[1::2] and masked.meta["scene_category"] == batch.meta["scene_category"][1::2]
    moved = batch.to("cpu")
    assert type(moved) is ImageBatch and moved.sample_ids == ids and torch.equal(moved.face_mask, batch.face_mask)
    assert split.column("n_faces", ids).tolist() == batch.n_faces.tolist()
    with pytest.raises(KeyError, match="the image cache has no per-sample .sentiments."):
        split.column("sentiments")


def test_absent_faces_are_nan_never_zero(cache_dir):
    split = CachedSplit(cache_dir)  # every split
    batch = split.batch(split.sample_ids)
    assert 0 < batch.face_mask.sum() < batch.face_mask.numel()  # both cases present
    for k in range(3):
        crops = batch.tensors[f"face{k + 1}"]
        assert crops.shape == (len(batch), 1, 64, 64) and crops.dtype == torch.float32
        present = batch.face_mask[:, k]
        assert torch.isnan(crops[~present]).all()
        assert torch.isfinite(crops[present]).all()
        assert crops[present].min() >= -1 and crops[present].max() <= 1
        assert torch.isnan(batch.face_boxes[~present, k]).all() and torch.isnan(batch.face_probs[~present, k]).all()
        assert (batch.face_probs[present, k] == 1.0).all()
    assert batch.tensors["va"] is batch.tensors["scene"]  # va_backbone="scene"
    assert batch.tensors["scene"].shape == (len(batch), 512)
    assert set(batch.contexts()) <= {"n0", "n1_small", "n1_large", "n2_small", "n2_large", "n3_small", "n3_large"}


def test_reshuffled_and_resplit_tensors_still_belong_to_their_image(cache_dir, synthetic_small, pipeline):
    split = CachedSplit(cache_dir, ("pretrain", "train", "val", "test"))
    ids = list(split.sample_ids)
    random.Random(7).shuffle(ids)
    new_splits = {"a": ids[:10], "b": ids[10:17], "c": ids[17:]}
    served = {}  # sample id -> (scene features, face crops, label) as served in a shuffled batch
    for name, members in new_splits.items():
        for batch in split.batches(4, shuffle=True, seed=3, sample_ids=members):
            assert set(batch.sample_ids) <= set(members)
            for i in (0, len(batch) - 1):  # two samples of every batch
                n = int(batch.n_faces[i])
                faces = [batch.tensors[f"face{k + 1}"][i, 0] for k in range(n)]
                served[batch.sample_ids[i]] = (batch.tensors["scene"][i], faces, int(batch.labels[i]))
    assert len(served) >= 10
    # recompute them from their image files, in another order and batch composition
    samples = [synthetic_small[sid] for sid in sorted(served)]
    fresh, skipped = pipeline.process(samples)
    assert not skipped
    for sample, p in zip(samples, fresh):
        scene, faces, label = served[sample.sample_id]
        torch.testing.assert_close(scene, p.features["scene"], atol=1e-4, rtol=1e-4)
        crops = crop_faces(load_image(sample.image_path), sample.annotations["boxes"])
        assert len(faces) == len(crops) == len(sample.annotations["boxes"])
        for got, crop in zip(faces, crops):
            assert torch.equal(got, torch.from_numpy(crop).float() / 127.5 - 1)
        assert label == sample.label


def test_batches_cover_every_sample_once_and_shuffle_is_seeded(cache_dir):
    split = CachedSplit(cache_dir, "pretrain")
    order = [sid for b in split.batches(3, shuffle=True, seed=5) for sid in b.sample_ids]
    assert sorted(order) == sorted(split.sample_ids)
    assert order == [sid for b in split.batches(3, shuffle=True, seed=5) for sid in b.sample_ids]
    assert order != [sid for b in split.batches(3, shuffle=True, seed=6) for sid in b.sample_ids]
    assert [sid for b in split.batches(3) for sid in b.sample_ids] == split.sample_ids


def test_collate_matches_the_cache(cache_dir, synthetic_small, pipeline):
    split = CachedSplit(cache_dir, "val")
    samples = [synthetic_small[sid] for sid in split.sample_ids]
    done, _ = pipeline.process(samples)
    fresh, cached = collate(done, CFG), split.batch(split.sample_ids)
    assert torch.equal(fresh.face_mask, cached.face_mask)
    for key in ("face1", "face2", "face3"):
        torch.testing.assert_close(fresh.tensors[key], cached.tensors[key], equal_nan=True)
    torch.testing.assert_close(fresh.tensors["scene"], cached.tensors["scene"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fresh.face_boxes, cached.face_boxes, equal_nan=True)


def test_refusals(cache_dir):
    with pytest.raises(CacheConfigMismatch, match="face_source: cache='annotations', requested='mtcnn'"):
        CachedSplit(cache_dir, "train", expected_cfg=PipelineConfig(face_source="mtcnn"))
    with pytest.raises(CacheConfigMismatch, match="scene_backbone"):
        CachedSplit(cache_dir, "train", expected_identity={"scene_backbone": "sha-of-places365"})
    with pytest.raises(CacheError, match="no cached split 'nope'"):
        CachedSplit(cache_dir, "nope")
    split = CachedSplit(cache_dir, "train")
    with pytest.raises(UnknownSampleError, match="not in this cache"):
        split.batch([split.sample_ids[0], "no-such-id"])


def test_labels_index_the_vocabulary(cache_dir):
    labels = CachedSplit(cache_dir).labels()
    assert labels.dtype == torch.long and ((labels >= 0) & (labels < len(EMOTIONS))).all()
    assert np.unique(labels.numpy()).size > 1
