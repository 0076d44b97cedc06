"""Scene backbone (Places365 ResNet-18) and Scene2EmotionNet."""
from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from neural.common import UserError
from neural.registry import get_network, load_network, save_network
from neural.scene import Scene2EmotionConfig, Scene2EmotionNet, SceneBackbone, SceneBackboneConfig, preprocess


def _backbone(**cfg) -> SceneBackbone:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SceneBackbone(SceneBackboneConfig(**cfg))


@pytest.fixture(scope="module")
def places_ckpt(tmp_path_factory):
    """A checkpoint in the published resnet18_places365.pth.tar format."""
    from torchvision.models import resnet18

    torch.manual_seed(123)
    net = resnet18(weights=None, num_classes=365)
    path = tmp_path_factory.mktemp("places") / "resnet18_places365.pth.tar"
    torch.save({"epoch": 90, "arch": "resnet18", "best_prec1": 54.7,
                "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    net.fc = torch.nn.Identity()
    return path, net.eval()


def test_random_init_is_loud_and_seeded():
    with pytest.warns(UserWarning, match="NO PLACES365 WEIGHTS"):
        a = SceneBackbone(SceneBackboneConfig(seed=3))
    b, c = _backbone(seed=3), _backbone(seed=4)
    assert a.weights_id == "random-init-seed3"
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    assert not torch.allclose(a(x), c(x))


def test_loads_places365_checkpoint(places_ckpt):
    path, reference = places_ckpt
    net = _backbone(weights=str(path))
    assert net.weights_id == hashlib.sha256(path.read_bytes()).hexdigest()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference(x))


def test_loads_places365_checkpoint_from_url(places_ckpt, tmp_path, monkeypatch):
    import functools
    import http.server
    import threading

    monkeypatch.setenv("EMOLOGIC_CACHE", str(tmp_path / "cache"))
    path, reference = places_ckpt
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(path.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{path.name}"
        net = _backbone(weights=url)
        with pytest.raises(UserError, match="could not fetch"):
            _backbone(weights=url.replace(path.name, "missing.pth.tar"))
    finally:
        server.shutdown()
    assert (tmp_path / "cache" / "hub" / path.name).is_file()
    assert net.weights_id == hashlib.sha256(path.read_bytes()).hexdigest()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference(x))


def test_bad_checkpoints_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        _backbone(weights=str(tmp_path / "missing.pth.tar"))
    wrong = tmp_path / "wrong.pth"
    torch.save({"state_dict": {"module.conv1.weight": torch.zeros(64, 3, 7, 7)}}, wrong)
    with pytest.raises(UserError, match="not a ResNet-18 checkpoint"):
        _backbone(weights=str(wrong))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"junk")
    with pytest.raises(UserError, match="not a loadable"):
        _backbone(weights=str(junk))


def test_shapes_and_layer3_split():
    net = _backbone()
    x = torch.randn(2, 3, 64, 64)
    f3 = net.layer3_features(x)
    assert f3.shape == (2, 256, 4, 4)
    out = net(x)
    assert out.shape == (2, 512)
    torch.testing.assert_close(net.from_layer3(f3), out)


def test_frozen_by_default():
    net = _backbone()
    net.train()
    assert not any(p.requires_grad for p in net.parameters())
    assert not any(m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert net.param_groups(1e-3) == []
    out = net(torch.randn(1, 3, 32, 32))
    assert not out.requires_grad


def test_unfreeze_layer4_trains_only_layer4():
    net = _backbone(unfreeze_layer4=True, layer4_lr=2e-5)
    [group] = net.param_groups(1e-3)
    assert group["lr"] == 2e-5
    assert {id(p) for p in group["params"]} == {id(p) for p in net.layer4.parameters()}
    net.train()
    assert net.layer4.training and not net.layer1.training
    f3 = net.layer3_features(torch.randn(2, 3, 32, 32))
    net.from_layer3(f3).sum().backward()
    for name, p in net.named_parameters():
        assert (p.grad is not None) == name.startswith("layer4."), name


def test_preprocess_modes():
    rgb = preprocess(Image.new("RGB", (50, 30), (255, 0, 0)), 32)
    assert rgb.shape == (3, 32, 32)
    assert rgb[0].mean() > 2 and rgb[1].mean() < -1  # red, ImageNet-normalised
    white_rgba = preprocess(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), 16)
    torch.testing.assert_close(white_rgba, preprocess(Image.new("RGB", (8, 8), "white"), 16))
    deep = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))
    torch.testing.assert_close(preprocess(deep, 16), preprocess(Image.new("RGB", (8, 8), "white"), 16))
    for mode in ("L", "CMYK", "P"):
        assert preprocess(Image.new(mode, (10, 12)), 16).shape == (3, 16, 16)


def test_scene2emotion():
    net = Scene2EmotionNet(Scene2EmotionConfig())
    assert [tuple(p.shape) for p in net.parameters()] == [(64, 512), (64,), (7, 64), (7,)]
    x = torch.randn(5, 512)
    p = net(x)
    assert p.shape == (5, 7)
    torch.testing.assert_close(p.sum(-1), torch.ones(5))
    torch.testing.assert_close(p, torch.softmax(net.logits(x), -1))


def test_round_trips(tmp_path, places_ckpt):
    x = torch.randn(2, 3, 32, 32)
    for name, cfg in [("scene_backbone", {"weights": str(places_ckpt[0]), "unfreeze_layer4": True}),
                      ("scene2emotion", {})]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = get_network(name, **cfg).eval()
            if name == "scene2emotion":
                x = torch.randn(2, 512)
            save_network(net, tmp_path / name)
            back = load_network(tmp_path / name).eval()
        assert back.config == net.config
        torch.testing.assert_close(back(x), net(x), rtol=0, atol=0)


def test_uniform_scene_head_knows_nothing_and_says_so():
    from neural.provenance import provenance_of
    from neural.scene import uniform_scene_head

    head = uniform_scene_head()
    x = torch.randn(5, 512) * 10
    assert torch.equal(head(x), torch.full((5, 7), 1 / 7))  # softmax(0), exactly, whatever the features
    prov = provenance_of(head)
    assert not prov.pretrained and "no scene knowledge" in prov.summary()
