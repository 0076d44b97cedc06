"""Late-fusion baseline: explicit masking of absent faces."""
from __future__ import annotations

import pytest
import torch

from neural.late_fusion import LateFusionConfig, LateFusionNet
from neural.registry import load_network, save_network


def _inputs(b=4):
    torch.manual_seed(0)
    scene = torch.softmax(torch.randn(b, 7), -1)
    faces = torch.softmax(torch.randn(b, 3, 7), -1)
    mask = torch.tensor([[True, True, True], [True, False, False], [False, False, False], [True, True, False]])[:b]
    faces = faces.masked_fill(~mask[..., None], float("nan"))
    return scene, faces, mask


def test_shapes_and_probabilities():
    net = LateFusionNet(LateFusionConfig())
    p = net(*_inputs())
    assert p.shape == (4, 7) and torch.isfinite(p).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(4))


def test_absent_faces_are_zeros_plus_mask():
    net = LateFusionNet(LateFusionConfig())
    scene, faces, mask = _inputs()
    feats = net.features(scene, faces, mask)
    assert feats.shape == (4, 7 + 21 + 3)
    assert (feats[2, 7:28] == 0).all() and (feats[2, 28:] == 0).all()
    assert feats[1, 28:].tolist() == [1.0, 0.0, 0.0]
    # what sits in an absent slot never matters
    other = faces.clone()
    other[~mask] = 0.5
    torch.testing.assert_close(net(scene, other, mask), net(scene, faces, mask))


def test_gradients_are_finite_with_nan_inputs():
    net = LateFusionNet(LateFusionConfig())
    scene, faces, mask = _inputs()
    faces.requires_grad_(True)
    net(scene, faces, mask)[:, 0].sum().backward()
    assert torch.isfinite(faces.grad).all()
    assert (faces.grad[~mask] == 0).all()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_present_face_with_nan_raises():
    net = LateFusionNet(LateFusionConfig())
    scene, faces, mask = _inputs()
    mask = mask.clone()
    mask[2, 0] = True
    with pytest.raises(ValueError, match="non-finite"):
        net(scene, faces, mask)
    with pytest.raises(ValueError, match="expected"):
        net(scene, faces[:, :2], mask[:, :2])


def test_round_trip(tmp_path):
    net = LateFusionNet(LateFusionConfig(hidden=16))
    save_network(net, tmp_path / "lf")
    back = load_network(tmp_path / "lf")
    assert back.config == net.config
    torch.testing.assert_close(back(*_inputs()), net(*_inputs()), rtol=0, atol=0)
