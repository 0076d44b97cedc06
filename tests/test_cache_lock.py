"""Cache writers lock; `cache build` repairs damage; the harness refuses a damaged cache."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cache.store import cache_lock
from cache.verify import verify_cache
from experiments.cli import main
from experiments.harness.config import HarnessConfig
from experiments.harness.image_data import load_data
from experiments.joint_vs_frozen import build_parser
from neural.common import UserError

pytestmark = pytest.mark.filterwarnings("ignore:SceneBackbone")
ROOT = Path(__file__).resolve().parent.parent


def build_args(dataset, cache, *extra):
    return ["cache", "build", "--dataset", "synthetic", "--root", dataset.source, "--cache", str(cache),
            "--no-progress", "--shard-size", "4", *extra]


def python(code: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT)


def hold_lock(cache) -> subprocess.Popen:
    holder = python(f"import time; from cache.store import cache_lock\nwith cache_lock({str(cache)!r}):\n"
                    "    print('locked', flush=True); time.sleep(60)")
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_writer_exits_or_waits(tmp_path, synthetic_small, capsys):
    cache = tmp_path / "cache"
    holder = hold_lock(cache)
    try:
        assert main(build_args(synthetic_small, cache, "--no-wait")) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "another process is writing" in err
        assert not list(cache.glob("*/manifest.json"))  # nothing written

        done = {}
        waiter = threading.Thread(target=lambda: done.update(rc=main(build_args(synthetic_small, cache))))
        waiter.start()
        waiter.join(3)
        assert waiter.is_alive() and not list(cache.glob("*/manifest.json"))  # waiting, not writing
    finally:
        holder.kill()
        holder.wait()
    waiter.join(120)
    assert done == {"rc": 0}
    assert "waiting for it to finish" in capsys.readouterr().out
    assert verify_cache(cache).ok


def test_concurrent_builds_leave_a_valid_cache(tmp_path, synthetic_small):
    cache = tmp_path / "cache"
    code = f"import sys; from experiments.cli import main; sys.exit(main({build_args(synthetic_small, cache)!r}))"
    procs = [python(code) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    # one computed every sample while the other waited, then reused them all
    computed = sum(int(n) for out, _ in outs for n in re.findall(r"\((\d+) computed now", out))
    assert computed == len(synthetic_small), outs
    report = verify_cache(cache)
    assert report.ok, report.summary()


def test_build_repairs_what_verify_reports(tmp_path, synthetic_small, capsys):
    cache = tmp_path / "cache"
    assert main(build_args(synthetic_small, cache)) == 0
    shards = sorted((cache / "train").glob("shard-*.safetensors"))
    data = bytearray(shards[0].read_bytes())
    data[-5] ^= 0xFF
    shards[0].write_bytes(bytes(data))  # tampered
    (cache / "test" / "shard-00000.safetensors").unlink()  # missing
    assert {p.kind for p in verify_cache(cache).problems} == {"shard_tampered", "shard_missing"}
    capsys.readouterr()
    assert main(build_args(synthetic_small, cache)) == 0  # no --force
    assert "repaired" in capsys.readouterr().out
    report = verify_cache(cache)
    assert report.ok, report.summary()
    assert report.n_samples == len(synthetic_small)


def _flags(message: str) -> set[str]:
    return set(re.findall(r"--[a-z][a-z0-9-]+", message))


def test_harness_refuses_a_damaged_cache_and_rebuilds_on_request(tmp_path):
    cfg = dict(n_images=24, cache=str(tmp_path / "cache"), data_root=str(tmp_path / "data"), progress=False)
    load_data(HarnessConfig(**cfg))
    shard = tmp_path / "cache" / "val" / "shard-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])
    before = {p: p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.name != ".lock"}
    with pytest.raises(UserError) as exc:
        load_data(HarnessConfig(**cfg))
    message = str(exc.value)
    assert "shard-00000" in message and "--rebuild-cache" in message and "\n" not in message
    known = {o for a in build_parser()._actions for o in a.option_strings}
    assert _flags(message) <= known, _flags(message) - known
    after = {p: p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before  # nothing written into the damaged cache

    data = load_data(HarnessConfig(**cfg, rebuild_cache=True))
    assert len(data.split("val")) == len(data.dataset.by_split("val"))
    assert verify_cache(tmp_path / "cache").ok


def test_harness_config_mismatch_names_its_own_flags(tmp_path):
    cfg = dict(n_images=24, cache=str(tmp_path / "cache"), data_root=str(tmp_path / "data"), progress=False)
    load_data(HarnessConfig(**cfg))
    manifest = tmp_path / "cache" / "train" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["config"]["crop_margin"] = 0.5
    manifest.write_text(json.dumps(m))
    with pytest.raises(UserError) as exc:
        load_data(HarnessConfig(**cfg))
    known = {o for a in build_parser()._actions for o in a.option_strings}
    assert "--rebuild-cache" in str(exc.value) and _flags(str(exc.value)) <= known
    load_data(HarnessConfig(**cfg, rebuild_cache=True))
    assert verify_cache(tmp_path / "cache").ok


def test_lock_is_reentrant_in_one_process(tmp_path):
    with cache_lock(tmp_path / "c"):
        with cache_lock(tmp_path / "c", wait=False):
            pass
