"""Parameter drift on tiny hand-made modules."""
import math

import pytest
import torch
from torch import nn

from experiments.harness.drift import group_name, parameter_drift, snapshot


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.face = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))  # face.0.*, face.1.*
        self.scene = nn.Linear(3, 1)                                   # scene.weight, scene.bias
        self.rule_logits = nn.Parameter(torch.zeros(4))                # root parameter
        with torch.no_grad():
            for p in self.parameters():
                p.fill_(1.0)


def test_untouched_model_has_exactly_zero_drift():
    m = Tiny()
    before = snapshot(m)
    drift = parameter_drift(before, m)
    for group, d in drift.items():
        assert d["l2"] == 0.0 and d["rel_l2"] == 0.0 and d["frac_changed"] == 0.0, group
        assert isinstance(d["l2"], float)


def test_drift_by_hand():
    m = Tiny()
    before = snapshot(m)
    with torch.no_grad():
        m.face[0].weight[0, 0] += 3.0   # one of 4 weights, by 3
        m.face[0].bias[1] -= 4.0        # one of 2 biases, by 4
        m.rule_logits[2] = 1.0          # written, but to the value it already had
    drift = parameter_drift(before, snapshot(m), group_depth=2)
    assert set(drift) == {"face.0", "face.1", "scene", "rule_logits", "total"}
    f0 = drift["face.0"]
    assert f0["n_params"] == 6
    assert f0["l2"] == pytest.approx(5.0)                       # sqrt(3^2 + 4^2)
    assert f0["rel_l2"] == pytest.approx(5.0 / math.sqrt(6.0))  # ||before|| = sqrt(6 * 1^2)
    assert f0["frac_changed"] == pytest.approx(2 / 6)
    assert drift["scene"] == {"l2": 0.0, "rel_l2": 0.0, "frac_changed": 0.0, "n_params": 4}
    assert drift["rule_logits"]["l2"] == 0.0  # set to the value it already had
    total = drift["total"]
    assert total["n_params"] == 6 + 4 + 4 + 4
    assert total["l2"] == pytest.approx(5.0)
    assert total["frac_changed"] == pytest.approx(2 / 18)


def test_group_depth_one_and_tiny_change_counts():
    m = Tiny()
    before = snapshot(m)
    with torch.no_grad():
        m.face[1].weight[0] = torch.nextafter(torch.tensor(1.0), torch.tensor(2.0))
    drift = parameter_drift(before, m, group_depth=1)
    assert set(drift) == {"face", "scene", "rule_logits", "total"}
    assert drift["face"]["frac_changed"] == pytest.approx(1 / 10)
    assert drift["face"]["l2"] > 0.0


def test_buffers_only_when_asked():
    m = Tiny()
    assert not any("running" in n for n in snapshot(m))
    with_buffers = snapshot(m, include_buffers=True)
    assert "face.1.running_mean" in with_buffers
    assert "face.1.num_batches_tracked" not in with_buffers  # integer buffer
    m.train()
    m.face(torch.randn(4, 2))  # updates BatchNorm running stats only
    assert parameter_drift(snapshot(m), snapshot(m))["total"]["l2"] == 0.0
    assert parameter_drift(with_buffers, m)["face.1"]["frac_changed"] > 0.0


def test_snapshot_is_a_copy():
    m = Tiny()
    snap = snapshot(m)
    with torch.no_grad():
        m.scene.weight.add_(1.0)
    assert torch.equal(snap["scene.weight"], torch.ones(1, 3))


def test_zero_before_group_changed_is_inf():
    before = {"a.w": torch.zeros(2)}
    drift = parameter_drift(before, {"a.w": torch.tensor([0.0, 1.0])})
    assert drift["a"]["rel_l2"] == math.inf and drift["a"]["l2"] == 1.0


def test_mismatch_raises():
    with pytest.raises(ValueError, match="missing"):
        parameter_drift({"a.w": torch.zeros(1)}, {})
    with pytest.raises(ValueError, match="shape"):
        parameter_drift({"a.w": torch.zeros(1)}, {"a.w": torch.zeros(2)})


def test_group_name():
    assert group_name("face.block1.conv.weight") == "face.block1"
    assert group_name("face.block1.conv.weight", 1) == "face"
    assert group_name("scene_head.weight", 3) == "scene_head"
    assert group_name("logits") == "logits"
