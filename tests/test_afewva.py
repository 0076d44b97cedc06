"""AFEW-VA loader (source layout, bad clips/frames reported) and its synthetic generator."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pipelines.datasets import get_dataset
from pipelines.datasets.afewva import load_afewva
from pipelines.datasets.afewva_synthetic import AfewVASyntheticConfig, ensure_afewva_synthetic
from pipelines.datasets.base import DatasetError

CFG = AfewVASyntheticConfig(n_clips=6, min_frames=4, max_frames=6, image_size=32, seed=3)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return ensure_afewva_synthetic(tmp_path_factory.mktemp("afewva") / "set", CFG)


def test_layout_and_normalisation(synth):
    ds = get_dataset("afewva", root=synth)
    assert sorted(ds.clips) == [f"{i:03d}" for i in range(1, 7)]
    clip = ds.clips["001"]
    doc = json.loads((synth / "001" / "001.json").read_text())
    raw = np.array([[doc["frames"][f"{n:05d}"][k] for k in ("valence", "arousal")] for n in clip.frames])
    np.testing.assert_allclose(clip.targets, raw / 10, atol=1e-6)  # -10..10 -> -1..1
    assert np.abs(clip.targets).max() <= 1 and clip.targets.std(axis=0).min() > 0  # the trajectory moves
    assert clip.sample_ids[0] == "001/00000" and ds["001/00000"].annotations["clip"] == "001"
    # all frames of a clip share its split; the split depends on the seed, not on order
    assert {ds[s].split for s in clip.sample_ids} == {clip.split}
    assert not ds.skipped


def test_same_config_reuses_other_config_refuses(synth):
    before = (synth / "002" / "00001.png").stat().st_mtime_ns
    ensure_afewva_synthetic(synth, CFG)
    assert (synth / "002" / "00001.png").stat().st_mtime_ns == before
    with pytest.raises(DatasetError, match="n_clips"):
        ensure_afewva_synthetic(synth, AfewVASyntheticConfig(n_clips=7, min_frames=4, max_frames=6, image_size=32, seed=3))


def test_generator_refuses_to_write_over_real_data(tmp_path):
    (tmp_path / "001").mkdir()
    with pytest.raises(DatasetError, match="not a"):
        ensure_afewva_synthetic(tmp_path, CFG)


def test_bad_clips_and_frames_are_reported_not_fatal(synth, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(synth, root)
    (root / "002" / "002.json").unlink()  # clip without annotations
    (root / "003" / "003.json").write_text("{not json")  # unreadable annotations
    doc = json.loads((root / "004" / "004.json").read_text())
    del doc["frames"]["00001"]  # frame without annotation
    doc["frames"]["00002"]["valence"] = 42  # out of range
    doc["frames"]["00099"] = {"valence": 1, "arousal": 1}  # annotation without frame
    (root / "004" / "004.json").write_text(json.dumps(doc))
    ds = load_afewva(root)
    reasons = dict(ds.skipped)
    assert reasons["002"].startswith("no annotations") and reasons["003"].startswith("bad annotations")
    assert reasons["004/00001"].startswith("no annotation") and reasons["004/00002"].startswith("bad annotation")
    assert reasons["004/00099"].startswith("image missing")
    assert "002" not in ds.clips and "003" not in ds.clips
    assert 1 not in ds.clips["004"].frames and 2 not in ds.clips["004"].frames
    assert ds.skip_summary()["no annotations"] == 1


def test_not_a_directory(tmp_path):
    with pytest.raises(DatasetError, match="not a directory"):
        load_afewva(tmp_path / "missing")
