"""Multimodal fusion (source 003): every tensor shape of the source's table."""
from __future__ import annotations

import warnings

import pytest
import torch

from neural.common import UserError
from neural.multimodal import (MultimodalFusionConfig, MultimodalFusionNet, frames_first_to_channels_first,
                               packaged_minilm_path)
from neural.registry import load_network, save_network

B, SEQ, T, HW, L = 2, 6, 2, 16, 16


def _build(**cfg) -> MultimodalFusionNet:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MultimodalFusionNet(MultimodalFusionConfig(**cfg))


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return _build(text_model=str(packaged_minilm_path()))


def _inputs(net):
    tok = net.tokenizer()(["I am so happy today", "this is awful"], padding="max_length", max_length=SEQ,
                          truncation=True, return_tensors="pt")
    torch.manual_seed(1)
    return tok["input_ids"], tok["attention_mask"], torch.randn(B, 3, T, HW, HW), torch.randn(B, 64, L)


def test_packaged_minilm_is_a_bert_with_hidden_384(net):
    assert (packaged_minilm_path() / "model.safetensors").is_file()
    assert net.text_encoder.bert.config.hidden_size == 384
    assert net.text_encoder.projection.in_features == 384


def test_every_shape_of_the_source_table(net):
    ids, mask, video, audio = _inputs(net)
    net.eval()
    with torch.no_grad():
        text = net.text_encoder(ids, mask)
        assert ids.shape == (B, SEQ) and text.shape == (B, 128)
        assert net.video_encoder(video).shape == (B, 128)
        frames_first = video.permute(0, 2, 1, 3, 4)  # the source's [B, frames, 3, H, W]
        torch.testing.assert_close(net.video_encoder(frames_first_to_channels_first(frames_first)),
                                   net.video_encoder(video))
        assert net.audio_encoder.conv_layers(audio).shape == (B, 128, 1)
        assert net.audio_encoder(audio).shape == (B, 128)
        torch.testing.assert_close(net.audio_encoder(audio.unsqueeze(1)), net.audio_encoder(audio))  # [B,1,64,L]
        fused = net.fusion_layer(torch.randn(B, 384))
        assert fused.shape == (B, 256)
        assert net.emotion_classifier(fused).shape == (B, 7)
        assert net.sentiment_classifier(fused).shape == (B, 3)
        out = net(ids, mask, video, audio)
    assert out["emotion"].shape == (B, 7) and out["sentiment"].shape == (B, 3)
    assert out["emotion_logits"].shape == (B, 7) and out["sentiment_logits"].shape == (B, 3)
    torch.testing.assert_close(out["emotion"].sum(-1), torch.ones(B))
    torch.testing.assert_close(out["sentiment"], torch.softmax(out["sentiment_logits"], -1))


def test_source_layers(net):
    fl = net.fusion_layer
    assert (fl[0].in_features, fl[0].out_features, type(fl[1]).__name__, fl[3].p) == (384, 256, "BatchNorm1d", 0.3)
    fc = net.video_encoder.backbone.fc
    assert (fc[0].in_features, fc[0].out_features, fc[2].p) == (512, 128, 0.2)
    assert [m.out_channels for m in net.audio_encoder.conv_layers if isinstance(m, torch.nn.Conv1d)] == [64, 128]


def test_frozen_parts_get_no_gradient(net):
    ids, mask, video, audio = _inputs(net)
    net.train()
    for m in net.frozen_modules():
        assert not m.training
    net.zero_grad(set_to_none=True)
    out = net(ids, mask, video, audio)
    (out["emotion_logits"].sum() + out["sentiment_logits"].sum()).backward()
    frozen = {id(p) for m in net.frozen_modules() for p in m.parameters()}
    for name, p in net.named_parameters():
        if id(p) in frozen:
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.grad is not None, name
    assert sum(p.numel() for g in net.param_groups(1e-3) for p in g["params"]) == sum(
        p.numel() for p in net.parameters() if id(p) not in frozen)
    net.eval()


def test_bad_inputs(net):
    ids, mask, video, audio = _inputs(net)
    with pytest.raises(ValueError, match="video"):
        net(ids, mask, video[:, :2], audio)
    with pytest.raises(ValueError, match="audio"):
        net(ids, mask, video, audio[:, :, :5])


def test_unavailable_text_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="packaged_minilm_path"):
        _build(text_model=str(tmp_path / "no-such-model"))


def test_video_weights_file_is_loaded(tmp_path):
    from torchvision.models.video import r3d_18

    torch.manual_seed(5)
    ref = r3d_18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "r3d.pth")
    net = _build(text_model=str(packaged_minilm_path()), video_weights=str(tmp_path / "r3d.pth"))
    torch.testing.assert_close(net.video_encoder.backbone.layer4[0].conv1[0].weight, ref.layer4[0].conv1[0].weight)


def test_random_encoders_warn_loudly(tmp_path, caplog):
    from torchvision.models.video import r3d_18

    with pytest.warns(UserWarning) as record:
        MultimodalFusionNet(MultimodalFusionConfig(text_model=str(packaged_minilm_path())))
    messages = [str(w.message) for w in record]
    assert any("NO VIDEO WEIGHTS" in m for m in messages) and any("NO AUDIO WEIGHTS" in m for m in messages)
    assert "NO AUDIO WEIGHTS" in caplog.text  # also in the log, as the scene backbone does
    # with real video weights only the audio stack (which has none) is still warned about
    torch.save(r3d_18(weights=None).state_dict(), tmp_path / "r3d.pth")
    with pytest.warns(UserWarning) as record:
        MultimodalFusionNet(MultimodalFusionConfig(text_model=str(packaged_minilm_path()),
                                                   video_weights=str(tmp_path / "r3d.pth")))
    messages = [str(w.message) for w in record]
    assert not any("NO VIDEO WEIGHTS" in m for m in messages) and any("NO AUDIO WEIGHTS" in m for m in messages)


def test_round_trip(net, tmp_path):
    ids, mask, video, audio = _inputs(net)
    net.eval()
    save_network(net, tmp_path / "mm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = load_network(tmp_path / "mm").eval()
    assert back.config == net.config
    with torch.no_grad():
        a, b = net(ids, mask, video, audio), back(ids, mask, video, audio)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
