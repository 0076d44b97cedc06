"""End-to-end: the main job on a tiny synthetic set."""
from __future__ import annotations

import json
import math

import pytest
import torch

from experiments.harness.image_track import ImageTrack
from experiments.harness.config import HarnessConfig
from experiments.harness import run
from experiments.runs import load_state
from tests.run_helpers import interrupt_at, numbers

REGIMES = ("frozen", "joint", "uniform_rules", "late_fusion")


def tiny(tmp_path, **kw) -> HarnessConfig:
    base = dict(n_images=60, seeds=[0], epochs=1, stage0_epochs=1, head_epochs=2, progress=False,
                runs_dir=str(tmp_path / "runs"), cache=str(tmp_path / "cache"), data_root=str(tmp_path / "data"))
    base.update(kw)
    return HarnessConfig(**base)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("harness")
    return run(tiny(tmp), argv=["--n-images", "60"]), tmp


def test_run_directory_is_complete(finished):
    run_dir, _ = finished
    for name in ("config.json", "results.json", "report.md", "state.json"):
        assert (run_dir / name).is_file(), name
    for png in ("training_curves.png", "source_trajectories.png", "confusions.png", "drift.png"):
        assert (run_dir / "plots" / png).stat().st_size > 1000
    assert any((run_dir / "tb").iterdir())
    for regime in REGIMES:
        unit = run_dir / "checkpoints" / "seed0" / regime
        assert (unit / "model.json").is_file()
        if regime != "late_fusion":
            assert (unit / "rules.json").is_file()
            assert (unit / "networks" / "face_emotion" / "config.json").is_file()
    report = (run_dir / "report.md").read_text()
    assert "experiments/joint_vs_frozen.py" in report and "frozen" in report and "joint" in report
    # how FER2013 (as published) and the stage-0 face net read the benchmark's labelled faces
    reading = json.loads((run_dir / "results.json").read_text())["face_reading"]
    assert set(reading) == {"FER2013 zero-shot", "stage-0 face net"}
    assert reading["FER2013 zero-shot"]["test"]["n_faces"] > 0
    assert 0 <= reading["stage-0 face net"]["test"]["macro_recall"] <= 1
    assert "How the face predicate reads the data set's faces" in report


def test_every_number_is_finite_and_in_range(finished):
    run_dir, _ = finished
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["regimes"]) == set(REGIMES)
    assert all(math.isfinite(x) for x in numbers(results))
    for regime, r in results["regimes"].items():
        m = r["per_seed"]["0"]["metrics"]
        assert 0 <= m["accuracy"] <= 1 and 0 <= m["macro_f1"] <= 1 and 0 <= m["ece"] <= 1 and m["nll"] > 0
        if regime != "late_fusion":
            seed = r["per_seed"]["0"]
            for ctx, probs in seed["source_probs"].items():
                assert sum(probs.values()) == pytest.approx(1.0), ctx
            assert 0 <= seed["source_table_mae"] <= 1
            assert 0 <= seed["posterior_agreement"] <= 1


def test_frozen_changes_no_network_parameter_and_joint_does(finished):
    run_dir, _ = finished
    results = json.loads((run_dir / "results.json").read_text())
    frozen = results["regimes"]["frozen"]["per_seed"]["0"]["drift"]
    joint = results["regimes"]["joint"]["per_seed"]["0"]["drift"]
    assert frozen["total"]["l2"] == 0.0 and frozen["total"]["frac_changed"] == 0.0
    assert joint["total"]["l2"] > 0 and joint["total"]["frac_changed"] > 0
    # the frozen regime still learned its rules
    rules = json.loads((run_dir / "checkpoints/seed0/frozen/rules.json").read_text())
    uniform = {k: 1 / len(v) for k, v in rules["groups"].items()}
    assert any(abs(p - uniform[k]) > 1e-6 for k, v in rules["groups"].items() for p in v.values())


def test_same_seed_gives_identical_results(finished, tmp_path):
    run_dir, tmp = finished
    # a fresh cache too: stage 0 is retrained, not reused
    again = run(tiny(tmp, runs_dir=str(tmp_path / "runs"), cache=str(tmp_path / "cache")), argv=[])
    # and the first run's cache: stage 0 is reused from it (it must behave as if retrained)
    reused = run(tiny(tmp, runs_dir=str(tmp_path / "runs2")), argv=[])
    a = json.loads((run_dir / "results.json").read_text())["regimes"]
    for other in (again, reused):
        b = json.loads((other / "results.json").read_text())["regimes"]
        for regime in REGIMES:
            sa, sb = a[regime]["per_seed"]["0"], b[regime]["per_seed"]["0"]
            assert sa["metrics"] == sb["metrics"], (regime, other)
            assert sa.get("source_probs") == sb.get("source_probs"), (regime, other)
            assert [h["val_nll"] for h in sa["history"]] == [h["val_nll"] for h in sb["history"]], (regime, other)


def test_interrupted_run_resumes(tmp_path, monkeypatch):
    cfg = tiny(tmp_path, regimes=["frozen", "joint"])
    real = interrupt_at(monkeypatch, "joint")
    with pytest.raises(KeyboardInterrupt):
        run(cfg, argv=[])
    run_dir = next((tmp_path / "runs").glob("2*"))
    state = load_state(run_dir)
    assert state.is_done("frozen", 0) and not state.is_done("joint", 0)
    assert not (run_dir / "results.json").exists()

    monkeypatch.setattr(ImageTrack, "run_regime", real)
    assert run(cfg, argv=[], resume=str(run_dir)) == run_dir
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["regimes"]) == {"frozen", "joint"}


def test_the_runs_face_predicate_still_reads_a_real_face(finished, astronaut_face):
    """FER2013 is the face predicate's start, and stage 0 + joint fine-tuning on the
    synthetic faces keep what it knows: the astronaut's smile is still happy."""
    from neural.registry import load_network
    from neural.common import EMOTIONS

    run_dir, _ = finished
    for regime in ("frozen", "joint"):
        net = load_network(run_dir / "checkpoints" / "seed0" / regime / "networks" / "face_emotion").eval()
        assert net.provenance.origin == "fer2013"
        with torch.no_grad():
            p = net(astronaut_face)[0]
        assert EMOTIONS[int(p.argmax())] == "happy" and p.max() > 0.5, (regime, p)


def test_engines_agree_in_joint(tmp_path, capsys):
    """The reference engine gives the compiled engine's numbers when networks train
    through the logic (BatchNorm statistics are frozen in both, so a query's output
    does not depend on the batch it comes in). Rules fixed (--rule-lr 0): the two
    engines' rule optimisers differ by design, and the run says so."""
    results = {}
    for engine in ("compiled", "deepproblog"):
        run_dir = run(tiny(tmp_path, regimes=["joint"], epochs=2, rule_lr=0.0, engine=engine), argv=[])
        results[engine] = json.loads((run_dir / "results.json").read_text())["regimes"]["joint"]["per_seed"]["0"]
    a, b = results["compiled"], results["deepproblog"]
    assert [h["train_loss"] for h in a["history"]] == pytest.approx([h["train_loss"] for h in b["history"]], abs=1e-5)
    assert a["metrics"]["nll"] == pytest.approx(b["metrics"]["nll"], abs=1e-5)
    assert a["metrics"]["accuracy"] == b["metrics"]["accuracy"]
    assert "rule parameters: DeepProbLog's SGD" in capsys.readouterr().out
