"""Registered cached features (pipelines/feature_registry.py) and plug-in loading
(experiments/plugins.py): unknown names, the cache keys of configs without them,
shapes checked at build and verify time, and a failing plug-in in one line."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from neural.common import UserError
from neural.provenance import Provenance
from pipelines.feature_registry import get_feature, register_feature
from pipelines.pipeline import ImagePipeline, PipelineConfig


class Mean:
    """Per-channel mean of the RGB pixels: [B, 3]."""

    weights_id = "rgb-mean-v1"

    def __call__(self, images):
        return torch.stack([torch.from_numpy(np.asarray(im, np.float32).reshape(-1, 3).mean(0) / 255) for im in images])


def _build_mean(cfg, device):
    return Mean()


def _build_wrong(cfg, device):
    return lambda images: torch.zeros(len(images), 5)


register_feature("rgbmean", _build_mean, (3,), Provenance("fixed_transform", "per-channel RGB mean"))
register_feature("wrongshape", _build_wrong, (4,), Provenance("fixed_transform", "claims 4 values, gives 5"))


def test_unknown_feature_lists_the_registered_ones():
    with pytest.raises(UserError, match="unknown cached feature 'nope'; registered features: .*rgbmean"):
        PipelineConfig(features=("nope",))
    with pytest.raises(UserError, match="unknown cached feature"):
        get_feature("nope")


def test_a_taken_or_builtin_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_feature("rgbmean", _build_wrong, (3,), Provenance("x", "y"))
    with pytest.raises(ValueError, match="pipeline's own"):
        register_feature("scene", _build_mean, (3,), Provenance("x", "y"))


def test_no_features_keeps_the_cache_key_and_identity():
    plain = PipelineConfig()
    assert "features" not in plain.semantic_dict()  # caches built before features existed keep their key
    with_feature = PipelineConfig(features=["rgbmean"])
    assert with_feature.semantic_dict()["features"] == ["rgbmean"]
    assert PipelineConfig.from_dict(with_feature.to_dict()) == with_feature
    assert PipelineConfig.from_dict({k: v for k, v in plain.to_dict().items() if k != "features"}) == plain


def test_pipeline_computes_the_feature_and_checks_its_shape(synthetic_small):
    samples = synthetic_small.by_split("train")[:3]
    pipe = ImagePipeline(PipelineConfig(features=("rgbmean",), scene_size=32), workers=1)
    assert pipe.identity["feature:rgbmean"] == "rgb-mean-v1"
    done, skipped = pipe.process(samples)
    assert not skipped and all(p.features["rgbmean"].shape == (3,) for p in done)
    assert "feature:rgbmean" not in ImagePipeline(PipelineConfig(scene_size=32), workers=1).identity
    bad = ImagePipeline(PipelineConfig(features=("wrongshape",), scene_size=32), workers=1)
    with pytest.raises(UserError, match=r"feature 'wrongshape': its extractor returned shape \(3, 5\)"):
        bad.process(samples)


def test_cache_stores_verifies_and_serves_the_feature(synthetic_small, tmp_path):
    from cache.build import build_cache
    from cache.loader import CachedSplit
    from cache.store import read_manifest
    from cache.verify import verify_cache

    cfg = PipelineConfig(features=("rgbmean",), scene_size=32)
    build_cache(synthetic_small, tmp_path, cfg, split="val", progress=False)
    assert read_manifest(tmp_path / "val")["identity"]["feature:rgbmean"] == "rgb-mean-v1"
    split = CachedSplit(tmp_path, "val", expected_cfg=cfg)
    batch = split.batch(split.sample_ids[:2])
    assert batch.tensors["rgbmean"].shape == (2, 3) and batch.tensors["rgbmean"].dtype == torch.float32
    assert verify_cache(tmp_path).ok
    # the shard shapes are checked against the registered shape
    from pipelines import feature_registry

    spec = feature_registry._FEATURES["rgbmean"]
    feature_registry._FEATURES["rgbmean"] = spec.__class__(spec.name, spec.build, (4,), spec.provenance)
    try:
        report = verify_cache(tmp_path)
    finally:
        feature_registry._FEATURES["rgbmean"] = spec
    assert not report.ok and "rgbmean" in report.summary()


def test_a_plugin_that_fails_to_import_is_one_line(tmp_path):
    bad = tmp_path / "broken_plugin.py"
    bad.write_text("raise RuntimeError('the plug-in is broken')\n")
    env = {**os.environ, "EMOLOGIC_PLUGINS": str(bad)}
    r = subprocess.run([sys.executable, "-c", "import sys; from experiments.cli import main; sys.exit(main())",
                        "rules"], env=env, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == (f"emologic: error: plug-in {bad} (EMOLOGIC_PLUGINS) failed to import: "
                                "RuntimeError: the plug-in is broken")


def test_entry_point_plugins_are_loaded_and_recorded(tmp_path, monkeypatch):
    from importlib.metadata import EntryPoint

    from experiments import plugins
    from neural.registry import list_networks

    (tmp_path / "ep_plugin_mod.py").write_text(
        "from dataclasses import dataclass\n"
        "from torch import nn\n"
        "from neural.registry import register\n\n"
        "@dataclass\nclass EPConfig:\n    n_classes: int = 7\n\n"
        "@register('ep_plugin_net', EPConfig)\n"
        "class EPNet(nn.Module):\n"
        "    def __init__(self, config):\n        super().__init__()\n        self.config = config\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # the process's record of loaded plug-ins is global: this test's plug-in must not reach later runs' config.json
    monkeypatch.setattr(plugins, "_LOADED", list(plugins._LOADED))
    found = [EntryPoint("ep", "ep_plugin_mod", plugins.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(plugins.metadata, "entry_points",
                        lambda group: found if group == plugins.ENTRY_POINT_GROUP else [])
    loaded = plugins.load_plugins(env="")
    assert "ep_plugin_net" in list_networks()
    record = next(p for p in loaded if p["module"] == "ep_plugin_mod")
    assert record["from"] == "entry point ep" and record["networks"] == ["ep_plugin_net"]
    assert plugins.missing_plugins([record]) == []
    gone = dict(record, networks=["not_here_net"])
    assert plugins.missing_plugins([gone]) == [
        "plug-in ep_plugin_mod (network not_here_net; install the distribution that declares its entry point ep)"]


def test_a_worker_reloads_the_plugins_its_driver_recorded(tmp_path):
    """What a Ray worker does with the harness track it receives (Track.__setstate__)."""
    plugin = tmp_path / "worker_plugin.py"
    plugin.write_text("from neural.provenance import Provenance\n"
                      "from pipelines.feature_registry import register_feature\n"
                      "register_feature('workerfeat', lambda cfg, device: None, (2,), Provenance('fixed', 'test'))\n")
    code = ("from experiments.plugins import load_recorded, loaded_plugins\n"
            "from pipelines.feature_registry import list_features\n"
            f"load_recorded([{{'entry': {str(plugin)!r}, 'from': 'EMOLOGIC_PLUGINS'}}])\n"
            "print(list_features(), loaded_plugins()[0]['features'])\n")
    env = {k: v for k, v in os.environ.items() if k != "EMOLOGIC_PLUGINS"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['workerfeat'] ['workerfeat']"


def test_a_program_reading_an_unregistered_feature_is_refused_in_one_line(tmp_path):
    from experiments.harness import HarnessConfig
    from experiments.harness.image_track import ImageTrack

    program = tmp_path / "nofeat.pl"
    program.write_text(
        "nn(scene2emotion, [X], E, [angry, disgust, fear, happy, sad, surprise, neutral]) :: scene_emotion(X, E).\n"
        "t(0.5)::trust(n0, scene); t(0.5)::trust(n0, glow).\n"
        "source_emotion(Img, scene, E) :- scene_emotion(tensor(scene(Img)), E).\n"
        "source_emotion(Img, glow, E) :- scene_emotion(tensor(glow(Img)), E).\n"
        "selected(_, Ctx, S) :- trust(Ctx, S).\nvalid(Img, Ctx) :- selected(Img, Ctx, _).\n"
        "via(Img, Ctx, S, E) :- selected(Img, Ctx, S), source_emotion(Img, S, E).\n"
        "emotion(Img, Ctx, E) :- via(Img, Ctx, _, E).\n")
    with pytest.raises(UserError, match=r"^source glow of program nofeat reads the cached feature 'glow', which is "
                                        r"neither built in \(scene, va, face1, face2, face3\) nor registered"):
        ImageTrack(HarnessConfig(program=str(program)).resolved())
