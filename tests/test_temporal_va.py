"""Temporal valence/arousal: sampling, the head and its logic plug-in, Path B (cache, resume,
beats the mean predictor) and Path A (contrastive stage 1 -> regression stage 2) end to end."""
from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch

from cache.verify import verify_cache
from experiments.tools.temporal_va.config import TemporalVAConfig
from experiments.tools.temporal_va.inputs import coverage_windows, extract_features, feature_pipeline_config, sample_indices
from experiments.tools.temporal_va.run import finetune_init, run
from experiments.tools.temporal_va.train import info_nce
from neural.registry import get_network
from neural.temporal_va import clip_va, clip_va_predicate_input, load_checkpoint
from pipelines.datasets.afewva import load_afewva
from pipelines.datasets.afewva_synthetic import AfewVASyntheticConfig, ensure_afewva_synthetic

pytestmark = pytest.mark.filterwarnings("ignore:SceneBackbone")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    cfg = AfewVASyntheticConfig(n_clips=32, min_frames=8, max_frames=10, image_size=48, seed=0)
    return ensure_afewva_synthetic(tmp_path_factory.mktemp("afewva") / "set", cfg)


def test_sampling_is_one_frame_per_segment_and_evaluation_covers_every_frame():
    rng = np.random.default_rng(0)
    for n in (3, 8, 13, 40):
        idx = sample_indices(n, 8, rng)
        assert len(idx) == 8 and (np.diff(idx) >= 0).all() and idx.min() >= 0 and idx.max() < n
        windows = coverage_windows(n, 8)
        assert set(np.concatenate(windows).tolist()) == set(range(n))
        assert all(len(w) == 8 for w in windows)
    assert sample_indices(16, 4).tolist() == [2, 6, 10, 14]  # centres without an rng


def test_mc_dropout_clip_variance_feeds_the_bin_adapters():
    head = get_network("temporal_va_head", in_dim=12, d_model=16, n_heads=2, n_layers=1, ff_dim=32, dropout=0.3)
    x = torch.randn(3, 5, 12)
    assert head(x).shape == (3, 5, 2) and head.embed(x).shape[0] == 3
    inp = clip_va_predicate_input(head, x, n_samples=6)  # [B, 4] = (mean_v, mean_a, var_v, var_a)
    assert inp.shape == (3, 4) and (inp[:, 2:] > 0).all()
    for name in ("va_valence", "va_arousal"):
        torch.testing.assert_close(get_network(name)(inp).sum(dim=1), torch.ones(3))
    # by hand: two passes over one clip of two frames
    samples = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]], [[[1.0, 0.0], [1.0, 0.0]]]])  # [n=2, B=1, T=2, 2]
    mean, var = clip_va(samples)  # pass means: (0.5, 1.0) and (1.0, 0.0)
    torch.testing.assert_close(mean, torch.tensor([[0.75, 0.5]]))
    torch.testing.assert_close(var, torch.tensor([[0.125, 0.5]]))


def test_info_nce_prefers_matching_pairs():
    z = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    assert info_nce(z, z, 0.1) < info_nce(z, z.roll(1, dims=0), 0.1)


def test_feature_cache_resumes_and_verifies(data_dir, tmp_path):
    ds = load_afewva(data_dir)
    cfg = TemporalVAConfig(data=str(data_dir), out=str(tmp_path), backbone="scene", frame_size=48)
    pcfg = feature_pipeline_config(cfg)

    class Interrupt(Exception):
        pass

    def stop(split, name, n):
        raise Interrupt

    with pytest.raises(Interrupt):
        extract_features(ds, tmp_path / "cache", pcfg, shard_size=16, on_shard=stop)
    report = extract_features(ds, tmp_path / "cache", pcfg, shard_size=16)
    assert report.n_reused == 16 and report.n_processed == len(ds) - 16 and report.n_cached == len(ds)
    assert verify_cache(tmp_path / "cache", expected_cfg=pcfg).ok
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert index["clips"]["001"]["frames"] == list(ds.clips["001"].sample_ids)


def test_path_b_trains_resumes_and_beats_the_mean(data_dir, tmp_path):
    out = tmp_path / "run"
    cfg = TemporalVAConfig(data=str(data_dir), out=str(out), path="B", stage="train", backbone="scene",
                           frame_size=48, epochs=40, num_frames=6, mc_samples=4)
    run(cfg)
    history = json.loads((out / "history_pathB.json").read_text())
    assert len(history) == 40
    # a rerun resumes from the last checkpoint: nothing to do at 40 epochs, two more at 42
    run(cfg)
    assert json.loads((out / "history_pathB.json").read_text()) == history
    res = run(dataclasses.replace(cfg, stage="all", epochs=42))
    resumed = json.loads((out / "history_pathB.json").read_text())
    assert len(resumed) == 42 and resumed[:40] == history

    m, base = res["metrics"], res["mean_predictor"]
    assert base["valence"]["ccc"] == 0.0 and base["arousal"]["ccc"] == 0.0  # a constant has no concordance
    assert m["mean_ccc"] > base["mean_ccc"] + 0.15, m
    saved = json.loads((out / "evaluation" / "evaluation_results.json").read_text())
    assert saved["metrics"]["valence"]["ccc"] == pytest.approx(m["valence"]["ccc"])
    with open(out / "evaluation" / "clips.csv") as fh:
        clips = list(csv.DictReader(fh))
    assert len(clips) == res["n_clips"] and float(clips[0]["valence_var"]) > 0  # MC-dropout variance
    with open(out / "evaluation" / "predictions.csv") as fh:
        assert sum(1 for _ in csv.DictReader(fh)) == res["n_frames"]
    assert (out / "evaluation" / "trajectories.png").stat().st_size > 0


def test_path_a_stage2_starts_from_stage1(data_dir, tiny_clip_dir, tmp_path):
    common = dict(data=str(data_dir), out=str(tmp_path), path="A", clip_model=str(tiny_clip_dir), num_frames=4,
                  d_model=16, n_heads=2, lora_r=2, lora_alpha=4, epochs_pretrain=2, epochs_finetune=1,
                  lr_lora=1e-2, mc_samples=3)
    run(TemporalVAConfig(stage="pretrain", **common))
    stage1 = tmp_path / "checkpoints" / "pretrain" / "best"
    from safetensors.torch import load_file

    saved = load_file(str(stage1 / "weights.safetensors"))
    lora_keys = [k for k in saved if "lora_B" in k]
    assert lora_keys and not any("text" in k for k in saved)  # only LoRA + head are stored
    key = lora_keys[0]
    assert saved[key].abs().sum() > 0  # LoRA B starts at zero: stage 1 changed it

    model, source = finetune_init(TemporalVAConfig(stage="finetune", **common))
    assert source == str(stage1)
    torch.testing.assert_close(model.state_dict()[key], saved[key], rtol=0, atol=0)
    fresh = get_network("temporal_va_clip", **dataclasses.asdict(model.config))
    assert fresh.state_dict()[key].abs().sum() == 0

    res = run(TemporalVAConfig(stage="finetune", **common))
    assert res is None
    trainer = torch.load(tmp_path / "checkpoints" / "finetune" / "last" / "trainer.pt", weights_only=True)
    assert trainer["init_from"] == str(stage1)
    res = run(TemporalVAConfig(stage="evaluate", **common))
    assert set(res["metrics"]) >= {"valence", "arousal"} and res["n_frames"] > 0
    assert load_checkpoint(tmp_path / "checkpoints" / "finetune" / "best").registry_name == "temporal_va_clip"
