"""A new neural predicate with no project file edited: the README's "Adding a neural predicate".

The test writes, in a temporary directory, what a user writes:

* ``light_plugin.py``: a network (``light2emotion``, a Config dataclass, registered)
  and the cached feature it reads (``light``: per-channel mean and std of the RGB
  pixels, [6], registered with ``register_feature``);
* ``light_selection.pl``: context_selection.pl plus the source ``light`` read by
  ``light2emotion``, with trust rules that include it in every context.

With ``EMOLOGIC_PLUGINS=light_plugin.py`` it runs ``frozen`` and ``joint`` through
the harness on a tiny synthetic set, then checks that joint trained the new network
and frozen did not, that the run learned the new source's trust, that both engines
give the same probabilities with the run's networks, and that ``emologic rules`` and
``emologic query`` show the source with its answer and provenance. Without the
plug-in, querying the run says in one line which plug-in is missing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from neural.common import EMOTIONS

PLUGIN = '''\
"""A user's neural predicate: the light of a picture (how bright, how contrasted) says an emotion."""
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from neural.provenance import Provenance
from neural.registry import register
from pipelines.feature_registry import register_feature


@dataclass
class Light2EmotionConfig:
    in_features: int = 6
    hidden: int = 16
    n_classes: int = 7


@register("light2emotion", Light2EmotionConfig)
class Light2Emotion(nn.Module):
    """[B, 6] light feature -> [B, 7] P(emotion)."""

    def __init__(self, config: Light2EmotionConfig):
        super().__init__()
        self.config = config
        self.mlp = nn.Sequential(nn.Linear(config.in_features, config.hidden), nn.ReLU(),
                                 nn.Linear(config.hidden, config.n_classes))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).softmax(-1)


class Brightness:
    """Per-channel mean and std of the RGB pixels in [0, 1]: list[PIL.Image] -> [B, 6]."""

    weights_id = "brightness-v1"  # no weights: a fixed transform, versioned

    def __call__(self, images):
        rows = []
        for image in images:
            px = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).reshape(-1, 3)
            rows.append(torch.cat([px.mean(0), px.std(0)]))
        return torch.stack(rows)


register_feature("light", lambda cfg, device: Brightness(), shape=(6,),
                 provenance=Provenance("fixed_transform", "per-channel mean and std of the RGB pixels"))
'''

EMOTION_DOMAIN = "[angry, disgust, fear, happy, sad, surprise, neutral]"
PROGRAM = f"""\
% light_selection.pl -- context_selection.pl plus the light of the picture as a source.
nn(scene2emotion, [X], E, {EMOTION_DOMAIN}) :: scene_emotion(X, E).
nn(face_emotion, [X], E, {EMOTION_DOMAIN}) :: face_emotion(X, E).
nn(light2emotion, [X], E, {EMOTION_DOMAIN}) :: light_emotion(X, E).

t(0.5)::trust(n0, scene); t(0.5)::trust(n0, light).
t(0.34)::trust(n1_small, scene); t(0.33)::trust(n1_small, face1); t(0.33)::trust(n1_small, light).
t(0.34)::trust(n1_large, scene); t(0.33)::trust(n1_large, face1); t(0.33)::trust(n1_large, light).
t(0.25)::trust(n2_small, scene); t(0.25)::trust(n2_small, face1); t(0.25)::trust(n2_small, face2); t(0.25)::trust(n2_small, light).
t(0.25)::trust(n2_large, scene); t(0.25)::trust(n2_large, face1); t(0.25)::trust(n2_large, face2); t(0.25)::trust(n2_large, light).
t(0.2)::trust(n3_small, scene); t(0.2)::trust(n3_small, face1); t(0.2)::trust(n3_small, face2); t(0.2)::trust(n3_small, face3); t(0.2)::trust(n3_small, light).
t(0.2)::trust(n3_large, scene); t(0.2)::trust(n3_large, face1); t(0.2)::trust(n3_large, face2); t(0.2)::trust(n3_large, face3); t(0.2)::trust(n3_large, light).

source_emotion(Img, scene, E) :- scene_emotion(tensor(scene(Img)), E).
source_emotion(Img, face1, E) :- face_emotion(tensor(face1(Img)), E).
source_emotion(Img, face2, E) :- face_emotion(tensor(face2(Img)), E).
source_emotion(Img, face3, E) :- face_emotion(tensor(face3(Img)), E).
source_emotion(Img, light, E) :- light_emotion(tensor(light(Img)), E).

selected(_, Ctx, S) :- trust(Ctx, S).
valid(Img, Ctx) :- selected(Img, Ctx, _).
via(Img, Ctx, S, E) :- selected(Img, Ctx, S), source_emotion(Img, S, E).
emotion(Img, Ctx, E) :- via(Img, Ctx, _, E).
"""


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory, synthetic_small):
    """The user's files, and a finished frozen + joint run of them (through experiments/joint_vs_frozen.py)."""
    from experiments import joint_vs_frozen
    from experiments.runs import resolve_run

    tmp = tmp_path_factory.mktemp("plugin")
    plugin, program = tmp / "light_plugin.py", tmp / "light_selection.pl"
    plugin.write_text(PLUGIN)
    program.write_text(PROGRAM)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMOLOGIC_PLUGINS", str(plugin))
        rc = joint_vs_frozen.main([
            "--program", str(program), "--regimes", "frozen", "joint", "--seeds", "0", "--epochs", "1",
            "--dataset", "synthetic", "--data-root", str(synthetic_small.source), "--n-images", "24",
            "--stage0-epochs", "0", "--head-epochs", "20", "--batch-size", "16", "--no-progress",
            "--cache", str(tmp / "cache"), "--runs-dir", str(tmp / "runs"), "--device", "cpu"])
    assert rc == 0
    return {"plugin": plugin, "program": program, "run": resolve_run(None, tmp / "runs"), "cache": tmp / "cache"}


def _results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def test_joint_trains_the_new_network_and_frozen_does_not(plugin_run):
    regimes = _results(plugin_run["run"])["regimes"]

    def drift(regime):  # the parameter groups of the new network (drift reports "light2emotion.mlp")
        groups = {k: v for k, v in regimes[regime]["per_seed"]["0"]["drift"].items() if k.startswith("light2emotion.")}
        assert groups, "the new network's drift is not reported"
        return sum(g["rel_l2"] for g in groups.values())

    assert drift("joint") > 0
    assert drift("frozen") == 0


def test_the_run_learns_the_new_sources_trust(plugin_run):
    run = plugin_run["run"]
    for regime in ("frozen", "joint"):
        learned = _results(run)["regimes"][regime]["per_seed"]["0"]["source_probs"]
        assert set(learned) == {"n0", "n1_small", "n1_large", "n2_small", "n2_large", "n3_small", "n3_large"}
        assert all("light" in row for row in learned.values())
        assert learned["n0"] == pytest.approx({"scene": learned["n0"]["scene"], "light": 1 - learned["n0"]["scene"]})
    recorded = json.loads((run / "config.json").read_text())["plugins"]
    assert [Path(p["path"]).name for p in recorded if p["networks"] == ["light2emotion"]] == ["light_plugin.py"]


def test_both_engines_agree_with_the_runs_networks(plugin_run):
    from cache.loader import CachedSplit
    from experiments.query.program import TrainedProgram
    from logic.model import LogicModel

    tp = TrainedProgram.load(plugin_run["run"], regime="joint")
    assert isinstance(tp.binding.networks["light2emotion"], torch.nn.Module)
    reference = LogicModel(tp.program, tp.binding.networks, engine="deepproblog",
                           face_size_threshold=tp.model.face_size_threshold)
    reference.load_rules(plugin_run["run"] / "checkpoints" / "seed0" / "joint" / "rules.json")
    reference.eval()
    split = CachedSplit(plugin_run["cache"], "test")
    batch = tp.binding.prepare(split.batch(split.sample_ids))
    with torch.no_grad():
        compiled, exact = tp.model(batch, explain=True), reference(batch, explain=True)
        nll = {name: -m.label_log_probs(batch).mean().item() for name, m in (("compiled", tp.model),
                                                                             ("deepproblog", reference))}
    assert "light" in compiled.sources
    assert abs(nll["compiled"] - nll["deepproblog"]) < 1e-6  # the test NLL
    torch.testing.assert_close(compiled.probs.double(), exact.probs.double(), atol=1e-6, rtol=0)
    # the posterior is a ratio of float32 circuit values: agreement to float32 precision
    torch.testing.assert_close(compiled.posterior.double(), exact.posterior.double(), atol=1e-5, rtol=0)


def _cli(capsys, *argv):
    from experiments.cli import main

    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def test_rules_show_the_new_source_and_its_provenance(plugin_run, capsys, monkeypatch):
    monkeypatch.setenv("EMOLOGIC_PLUGINS", str(plugin_run["plugin"]))
    rc, out, err = _cli(capsys, "rules", plugin_run["run"], "--regime", "joint")
    assert rc == 0 and err == ""
    assert "light" in out.split("P(source selected | context):")[1]
    provenance = [line for line in out.splitlines() if line.startswith("light:")]
    assert len(provenance) == 1
    assert "light2emotion: random init; trained in stage 0 on synthetic" in provenance[0]
    assert "per-channel mean and std of the RGB pixels" in provenance[0]


def test_query_answers_a_photo_with_the_new_source(plugin_run, real_photos, capsys, monkeypatch):
    monkeypatch.setenv("EMOLOGIC_PLUGINS", str(plugin_run["plugin"]))
    photo = real_photos["astronaut"]
    rc, out, _ = _cli(capsys, "query", photo, "--run", plugin_run["run"], "--regime", "joint", "--json")
    assert rc == 0
    r = json.loads(out)
    assert r["context"] in ("n1_large", "n1_small")  # the astronaut's one face
    assert set(r["source_probs"]["light"]) == set(EMOTIONS)
    assert sum(r["source_probs"]["light"].values()) == pytest.approx(1.0, abs=1e-5)
    assert set(r["trust"]) == {"scene", "face1", "light"} and "light" in r["posterior"]
    assert "light" in r["sources"] and r["pretrained_knowledge"]["light"] is False
    parts = r["model"]["sources"]["light"]["parts"]  # where the answering source's knowledge came from
    assert set(parts) == {"light feature", "light2emotion"}
    assert parts["light2emotion"]["steps"][0] == "trained in stage 0 on synthetic"
    rc, out, _ = _cli(capsys, "query", photo, "--run", plugin_run["run"], "--regime", "joint")
    assert rc == 0 and "light says " in out
    assert any(line.startswith("  knowledge light: ") for line in out.splitlines())


def test_without_the_plugin_the_run_says_which_is_missing(plugin_run, real_photos):
    env = {k: v for k, v in os.environ.items() if k != "EMOLOGIC_PLUGINS"}
    r = subprocess.run([sys.executable, "-c", "import sys; from experiments.cli import main; sys.exit(main())",
                        "query", str(real_photos["astronaut"]), "--run", str(plugin_run["run"])],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert "plug-in emologic_plugin_light_plugin (network light2emotion, feature light; " \
           f"load it with EMOLOGIC_PLUGINS={plugin_run['plugin']})" in r.stderr
