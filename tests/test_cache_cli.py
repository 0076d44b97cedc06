"""``emologic cache build|verify|info`` and ``emologic bench`` from the command line."""
from __future__ import annotations

import json

import pytest

from experiments.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:SceneBackbone")


def test_build_info_verify_and_refusal(tmp_path, synthetic_small, capsys):
    root = str(synthetic_small.samples[0].image_path.parent.parent)
    cache = str(tmp_path / "cache")
    assert main(["cache", "build", "--dataset", "synthetic", "--root", root, "--cache", cache,
                 "--split", "val", "--split", "test", "--no-progress", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "val: 3/3 cached" in out and "test: 5/5 cached" in out and "skipped: 0" in out

    assert main(["cache", "info", cache, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [s["split"] for s in info] == ["test", "val"] and info[0]["bytes_per_image"] > 2048

    assert main(["cache", "verify", cache]) == 0
    assert "OK" in capsys.readouterr().out

    # another config: one clear line, exit code 2, no traceback
    assert main(["cache", "build", "--dataset", "synthetic", "--root", root, "--cache", cache,
                 "--split", "val", "--crop-size", "48", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "crop_size: cache=64, requested=48" in err

    # a damaged cache makes verify fail with exit code 1
    manifest = tmp_path / "cache" / "val" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["samples"][0]["sha256"] = "0" * 64
    manifest.write_text(json.dumps(m))
    assert main(["cache", "verify", cache, "--split", "val"]) == 1
    assert "image_changed" in capsys.readouterr().out

    # --config: the expected pipeline config
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"scene_size": 96}))
    assert main(["cache", "verify", cache, "--split", "test", "--config", str(cfg)]) == 1
    assert "scene_size: cache=128, requested=96" in capsys.readouterr().out


def test_cache_errors_are_one_line(tmp_path, capsys):
    assert main(["cache", "verify", str(tmp_path / "none")]) == 2
    assert main(["cache", "info", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("no cache here" in line for line in err)


def test_bench_cache_json(capsys):
    assert main(["bench", "cache", "--json", "--n-small", "4", "--n-large", "1"]) == 0
    res = json.loads(capsys.readouterr().out)["cache"]
    small, large = res["synthetic_128px_annotations"], res["photo_faces_640px_mtcnn"]
    assert small["cached"] == 4 and small["images_per_s"] > 0 and small["bytes_per_image"] > 2048
    assert large["cached"] == 1 and large["images_per_s"] > 0
