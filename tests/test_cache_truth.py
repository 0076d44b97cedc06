"""The data set is the truth: a run sees the data set's splits and labels, never stale cache contents."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from cache.verify import verify_cache
from experiments.harness.config import HarnessConfig
from experiments.harness.image_data import load_data
from experiments.harness.image_stage0 import stage0_key
from neural.common import EMOTIONS

pytestmark = pytest.mark.filterwarnings("ignore:SceneBackbone")

SPLITS = ("pretrain", "train", "val", "test")


def write_csv_set(root, n_per_split=4, labels=None, splits=None):
    """``root/t.csv`` over tiny faceless PNGs: ``n_per_split`` images per split, labels cycling."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_per_split * len(SPLITS)):
        name = f"img{i:02d}.png"
        if not (root / name).is_file():
            rng = np.random.default_rng(i)
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / name)
        label = EMOTIONS[i % 7] if labels is None else labels[i]
        split = SPLITS[i % len(SPLITS)] if splits is None else splits[i]
        rows.append((name, label, split))
    return rewrite(root / "t.csv", rows)


def rewrite(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_path", "label", "split"])
        w.writerows([r for r in rows if r is not None])
    return path, rows


def csv_cfg(tmp_path, path, **kw):
    return HarnessConfig(dataset="csv", csv=str(path), cache=str(tmp_path / "cache"), progress=False,
                         scene_weights=None, **kw)


def ids_of(data, split):
    return set(data.split(split).sample_ids)


def truth(data, split):
    return {s.sample_id: s.label for s in data.dataset.by_split(split)}


def test_labels_edited_in_place_reach_the_run(tmp_path):
    path, rows = write_csv_set(tmp_path / "set")
    first = load_data(csv_cfg(tmp_path, path))
    test_ids = sorted(ids_of(first, "test"))
    edited = [(n, EMOTIONS[(EMOTIONS.index(lab) + 1) % 7] if s == "test" else lab, s) for n, lab, s in rows]
    rewrite(path, edited)
    data = load_data(csv_cfg(tmp_path, path))
    want = truth(data, "test")
    got = dict(zip(test_ids, data.split("test").labels(test_ids).tolist()))
    assert got == want and got != {i: first.split("test").labels([i]).item() for i in test_ids}
    assert "relabelled" in data.build_summary
    assert verify_cache(tmp_path / "cache").ok


def test_dropped_rows_give_the_true_test_n(tmp_path):
    path, rows = write_csv_set(tmp_path / "set")
    load_data(csv_cfg(tmp_path, path))
    kept = [r if not (r[2] == "test" and r[0] < "img08") else None for r in rows]  # drop 2 of 4 test rows
    rewrite(path, kept)
    data = load_data(csv_cfg(tmp_path, path))
    assert len(data.split("test")) == len(data.dataset.by_split("test")) == 2
    assert ids_of(data, "test") == set(truth(data, "test"))


def test_rows_moved_from_train_to_test_are_in_one_split_only(tmp_path):
    path, rows = write_csv_set(tmp_path / "set")
    load_data(csv_cfg(tmp_path, path))
    moved = [(n, lab, "test" if s == "train" and i < 8 else s) for i, (n, lab, s) in enumerate(rows)]
    rewrite(path, moved)
    data = load_data(csv_cfg(tmp_path, path))
    for split in SPLITS:
        assert ids_of(data, split) == set(truth(data, split)), split
    assert not ids_of(data, "train") & ids_of(data, "test")
    report = verify_cache(tmp_path / "cache")
    assert report.ok, report.summary()


def test_one_cache_for_two_synthetic_sizes(tmp_path):
    def cfg(n):
        return HarnessConfig(n_images=n, cache=str(tmp_path / "cache"), data_root=str(tmp_path / f"data{n}"),
                             progress=False)

    load_data(cfg(40))
    data = load_data(cfg(28))
    for split in SPLITS:
        assert ids_of(data, split) == set(truth(data, split)), split
    assert sum(len(data.split(s)) for s in SPLITS) == 28
    assert verify_cache(tmp_path / "cache").ok


def test_stage0_key_follows_content_not_path(tmp_path):
    path, rows = write_csv_set(tmp_path / "set")
    cfg = csv_cfg(tmp_path, path)
    key = stage0_key(cfg, load_data(cfg), 0, False)
    # the same content elsewhere (another path, another cache): the same key
    shutil.copytree(tmp_path / "set", tmp_path / "copy")
    other = HarnessConfig(**{**cfg.to_dict(), "csv": str(tmp_path / "copy" / "t.csv"), "cache": str(tmp_path / "c2")})
    assert stage0_key(other, load_data(other), 0, False) == key
    # pretrain labels edited in place: another key, so stage 0 is trained again
    rewrite(path, [(n, "happy" if s == "pretrain" and lab != "happy" else lab, s) for n, lab, s in rows])
    assert stage0_key(cfg, load_data(cfg), 0, False) != key
    assert stage0_key(cfg, load_data(cfg), 1, False) != stage0_key(cfg, load_data(cfg), 0, False)


def test_verify_checks_config_agreement_and_missing_splits(tmp_path):
    path, _ = write_csv_set(tmp_path / "set")
    load_data(csv_cfg(tmp_path, path))
    cache = tmp_path / "cache"
    assert verify_cache(cache).ok
    manifest = cache / "val" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["config"]["crop_margin"] = 0.5
    manifest.write_text(json.dumps(m))
    report = verify_cache(cache)
    assert report.kinds() == {"config_disagreement": 1}, report.summary()
    assert "crop_margin" in report.problems[0].message
    for split in ("pretrain", "train", "val"):
        shutil.rmtree(cache / split)
    report = verify_cache(cache)
    assert report.kinds() == {"split_missing": 3}, report.summary()
