"""A cache build on a local Ray (2 CPUs, started here) equals a serial build,
survives a worker that dies, and resumes after an interruption."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from cache.build import build_cache
from cache.store import FACE_KEYS, ROW_KEYS, read_shard
from cache.verify import verify_cache
from pipelines.pipeline import PipelineConfig

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.filterwarnings("ignore:SceneBackbone")

CFG = PipelineConfig(batch_size=2)
SHARD = 4  # 24 samples in 4 splits: 1-3 chunks per split, so several workers run at once


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def per_sample(cache_dir: Path) -> dict[str, dict]:
    """{split: {sample id: (manifest entry without its place, {tensor name: its rows})}}, from the files."""
    out = {}
    for manifest_path in sorted(cache_dir.glob("*/manifest.json")):
        m = json.loads(manifest_path.read_text())
        shards = {s["name"]: read_shard(manifest_path.parent / s["name"])[0] for s in m["shards"]}
        samples = {}
        for e in m["samples"]:
            t, row = shards[e["shard"]], e["row"]
            off = t["face_offsets"]
            rows = {k: t[k][row] for k in ROW_KEYS if k in t}
            rows |= {k: t[k][off[row]:off[row + 1]] for k in FACE_KEYS}
            samples[e["id"]] = ({k: v for k, v in e.items() if k not in ("shard", "row")}, rows)
        out[manifest_path.parent.name] = (list(samples), samples, m["skipped"])
    return out


def assert_same_cache(a: Path, b: Path) -> None:
    pa, pb = per_sample(a), per_sample(b)
    assert set(pa) == set(pb)
    for split in pa:
        order_a, sa, skipped_a = pa[split]
        order_b, sb, skipped_b = pb[split]
        assert order_a == order_b, split  # the same samples, in the data set's order
        assert skipped_a == skipped_b
        for sid in order_a:
            assert sa[sid][0] == sb[sid][0], sid
            for name, t in sa[sid][1].items():
                # byte-identical: the same batches, the same thread count
                assert t.dtype == sb[sid][1][name].dtype and torch.equal(t, sb[sid][1][name]), (sid, name)


def assert_listed_once(cache_dir: Path) -> None:
    for manifest_path in cache_dir.glob("*/manifest.json"):
        m = json.loads(manifest_path.read_text())
        ids = [e["id"] for e in m["samples"]]
        assert len(ids) == len(set(ids)), "a sample is listed twice"
        names = [s["name"] for s in m["shards"]]
        assert len(names) == len(set(names))
        on_disk = sorted(p.name for p in manifest_path.parent.glob("shard-*.safetensors"))
        assert on_disk == sorted(names), "a shard file the manifest does not list"
        assert sum(s["n_samples"] for s in m["shards"]) == len(ids)


@pytest.fixture(scope="module")
def serial(synthetic_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    build_cache(synthetic_small, out, CFG, progress=False, shard_size=SHARD)
    return out


def kill_once(marker: str):
    """A chunk hook: the first worker to run it dies (its process exits), later runs go on."""
    def hook(name: str) -> None:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(1)  # the worker process is gone mid-build, before its shard is written
    return hook


def test_distributed_build_equals_serial_and_verifies(synthetic_small, serial, tmp_path):
    from cache.distributed import RayBuild

    report = build_cache(synthetic_small, tmp_path, CFG, progress=False, shard_size=SHARD, ray=RayBuild(workers=2))
    assert report.n_cached == len(synthetic_small.samples) and report.n_processed == len(synthetic_small.samples)
    assert_same_cache(serial, tmp_path)
    assert_listed_once(tmp_path)
    assert verify_cache(tmp_path, expected_cfg=CFG).ok
    # a second distributed build finds everything done
    again = build_cache(synthetic_small, tmp_path, CFG, progress=False, shard_size=SHARD, ray=RayBuild(workers=2))
    assert again.n_processed == 0 and again.n_reused == len(synthetic_small.samples)


def test_a_worker_that_dies_is_retried_nothing_lost_or_duplicated(synthetic_small, serial, tmp_path):
    from cache.distributed import RayBuild

    marker = tmp_path / "killed"
    out = tmp_path / "cache"
    report = build_cache(synthetic_small, out, CFG, progress=False, shard_size=SHARD,
                         ray=RayBuild(workers=2, hook=kill_once(str(marker))))
    assert marker.exists()  # a worker did die
    assert report.n_cached == len(synthetic_small.samples)
    assert_same_cache(serial, out)
    assert_listed_once(out)


def test_interrupted_distributed_build_resumes(synthetic_small, serial, tmp_path):
    from cache.distributed import RayBuild

    class Interrupt(Exception):
        pass

    def stop(split, name, n):
        raise Interrupt

    with pytest.raises(Interrupt):
        build_cache(synthetic_small, tmp_path, CFG, split="pretrain", progress=False, shard_size=SHARD,
                    ray=RayBuild(workers=2), on_shard=stop)
    m = json.loads((tmp_path / "pretrain" / "manifest.json").read_text())
    assert len(m["shards"]) == 1 and not m["complete"]
    report = build_cache(synthetic_small, tmp_path, CFG, progress=False, shard_size=SHARD, ray=RayBuild(workers=2))
    assert report.splits["pretrain"].n_reused == SHARD  # the listed shard is not recomputed
    assert report.n_cached == len(synthetic_small.samples)
    assert_same_cache(serial, tmp_path)
    assert_listed_once(tmp_path)
    # and a serial rerun agrees that nothing is left
    assert build_cache(synthetic_small, tmp_path, CFG, progress=False, shard_size=SHARD).n_processed == 0


def test_without_ray_the_error_is_one_line_naming_the_extra(monkeypatch):
    import sys

    from neural.cluster import connect_ray
    from neural.common import UserError

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(UserError, match=r'pip install -e "\.\[distributed\]"'):
        connect_ray(None)
