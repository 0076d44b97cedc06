"""The V/A source end to end: va_selection through the harness (tiny CLIP from disk, both engines), query."""
from __future__ import annotations

import json
import math

import pytest

from experiments.harness.config import HarnessConfig
from experiments.harness import run
from neural.common import UserError
from tests.run_helpers import numbers


def tiny(tmp_path, **kw) -> HarnessConfig:
    base = dict(n_images=60, seeds=[0], epochs=1, stage0_epochs=1, head_epochs=3, progress=False,
                program="va_selection", regimes=["frozen", "joint"], runs_dir=str(tmp_path / "runs"),
                cache=str(tmp_path / "cache"), data_root=str(tmp_path / "data"))
    base.update(kw)
    return HarnessConfig(**base)


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory, tiny_clip_dir):
    """va_selection on CLIP features: the tiny CLIP saved with save_pretrained, loaded by from_pretrained."""
    tmp = tmp_path_factory.mktemp("va")
    cfg = tiny(tmp, va_backbone="clip", clip_model=str(tiny_clip_dir), rule_init="program")
    return run(cfg, argv=["--program", "va_selection"]), tmp


def test_clip_features_are_cached_and_read_by_the_va_regressor(clip_run, tiny_clip_dir):
    run_dir, tmp = clip_run
    manifest = json.loads((tmp / "cache" / "train" / "manifest.json").read_text())
    assert manifest["config"]["va_backbone"] == "clip"
    assert manifest["identity"]["va_backbone"].startswith(f"clip:{tiny_clip_dir}:")
    net_cfg = json.loads((run_dir / "checkpoints/seed0/joint/networks/va_regressor/config.json").read_text())
    assert net_cfg["config"]["feature_dim"] == 24  # the tiny CLIP's projection_dim, not the scene's 512
    results = json.loads((run_dir / "results.json").read_text())
    va_part = results["regimes"]["joint"]["per_seed"]["0"]["provenance"]["va"]["parts"]
    assert "CLIP" in va_part["va backbone"]["description"]
    assert va_part["va_regressor"]["steps"] == ["trained in stage 0 on synthetic", "fine-tuned in joint on synthetic"]


def test_va_metrics_circumplex_error_and_trust_are_reported(clip_run):
    run_dir, tmp = clip_run
    results = json.loads((run_dir / "results.json").read_text())
    assert all(math.isfinite(x) for x in numbers(results["stage0"]["va_regressor"]))
    for split in ("val", "test"):
        for dim in ("valence", "arousal"):
            m = results["stage0"]["va_regressor"][split][dim]
            assert -1 <= m["ccc"] <= 1 and m["rmse"] > 0
    truth = json.loads((tmp / "data" / "truth.json").read_text())
    assert results["truth_circumplex"] == truth["circumplex"]
    assert results["truth_source_table"]["n0"] == {"scene": 0.7, "va": 0.3}
    for regime in ("frozen", "joint"):
        seed = results["regimes"][regime]["per_seed"]["0"]
        assert 0 < seed["va"]["circumplex_error"]["weighted_mae"] < 1
        assert set(seed["va"]["circumplex"]) == {"negative", "neutral", "positive"}
        assert "va" in seed["source_probs"]["n3_large"]
    # only joint trains the V/A heads (through the logic); frozen keeps stage 0's
    frozen = results["regimes"]["frozen"]["per_seed"]["0"]
    joint = results["regimes"]["joint"]["per_seed"]["0"]
    assert frozen["drift"]["va_regressor.valence_head"]["l2"] == 0
    assert joint["drift"]["va_regressor.valence_head"]["l2"] > 0
    assert joint["drift"]["va_regressor.arousal_head"]["l2"] > 0
    assert frozen["va"]["test"] == results["stage0"]["va_regressor"]["test"]
    report = (run_dir / "report.md").read_text()
    for heading in ("## The valence/arousal source", "circumplex MAE", "Trust in the V/A source per context"):
        assert heading in report


def test_the_report_takes_regimes_without_a_va_part(clip_run):
    from experiments.reports.render import render_report, summary_lines

    run_dir, _ = clip_run
    results = json.loads((run_dir / "results.json").read_text())
    results["regimes"]["late_fusion"] = {"per_seed": {"0": {"metrics": {"accuracy": 0.5}, "va": None}}}
    assert "## The valence/arousal source" in render_report(results, "cmd", {})
    assert any(line.startswith("stage-0 V/A (test): CCC") for line in summary_lines(results))


def test_rule_init_program_starts_from_the_circumplex_prior(clip_run):
    from logic.given import Given
    from logic.model import LogicModel
    from logic.program import load_program

    program = load_program("va_selection", check_bindings=False)
    model = LogicModel(program, {n: Given() for n in program.networks}, engine="compiled")
    model.reset_rules("program")
    assert model.rule_table()["circumplex(negative, low)"]["sad"] == pytest.approx(0.485714, abs=1e-5)
    run_dir, _ = clip_run
    history = json.loads((run_dir / "results.json").read_text())["regimes"]["frozen"]["per_seed"]["0"]
    # one epoch from the prior: still close to it, far from uniform (1/7) in the prototypical cells
    assert history["va"]["circumplex"]["negative"]["low"]["sad"] > 0.35


def test_a_cache_of_one_backbone_is_refused_for_the_other(clip_run):
    _, tmp = clip_run
    with pytest.raises(UserError) as err:
        run(tiny(tmp, runs_dir=str(tmp / "runs2")), argv=[])
    message = str(err.value)
    assert "\n" not in message and "va_backbone" in message and "clip" in message


def test_clip_backbone_on_a_program_without_va_is_refused(tmp_path, tiny_clip_dir):
    with pytest.raises(UserError, match="--va-backbone clip applies to programs with a V/A source"):
        run(tiny(tmp_path, program="context_selection", va_backbone="clip", clip_model=str(tiny_clip_dir)), argv=[])
    with pytest.raises(UserError, match="--va-backbone must be one of scene, clip"):
        tiny(tmp_path, va_backbone="vit").validate()


def test_query_prints_the_va_estimate(clip_run, capsys):
    from experiments.cli import main

    run_dir, tmp = clip_run
    image = sorted((tmp / "data" / "images").iterdir())[0]
    assert main(["query", str(image), "--run", str(run_dir), "--face-source", "annotations", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for dim, bins in (("valence", {"negative", "neutral", "positive"}), ("arousal", {"low", "medium", "high"})):
        est = answer["va"][dim]
        assert set(est["bins"]) == bins and sum(est["bins"].values()) == pytest.approx(1.0)
        assert est["std"] >= 0 and math.isfinite(est["mean"])
    assert main(["query", str(image), "--run", str(run_dir), "--face-source", "annotations"]) == 0
    text = capsys.readouterr().out
    assert "  valence  " in text and "(bins: " in text and " ± " in text


def test_va_selection_with_the_deepproblog_engine(tmp_path):
    run_dir = run(tiny(tmp_path, engine="deepproblog"), argv=["--engine", "deepproblog"])
    results = json.loads((run_dir / "results.json").read_text())
    joint = results["regimes"]["joint"]["per_seed"]["0"]
    assert joint["drift"]["va_regressor.valence_head"]["l2"] > 0
    assert 0 <= joint["va"]["circumplex_error"]["mae"] <= 1
    assert all(math.isfinite(x) for x in numbers(joint["va"]["test"]))
