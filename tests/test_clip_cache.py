"""MELD clips through the verified cache: CSV -> samples -> decode -> cache -> ClipBatch.

Same manifest, resume, verify and config refusal as the image cache.
"""
from __future__ import annotations

import json

import pytest
import torch
from clip_helpers import write_meld

from cache.batch import ClipBatch
from cache.build import build_cache
from cache.loader import CachedSplit, collate
from cache.store import CacheConfigMismatch, CacheError, read_shard
from cache.verify import verify_cache
from experiments.cli import main
from neural.common import sha256_file
from pipelines.clips import ClipPipeline, ClipPipelineConfig
from pipelines.datasets import get_dataset
from pipelines.pipeline import PipelineConfig

CFG = ClipPipelineConfig(frames=4, frame_size=16, max_seconds=2.0, max_tokens=16, batch_size=4)
L = CFG.audio_frames


@pytest.fixture(scope="module")
def meld(tmp_path_factory):
    root = tmp_path_factory.mktemp("meld")
    cases = write_meld(root)
    return root, cases, get_dataset("meld", root=root)


@pytest.fixture(scope="module")
def pipe():
    return ClipPipeline(CFG, workers=1)


@pytest.fixture(scope="module")
def built(tmp_path_factory, meld, pipe):
    _, _, ds = meld
    cache = tmp_path_factory.mktemp("cache")
    report = build_cache(ds, cache, CFG, progress=False, shard_size=4, pipeline=pipe)
    return cache, report


class Interrupt(Exception):
    pass


def test_whole_path_shapes(built, meld):
    cache, report = built
    _, cases, ds = meld
    assert set(report.splits) == {"pretrain", "train", "val", "test"}
    split = CachedSplit(cache, ("pretrain", "train", "val", "test"), expected_cfg=CFG)
    usable = [sid for sid, what in cases.items() if what in ("good", "no audio")]
    assert sorted(split.sample_ids) == sorted(usable)

    ids = ["dev/dia0_utt1", "test/dia0_utt0", "train/dia3_utt1"]
    b = split.batch(ids)
    assert isinstance(b, ClipBatch) and b.sample_ids == ids and len(b) == 3
    assert b.video.shape == (3, 4, 3, 16, 16) and b.video.dtype == torch.uint8
    assert b.audio.shape == (3, 64, L) and b.audio.dtype == torch.float32
    assert b.input_ids.shape == b.attention_mask.shape == (3, 16) and b.input_ids.dtype == torch.long
    assert b.labels.tolist() == [ds[i].label for i in ids]
    assert b.sentiments.tolist() == [ds[i].annotations["sentiment"] for i in ids]
    assert [a["utterance"] for a in b.annotations] == [ds[i].annotations["utterance"] for i in ids]
    assert b.video_input().shape == (3, 3, 4, 16, 16) and float(b.video_input().max()) <= 1.0

    # the clip without audio: flagged, NaN (never silence), filled only on request
    assert b.audio_present.tolist() == [False, True, True] and b.audio_frames[0] == 0
    assert torch.isnan(b.audio[0]).all() and torch.isfinite(b.audio[1:]).all()
    assert torch.equal(b.audio_or(-23.0)[0], torch.full((64, L), -23.0)) and torch.equal(b.audio_or(0.0)[1:], b.audio[1:])

    sub = b.select(torch.tensor([False, True, True]))
    assert sub.sample_ids == ids[1:] and torch.equal(sub.video, b.video[1:])
    assert split.labels(ids).tolist() == b.labels.tolist() and split.column("sentiments", ids).tolist() == b.sentiments.tolist()
    assert split.column("audio_present").sum() == len(usable) - 1

    shuffled = [x.sample_ids for x in split.batches(4, shuffle=True, seed=3)]
    assert shuffled == [x.sample_ids for x in split.batches(4, shuffle=True, seed=3)]
    assert sorted(i for ids_ in shuffled for i in ids_) == sorted(usable)


def test_cached_tensors_equal_the_pipeline_output(built, meld, pipe):
    cache, _ = built
    _, _, ds = meld
    samples = [ds["dev/dia0_utt0"], ds["dev/dia0_utt1"]]
    done, _ = pipe.process(samples)
    direct = collate(done, CFG)
    cached = CachedSplit(cache, "val").batch([s.sample_id for s in samples])
    for name in ("video", "audio_present", "audio_frames", "input_ids", "attention_mask", "labels", "sentiments"):
        assert torch.equal(getattr(direct, name), getattr(cached, name)), name
    assert torch.allclose(direct.audio, cached.audio, equal_nan=True)


def test_manifest_records_kind_config_identity_and_every_skip(built, meld, pipe):
    cache, report = built
    _, _, ds = meld
    m = json.loads((cache / "val" / "manifest.json").read_text())
    assert m["kind"] == "clip" and m["config"] == CFG.to_dict() and m["complete"]
    assert m["identity"] == pipe.identity and "av" in m["versions"]
    entries = {e["id"]: e for e in m["samples"]}
    quiet = entries["dev/dia0_utt1"]
    assert quiet["audio_present"] is False and quiet["audio_frames"] == 0 and quiet["decode"]["audio"] == "no audio stream"
    assert quiet["sha256"] == sha256_file(ds["dev/dia0_utt1"].path) and quiet["clip_path"] == str(ds["dev/dia0_utt1"].path)
    assert entries["dev/dia0_utt0"]["sentiment"] == 2 and entries["dev/dia0_utt0"]["annotations"]["speaker"] == "Chandler"

    tensors, ids = read_shard(cache / "val" / m["shards"][0]["name"])
    assert ids == [e["id"] for e in m["samples"]]
    assert set(tensors) == {"video", "audio", "audio_present", "audio_frames", "input_ids", "attention_mask",
                            "labels", "sentiments"}

    reasons = {s.sample_id: s.reason for s in report.skipped}
    assert set(reasons) == {"train/dia22_utt0", "test/dia1_utt0"}
    assert reasons["train/dia22_utt0"].startswith("empty utterance")
    assert reasons["test/dia1_utt0"].startswith("unreadable clip: ")
    assert "1 skipped" in report.summary() and "clip/s" in report.summary()
    assert not list((cache / "val").glob(".*.tmp"))


def test_interrupted_build_resumes_without_recomputing(tmp_path, meld, pipe):
    _, _, ds = meld
    samples = [s for s in ds if s.split in ("pretrain", "train")]  # 15: 14 good + the empty utterance

    def stop(split, name, n):
        raise Interrupt

    with pytest.raises(Interrupt):
        build_cache(samples, tmp_path, CFG, split="train", progress=False, shard_size=4, on_shard=stop, pipeline=pipe)
    m = json.loads((tmp_path / "train" / "manifest.json").read_text())
    assert len(m["samples"]) == 4 and not m["complete"]

    written = []
    report = build_cache(samples, tmp_path, CFG, split="train", progress=False, shard_size=4, pipeline=pipe,
                         on_shard=lambda split, name, n: written.append(n))
    r = report.splits["train"]
    assert r.n_reused == 4 and r.n_processed == len(samples) - 4 and r.n_cached == len(samples) - 1
    assert sum(written) == len(samples) - 5  # the empty utterance is skipped, not cached
    assert json.loads((tmp_path / "train" / "manifest.json").read_text())["complete"]
    again = build_cache(samples, tmp_path, CFG, split="train", progress=False, pipeline=pipe)
    assert again.splits["train"].n_reused == len(samples) - 1 and again.splits["train"].n_processed == 1  # skip retried


def test_config_mismatch_is_refused(built, meld, tmp_path):
    cache, _ = built
    _, _, ds = meld
    other = ClipPipelineConfig(**{**CFG.to_dict(), "frames": 8})
    with pytest.raises(CacheConfigMismatch, match="frames: cache=4, requested=8"):
        build_cache(ds, cache, other, split="val", progress=False)
    with pytest.raises(CacheConfigMismatch, match="frames: cache=4, requested=8"):
        CachedSplit(cache, "val", expected_cfg=other)
    with pytest.raises(CacheConfigMismatch, match="tokenizer: cache="):
        CachedSplit(cache, "val", expected_identity={"tokenizer": "BertTokenizer:0000"})
    with pytest.raises(CacheConfigMismatch, match="this is a clip cache"):
        CachedSplit(cache, "val", expected_cfg=PipelineConfig())
    with pytest.raises(CacheError, match="a clip cache, not an image cache"):
        CachedSplit(cache, "val", kind="image")
    with pytest.raises(Exception, match="holds clip samples"):
        build_cache(ds, tmp_path, PipelineConfig(), split="val", progress=False)
    # batch_size only sets speed; text_model is covered by the tokenizer identity
    assert len(CachedSplit(cache, "val", expected_cfg={**CFG.to_dict(), "batch_size": 1})) == 2


def test_verify_checks_every_entry(built, tmp_path):
    cache, _ = built
    report = verify_cache(cache, expected_cfg=CFG)
    assert report.ok, report.summary()
    assert report.n_samples == 17 and report.n_images_checked == 17

    import shutil

    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    m_path = copy / "val" / "manifest.json"
    m = json.loads(m_path.read_text())
    m["samples"][0]["sha256"] = "0" * 64  # as if the clip changed
    m["samples"][1]["audio_present"] = not m["samples"][1]["audio_present"]
    m_path.write_text(json.dumps(m))
    shard = copy / "test" / json.loads((copy / "test" / "manifest.json").read_text())["shards"][0]["name"]
    shard.write_bytes(shard.read_bytes()[:-1] + b"\x00")
    bad = verify_cache(copy)
    assert bad.kinds() == {"clip_changed": 1, "shape": 1, "shard_tampered": 1}, bad.summary()
    assert "differs" in verify_cache(copy, expected_cfg={"frames": 8}, split="val").summary()


def test_cli_build_verify_info_on_meld(tmp_path, meld, capsys):
    root, _, _ = meld
    cache = str(tmp_path / "cache")
    small = ["--frames", "4", "--frame-size", "16", "--max-seconds", "2", "--max-tokens", "16", "--no-progress"]
    assert main(["cache", "build", "--dataset", "meld", "--root", str(root), "--cache", cache,
                 "--split", "val", "--split", "test", *small]) == 0
    out = capsys.readouterr().out
    assert "val: 2/2 cached" in out and "test: 1/2 cached" in out and "unreadable clip" in out
    assert "clip missing" in out  # the data set's own skips are reported too

    assert main(["cache", "verify", cache]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["cache", "info", cache, "--json"]) == 0
    info = {s["split"]: s for s in json.loads(capsys.readouterr().out)}
    assert info["val"]["kind"] == "clip" and info["val"]["without_audio"] == 1
    assert main(["cache", "info", cache]) == 0
    assert "without audio: 1" in capsys.readouterr().out

    # another config, or an image option on clips: one clear line, exit code 2
    assert main(["cache", "build", "--dataset", "meld", "--root", str(root), "--cache", cache,
                 "--split", "val", *small[2:], "--frames", "8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "frames: cache=4, requested=8" in err
    assert main(["cache", "build", "--dataset", "meld", "--root", str(root), "--cache", cache,
                 "--split", "val", "--crop-size", "48"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--crop-size do not apply to clip data sets" in err
