"""The clip track of the harness, end to end on tiny synthetic clips (4 frames x 32 x 32).

run() on --dataset synthetic_clips: cache, frozen-encoder features (cached),
stage 0 (the fusion recipe), frozen and joint regimes through clip_sentiment.pl,
results, report, checkpoints, `emologic rules`; the frozen regime recovers the
polarity table of the clips it trained on; joint changes the fusion net's
trainable parts and never the frozen encoders; features and stage 0 are reused;
bad clips (no audio, corrupt, empty utterance) are reported, not fatal.
"""
from __future__ import annotations

import csv
import json
import math
import shutil

import pytest
import torch
from clip_helpers import write_clip

from experiments.harness import clip_data as clip_data_module
from experiments.harness import clip_track as clip_harness_module
from experiments.cli import main as emologic
from experiments.harness.clip_data import clip_features, load_clip_data
from experiments.harness.clip_track import load_clip_network
from experiments.harness.clip_regimes import trainable_modules
from experiments.harness.config import HarnessConfig
from experiments.harness import run
from experiments.joint_vs_frozen import main as joint_vs_frozen
from logic.model import ClipInputs, LogicModel
from logic.program import load_program
from neural.multimodal import FusionHead
from neural.registry import load_network
from neural.common import EMOTIONS, SENTIMENTS
from pipelines.datasets.synthetic_clips import generate_clips
from pipelines.datasets.synthetic_clips_config import SyntheticClipsConfig
from tests.run_helpers import numbers

N_CLIPS = 150
#: the sentiment reaches a clip only through its emotion: the polarity table is all there is to learn
CLIPS = SyntheticClipsConfig(n_clips=N_CLIPS, frames=4, frame_size=32, p_sentiment_word=0.0, seed=0)


def tiny(tmp, **kw) -> HarnessConfig:
    base = {"dataset": "synthetic_clips", "n_clips": N_CLIPS, "clip_frames": 4, "clip_size": 32, "seeds": [0],
            "epochs": 80, "stage0_epochs": 10, "rule_init": "uniform", "progress": False,
            "runs_dir": str(tmp / "runs"), "cache": str(tmp / "cache")}
    base.update(kw)
    return HarnessConfig(**base)


@pytest.fixture(scope="module")
def clip_set(tmp_path_factory):
    return generate_clips(tmp_path_factory.mktemp("clips"), CLIPS)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, clip_set):
    tmp = tmp_path_factory.mktemp("clip_harness")
    cfg = tiny(tmp, data_root=str(clip_set))
    run_dir = run(cfg, argv=["--dataset", "synthetic_clips"])
    return run_dir, cfg, json.loads((run_dir / "results.json").read_text())


def test_run_directory_results_and_report(finished):
    run_dir, _, results = finished
    for name in ("config.json", "results.json", "report.md", "state.json"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tb").iterdir()) and (run_dir / "plots" / "training_curves.png").is_file()
    stage0 = run_dir / "checkpoints" / "stage0-seed0"
    assert (stage0 / "multimodal_fusion" / "weights.safetensors").is_file() and (stage0 / "stage0.json").is_file()
    for regime in ("frozen", "joint"):
        unit = run_dir / "checkpoints" / "seed0" / regime
        meta = json.loads((unit / "model.json").read_text())
        assert meta["program"] == "clip_sentiment" and meta["regime"] == regime and meta["modality"] == "clip"
        assert (unit / "rules.json").is_file()
    assert (run_dir / "checkpoints/seed0/joint/networks/multimodal_fusion.trainable.safetensors").is_file()
    assert not (run_dir / "checkpoints/seed0/frozen/networks").exists()  # the frozen regime changed no network

    assert results["modality"] == "clip" and results["program"] == "clip_sentiment"
    assert set(results["regimes"]) == {"frozen", "joint"}
    assert all(math.isfinite(x) for x in numbers(results))
    assert sum(results["n_clips"].values()) == N_CLIPS and results["skipped"]["n"] == 0
    for regime, r in results["regimes"].items():
        seed = r["per_seed"]["0"]
        for m in (seed["metrics"], seed["sentiment_metrics"]):
            assert 0 <= m["accuracy"] <= 1 and 0 <= m["weighted_precision"] <= 1 and m["nll"] > 0
        assert seed["joint_nll"] > 0 and seed["wall_time_s"] > 0
        assert set(seed["polarity_table"]) == set(EMOTIONS)
        for row in seed["polarity_table"].values():
            assert sum(row.values()) == pytest.approx(1.0)
        assert sum(seed["sentiment_sources"].values()) == pytest.approx(1.0)
        assert set(seed["polarity_error"]) == {"generator", "empirical_train"}
        assert len(seed["history"]) == 80 and seed["frozen_encoders_unchanged"] is True
    assert results["truth_polarity_table"] == CLIPS.polarity_table

    report = (run_dir / "report.md").read_text()
    for text in ("Learned polarity table", "Emotion and sentiment (test)", "stage-0 net alone (no logic)",
                 "max |Δ| vs generator", "head", "experiments/joint_vs_frozen.py --dataset synthetic_clips"):
        assert text.replace("|", "\\|") in report or text in report, text


def test_emologic_rules_shows_the_polarity_table_and_sources(finished, capsys):
    run_dir, _, results = finished
    assert emologic(["rules", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "== frozen: program clip_sentiment" in out and "== joint: program clip_sentiment" in out
    assert "polarity table P(sentiment | emotion)" in out and "P(sentiment source)" in out
    header = next(line for line in out.splitlines() if line.startswith("emotion"))
    assert header.split()[:4] == ["emotion", *SENTIMENTS] and "generator" in header
    learned = results["regimes"]["frozen"]["per_seed"]["0"]["polarity_table"]
    happy = next(line for line in out.splitlines() if line.startswith("happy")).split()
    assert [float(v) for v in happy[1:4]] == pytest.approx([learned["happy"][s] for s in SENTIMENTS], abs=1e-3)
    # provenance: the text encoder is pretrained (MiniLM), the video trunk and audio stack are random inits
    assert "clip: text encoder: text encoder" in out and "video trunk: random init" in out
    assert emologic(["rules", str(run_dir), "--json", "--regime", "joint"]) == 0
    doc = json.loads(capsys.readouterr().out)["joint"]
    assert set(doc["polarity_table"]) == set(EMOTIONS) and set(doc["sentiment_sources"]) == {"head", "emotion"}
    fusion = doc["provenance"]["clip"]["parts"]["fusion layers and heads"]
    assert fusion["steps"] == ["trained in stage 0 on synthetic_clips", "fine-tuned in joint on synthetic_clips"]
    assert emologic(["rules", str(run_dir), "--pl"]) == 0
    assert "::polarity(happy, positive)" in capsys.readouterr().out


def test_frozen_regime_learns_the_polarity_table_of_its_clips(finished):
    """From uniform, the frozen regime reaches the table observed in its 52 training clips
    (the generator's table is out of reach of so few: the observed one is ~0.2 from it)."""
    _, _, results = finished
    start = results["rule_init"]
    assert start["kind"] == "uniform"
    assert start["polarity_error"]["empirical_train"]["max_abs"] > 0.3  # the untrained table is far off
    learned = results["regimes"]["frozen"]["per_seed"]["0"]
    assert learned["polarity_error"]["empirical_train"]["max_abs"] <= 0.1
    assert learned["polarity_error"]["generator"]["mean_abs"] < start["polarity_error"]["generator"]["mean_abs"] / 2
    # and the generator's own table within 0.1 on average (its max gap is the sample's)
    assert learned["polarity_error"]["generator"]["mean_abs"] <= 0.1 < start["polarity_error"]["generator"]["mean_abs"]
    # the clips' sentiment came through their emotion only: the emotion source wins
    assert learned["sentiment_sources"]["emotion"] > 0.8


def test_whole_path_shapes_and_the_joint_checkpoint(finished):
    """Cache -> features -> fusion net -> program: shapes at each step; the joint checkpoint
    rebuilds the trained net (its test NLL is the recorded one)."""
    run_dir, cfg, results = finished
    data = load_clip_data(cfg.resolved(), progress=False)
    batch = data.split("test").batch(data.split("test").sample_ids[:5])
    assert batch.video.shape == (5, 4, 3, 32, 32) and batch.video_input().shape == (5, 3, 4, 32, 32)
    feats = clip_features(data, log=lambda *a: None)
    assert feats["test"].feats.shape == (len(feats["test"]), 1024)
    net = load_clip_network(run_dir / "checkpoints/seed0/joint")
    model = LogicModel(load_program("clip_sentiment", check_bindings=False),
                       {"multimodal_emotion": FusionHead(net, "emotion"),
                        "multimodal_sentiment": FusionHead(net, "sentiment")})
    model.load_rules(run_dir / "checkpoints/seed0/joint/rules.json")
    model.eval()
    t = feats["test"]
    with torch.no_grad():
        out = model(ClipInputs(t.sample_ids, {"clip": t.feats}, t.labels, t.sentiments), explain=True)
    n = len(t)
    assert out.emotion.shape == (n, 7) and out.sentiment.shape == (n, 3) and out.joint.shape == (n, 7, 3)
    assert out.posterior.shape == (n, 2, 3) and out.sources == ("head", "emotion")
    nll = -out.joint[torch.arange(n), t.labels, t.sentiments].double().log().mean()
    assert float(nll) == pytest.approx(results["regimes"]["joint"]["per_seed"]["0"]["joint_nll"], rel=1e-5)


def test_joint_trains_the_fusion_parts_but_never_the_frozen_encoders(finished):
    run_dir, _, results = finished
    frozen = results["regimes"]["frozen"]["per_seed"]["0"]["drift"]
    joint = results["regimes"]["joint"]["per_seed"]["0"]["drift"]
    assert frozen["total"]["l2"] == 0.0 and frozen["total"]["frac_changed"] == 0.0
    for module in ("fusion", "emotion_head", "sentiment_head", "video_fc", "audio_projection", "text_projection"):
        assert joint[module]["l2"] > 0, module
    stage0 = load_network(run_dir / "checkpoints/stage0-seed0/multimodal_fusion")
    trained = load_clip_network(run_dir / "checkpoints/seed0/joint")
    before, after = stage0.state_dict(), trained.state_dict()
    frozen_names = [n for n, p in trained.named_parameters() if not p.requires_grad]
    assert len(frozen_names) > 100
    for name in frozen_names:
        assert torch.equal(before[name], after[name]), name
    for m in trained.frozen_modules():  # BatchNorm statistics of the frozen encoders too
        assert not m.training
    old = dict(trainable_modules(stage0).named_parameters())
    new = dict(trainable_modules(trained).named_parameters())
    assert all(not torch.equal(old[n], new[n]) for n in new)


def test_features_and_stage0_are_reused_and_results_repeat(finished, tmp_path, monkeypatch, capsys):
    _, cfg, results = finished

    def refuse(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(clip_data_module, "compute_features", refuse)
    monkeypatch.setattr(clip_harness_module, "train_clip_stage0", refuse)
    again = run(tiny(tmp_path, data_root=cfg.data_root, cache=cfg.cache), argv=[])
    out = capsys.readouterr().out
    assert "features (1024-d) reused" in out and "stage 0 reused from" in out
    b = json.loads((again / "results.json").read_text())
    for regime in ("frozen", "joint"):
        sa, sb = results["regimes"][regime]["per_seed"]["0"], b["regimes"][regime]["per_seed"]["0"]
        assert sa["metrics"] == sb["metrics"] and sa["polarity_table"] == sb["polarity_table"], regime
        assert [h["val_nll"] for h in sa["history"]] == [h["val_nll"] for h in sb["history"]], regime


def _edit_utterance(path, dialogue: str, utterance: str, text: str) -> None:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        if row["Dialogue_ID"] == dialogue and row["Utterance_ID"] == utterance:
            row["Utterance"] = text
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_bad_clips_are_reported_and_the_run_goes_on(clip_set, tmp_path):
    """The same clips as real MELD (--dataset meld --root), with a clip without audio,
    a corrupt clip and an empty utterance: each left out with its reason, the run finishes."""
    root = tmp_path / "MELD.Raw"
    shutil.copytree(clip_set, root, ignore=shutil.ignore_patterns("truth.json"))
    write_clip(root / "dev_splits_complete/dia0_utt0.mp4", n_frames=4, size=32, audio=False)
    (root / "output_repeated_splits_test/dia0_utt0.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a clip")
    _edit_utterance(root / "train_sent_emo.csv", "0", "0", "   ")
    cfg = HarnessConfig(dataset="meld", data_root=str(root), clip_frames=4, clip_size=32, clip_seconds=2.0,
                        seeds=[0], epochs=2, stage0_epochs=2, progress=False, runs_dir=str(tmp_path / "runs"),
                        cache=str(tmp_path / "cache"))
    run_dir = run(cfg, argv=["--dataset", "meld", "--root", str(root)])
    results = json.loads((run_dir / "results.json").read_text())
    skipped = dict(map(tuple, results["skipped"]["clips"]))
    assert skipped["dev/dia0_utt0"].startswith("no audio")
    assert skipped["test/dia0_utt0"].startswith("unreadable clip")
    assert skipped["train/dia0_utt0"].startswith("empty utterance")
    assert results["skipped"]["n"] == 3 and sum(results["n_clips"].values()) == N_CLIPS - 3
    assert results["truth_polarity_table"] is None  # real data: no generator, only the observed table
    error = results["regimes"]["frozen"]["per_seed"]["0"]["polarity_error"]
    assert set(error) == {"empirical_train"}
    report = (run_dir / "report.md").read_text()
    assert "## Left out (3 clips)" in report and "no audio" in report and "| generator" not in report


def test_user_errors_are_one_line(tmp_path, capsys):
    assert joint_vs_frozen(["--dataset", "meld"]) == 2
    assert "--dataset meld needs --root DIR" in capsys.readouterr().err
    assert joint_vs_frozen(["--dataset", "synthetic_clips", "--regimes", "late_fusion"]) == 2
    assert "unknown regime(s) late_fusion for clip data sets; known: frozen, joint" in capsys.readouterr().err
    assert joint_vs_frozen(["--dataset", "synthetic_clips", "--program", "context_selection", "--runs-dir",
                            str(tmp_path / "runs")]) == 2
    assert "clip data sets need a clip program (clip_sentiment)" in capsys.readouterr().err
    assert joint_vs_frozen(["--dataset", "synthetic_clips", "--engine", "deepproblog"]) == 2
    assert "the joint regime on clips needs --engine compiled" in capsys.readouterr().err
