"""Multimodal fusion training recipe (source 003) on cached frozen features."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import neural.multimodal_recipe as recipe
import neural.multimodal_training as training
from neural.multimodal import (
    FusionHead,
    MultimodalFusionConfig,
    MultimodalFusionNet,
    packaged_minilm_path,
)
from neural.multimodal_recipe import (
    GROUPS,
    RecipeConfig,
    RecipeConfigError,
    class_weights,
    clip_gradients,
    head_metrics,
    make_optimizer,
    make_scheduler,
    param_groups,
    recipe_loss,
)
from neural.multimodal_training import evaluate_fusion, train_fusion


B, SEQ, T, HW, L = 3, 6, 2, 16, 16
N_EMO, N_SENT = 7, 3


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random R3D trunk
        return MultimodalFusionNet(MultimodalFusionConfig(text_model=str(packaged_minilm_path())))


@pytest.fixture(scope="module")
def init_state(net):
    return training._trainable_state(net)


@pytest.fixture
def fresh(net, init_state):
    """The module's net with its trainable part back at the initial weights."""
    training._load_trainable_state(net, init_state)
    net.eval()
    return net


def _clips(net):
    tok = net.tokenizer()(["I am so happy today", "this is awful", "fine"], padding="max_length",
                          max_length=SEQ, truncation=True, return_tensors="pt")
    g = torch.Generator().manual_seed(1)
    return tok["input_ids"], tok["attention_mask"], torch.randn(B, 3, T, HW, HW, generator=g), torch.randn(B, 64, L, generator=g)


def _synthetic(n: int, seed: int, dim: int = 1024, signal: float = 0.15):
    """Features that carry both labels linearly (class means) plus unit Gaussian noise; imbalanced emotions.

    Majority-class accuracy is about 0.25 (emotion) and 0.5 (sentiment); the
    class means are small against the noise, so the heads must really learn.
    """
    g = torch.Generator().manual_seed(1234)  # the class means are shared by every split
    emo_means = signal * torch.randn(N_EMO, dim, generator=g)
    sent_means = signal * torch.randn(N_SENT, dim, generator=g)
    g = torch.Generator().manual_seed(seed)
    emo = torch.multinomial(torch.tensor([4.0, 1, 1, 4, 2, 1, 3]), n, replacement=True, generator=g)
    emo_to_sent = torch.tensor([0, 0, 0, 2, 0, 1, 1])  # mostly determined by the emotion ...
    flip = torch.rand(n, generator=g) < 0.2  # ... with 20% of sentiments redrawn
    sent = torch.where(flip, torch.randint(N_SENT, (n,), generator=g), emo_to_sent[emo])
    feats = emo_means[emo] + sent_means[sent] + torch.randn(n, dim, generator=g)
    return feats, emo, sent


# --------------------------------------------------------------------------- #
# the feature split
# --------------------------------------------------------------------------- #
def test_feature_width_and_layout(net):
    assert net.feature_dim == 384 + 512 + 128 == 1024
    assert net.feature_slices() == {"text": (0, 384), "video": (384, 896), "audio": (896, 1024)}


def test_forward_is_forward_features_of_frozen_features(fresh):
    net = fresh
    ids, mask, video, audio = _clips(net)
    net.train()  # trainable dropout/BN in training mode: the frozen part must not care
    feats = net.frozen_features(ids, mask, video, audio)
    assert feats.shape == (B, 1024) and not feats.requires_grad
    for m in net.frozen_modules():
        assert not m.training
    net.eval()
    sl = net.feature_slices()
    with torch.no_grad():
        torch.testing.assert_close(feats[:, slice(*sl["text"])], net.text_encoder.bert(
            input_ids=ids, attention_mask=mask).pooler_output, rtol=0, atol=0)
        torch.testing.assert_close(feats[:, slice(*sl["audio"])], net.audio_encoder.conv_layers(audio).squeeze(-1),
                                   rtol=0, atol=0)
        # the encoders' own forwards (what the source calls) are projection(features)
        torch.testing.assert_close(net.video_encoder(video), net.video_encoder.backbone(video), rtol=0, atol=0)
        a = net(ids, mask, video, audio)
        b = net.forward_features(feats)
    assert set(a) == set(b) == {"emotion", "sentiment", "emotion_logits", "sentiment_logits"}
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"\[B, 1024\]"):
        net.forward_features(feats[:, :100])


def test_fusion_heads_are_neural_predicates_on_features(fresh):
    net = fresh
    feats = torch.randn(5, net.feature_dim)
    emo, sent = FusionHead(net, "emotion"), FusionHead(net, "sentiment")
    assert emo.net is sent.net is net and (emo.n_classes, sent.n_classes) == (7, 3)
    with torch.no_grad():
        out = net.forward_features(feats)
        torch.testing.assert_close(emo(feats), out["emotion"], rtol=0, atol=0)
        torch.testing.assert_close(sent(feats), out["sentiment"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="known heads: emotion, sentiment"):
        FusionHead(net, "valence")


# --------------------------------------------------------------------------- #
# recipe parts
# --------------------------------------------------------------------------- #
def test_param_groups_cover_every_trainable_parameter_once(net):
    cfg = RecipeConfig(lr_text=1e-6, lr_video=2e-6, lr_audio=3e-6, lr_fusion=4e-6, lr_heads=5e-6)
    groups = param_groups(net, cfg)
    assert [g["name"] for g in groups] == list(GROUPS)
    assert [g["lr"] for g in groups] == [1e-6, 2e-6, 3e-6, 4e-6, 5e-6]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))  # exactly once
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    frozen = {id(p) for m in net.frozen_modules() for p in m.parameters()}
    assert set(ids) == trainable and not set(ids) & frozen and frozen
    by_name = {g["name"]: {id(p) for p in g["params"]} for g in groups}
    assert by_name["text"] == {id(p) for p in net.text_encoder.projection.parameters()}
    assert by_name["video"] == {id(p) for p in net.video_encoder.backbone.fc.parameters()}
    assert by_name["audio"] == {id(p) for p in net.audio_encoder.projection.parameters()}
    assert by_name["heads"] == {id(p) for m in (net.emotion_classifier, net.sentiment_classifier)
                                for p in m.parameters()}
    # the source's defaults, and the optimizer/scheduler built from them
    opt = make_optimizer(net, RecipeConfig())
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["lr"] for g in opt.param_groups] == [8e-6, 8e-5, 8e-5, 5e-4, 5e-4]
    rule = torch.zeros(4, requires_grad=True)
    opt = make_optimizer(net, RecipeConfig(), extra_groups=[{"name": "rules", "params": [rule], "lr": 0.1}])
    assert opt.param_groups[-1]["name"] == "rules"
    sched = make_scheduler(opt, RecipeConfig(plateau_factor=0.5, plateau_patience=0))
    sched.step(1.0)
    sched.step(2.0)  # no improvement, patience 0: every rate halves
    assert [g["lr"] for g in opt.param_groups] == [4e-6, 4e-5, 4e-5, 2.5e-4, 2.5e-4, 0.05]


def test_class_weights_inverse_frequency_and_absent_classes():
    w = class_weights(torch.tensor([0, 0, 0, 1, 2, 2]), 4)
    assert w[3] == 0  # absent class: 0, never inf/nan
    expected = torch.tensor([1 / 3, 1.0, 1 / 2])
    torch.testing.assert_close(w[:3], expected / expected.mean())  # 1/count, mean 1 over present classes
    assert torch.isfinite(w).all()
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        class_weights([0, 3], 3)


def test_recipe_loss_is_weighted_smoothed_ce_of_both_heads():
    g = torch.Generator().manual_seed(0)
    out = {"emotion_logits": torch.randn(16, 7, generator=g), "sentiment_logits": torch.randn(16, 3, generator=g)}
    emo, sent = torch.randint(7, (16,), generator=g), torch.randint(3, (16,), generator=g)
    weights = {"emotion": class_weights(emo, 7), "sentiment": class_weights(sent, 3)}
    cfg = RecipeConfig(label_smoothing=0.2)
    loss = recipe_loss(out, emo, sent, weights, cfg)

    def smoothed(logits, y, w, eps):  # torch's definition, written out
        logp = logits.log_softmax(-1)
        nll = -(w[y] * logp.gather(1, y[:, None]).squeeze(1)).sum() / w[y].sum()
        uniform = -(logp * w).sum(-1).sum() / w[y].sum() / logits.shape[1]
        return (1 - eps) * nll + eps * uniform

    manual = (smoothed(out["emotion_logits"], emo, weights["emotion"], 0.2)
              + smoothed(out["sentiment_logits"], sent, weights["sentiment"], 0.2))
    torch.testing.assert_close(loss, manual)
    torch.testing.assert_close(loss, F.cross_entropy(out["emotion_logits"], emo, weight=weights["emotion"],
                                                     label_smoothing=0.2)
                               + F.cross_entropy(out["sentiment_logits"], sent, weight=weights["sentiment"],
                                                 label_smoothing=0.2))
    unsmoothed = recipe_loss(out, emo, sent, weights, RecipeConfig(label_smoothing=0.0))
    assert abs(float(loss - unsmoothed)) > 1e-3
    unweighted = recipe_loss(out, emo, sent, None, cfg)
    assert abs(float(loss - unweighted)) > 1e-3


def test_head_metrics_accuracy_and_weighted_precision():
    labels = torch.tensor([0, 0, 0, 1, 2, 2])
    pred = torch.tensor([0, 0, 1, 1, 2, 0])
    m = head_metrics(F.one_hot(pred, 3).float(), labels)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # precision per class: 0: 2/3, 1: 1/2, 2: 1/1 ; supports 3, 1, 2
    assert m["weighted_precision"] == pytest.approx((3 * 2 / 3 + 1 * 1 / 2 + 2 * 1) / 6)


def test_clipping_bounds_the_gradient_norm(fresh):
    net = fresh
    net.train()
    out = net.forward_features(torch.randn(8, net.feature_dim) * 100)
    (1e3 * out["emotion_logits"].pow(2).sum()).backward()
    params = [p for g in param_groups(net, RecipeConfig()) for p in g["params"]]
    before = clip_gradients(params, RecipeConfig(grad_clip_norm=0.5))
    after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
    assert before > 0.5 and float(after) == pytest.approx(0.5, rel=1e-4)
    net.zero_grad(set_to_none=True)
    net.eval()


def test_config_validation():
    with pytest.raises(RecipeConfigError, match="label_smoothing"):
        RecipeConfig(label_smoothing=1.0)
    with pytest.raises(RecipeConfigError, match="batch_size"):
        RecipeConfig(batch_size=1)
    with pytest.raises(RecipeConfigError, match="unknown multimodal recipe option"):
        RecipeConfig.from_dict({"lr": 1e-3})
    assert RecipeConfig.from_dict(RecipeConfig(seed=3).to_dict()) == RecipeConfig(seed=3)


# --------------------------------------------------------------------------- #
# training
# --------------------------------------------------------------------------- #
CFG = {"epochs": 8, "batch_size": 32}


def test_training_learns_both_heads_and_logs_to_tensorboard(fresh, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    net = fresh
    train, val = _synthetic(600, seed=1), _synthetic(300, seed=2)
    before = evaluate_fusion(net, val, None, RecipeConfig())
    lines = []
    with SummaryWriter(log_dir=str(tmp_path / "tb")) as tb:
        result = train_fusion(net, train, val, RecipeConfig(**CFG), tb=tb, log=lines.append)
    hist = result["history"]
    assert len(hist) == 8 and len(lines) == 8
    first, best = hist[0], result["best"]
    # chance: 1/7 and 1/3; majority class: about 0.25 and 0.5 (measured: 0.76 and 0.93)
    assert best["val/emotion/accuracy"] > before["emotion/accuracy"] + 0.3
    assert best["val/sentiment/accuracy"] > before["sentiment/accuracy"] + 0.3
    assert best["val/emotion/accuracy"] > 0.6 and best["val/sentiment/accuracy"] > 0.75
    assert best["val/emotion/weighted_precision"] > 0.6 and best["val/sentiment/weighted_precision"] > 0.75
    assert best["val/loss"] < first["val/loss"]
    # the kept weights are the best epoch's
    assert best["val/loss"] == min(h["val/loss"] for h in hist)
    weights = {k: torch.tensor(v) for k, v in result["class_weights"].items()}
    again = evaluate_fusion(net, val, weights, RecipeConfig(**CFG))
    assert again["loss"] == pytest.approx(best["val/loss"], rel=1e-5)
    assert not net.training

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for head in ("emotion", "sentiment"):
        for split in ("train", "val"):
            assert {f"multimodal/{split}/{head}/loss", f"multimodal/{split}/{head}/accuracy",
                    f"multimodal/{split}/{head}/weighted_precision"} <= tags
    assert {"multimodal/train/loss", "multimodal/val/loss", "multimodal/train/grad_norm",
            *(f"multimodal/lr/{g}" for g in GROUPS)} <= tags
    events = acc.Scalars("multimodal/val/emotion/accuracy")
    assert [e.step for e in events] == list(range(1, 9))
    assert events[-1].value == pytest.approx(hist[-1]["val/emotion/accuracy"])


def test_training_is_deterministic_in_the_seed(net, init_state):
    train, val = _synthetic(200, seed=3), _synthetic(100, seed=4)

    def run(seed):
        training._load_trainable_state(net, init_state)
        torch.manual_seed(seed + 99)  # the global RNG must not matter
        train_fusion(net, train, val, RecipeConfig(epochs=3, seed=seed), log=None)
        return training._trainable_state(net)

    a, b, c = run(0), run(0), run(1)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_training_clips_every_step(net, init_state, monkeypatch):
    training._load_trainable_state(net, init_state)
    seen = []
    real = recipe.clip_gradients

    def spy(params, cfg):
        params = list(params)
        before = real(params, cfg)
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
        seen.append((before, float(after)))
        return before

    monkeypatch.setattr(training, "clip_gradients", spy)  # the name train_fusion calls
    train, val = _synthetic(100, seed=5), _synthetic(50, seed=6)
    threads = torch.get_num_threads()
    hist = train_fusion(net, train, val, RecipeConfig(epochs=2, batch_size=32, grad_clip_norm=0.01), log=None)["history"]
    assert len(seen) == 2 * 4  # 100 = 3 * 32 + 4: four steps an epoch
    assert all(after <= 0.01 * (1 + 1e-4) for _, after in seen)
    assert any(before > 0.01 for before, _ in seen)
    assert hist[0]["train/grad_norm"] == pytest.approx(max(b for b, _ in seen[:4]))
    assert torch.get_num_threads() == threads  # cfg.torch_threads applied during training only


def test_bad_feature_sets_are_refused(fresh):
    feats, emo, sent = _synthetic(10, seed=0)
    with pytest.raises(ValueError, match=r"\[N, 1024\]"):
        train_fusion(fresh, (feats[:, :10], emo, sent), (feats, emo, sent), RecipeConfig(epochs=1), log=None)
    with pytest.raises(ValueError, match="sentiment labels"):
        train_fusion(fresh, (feats, emo, sent + 3), (feats, emo, sent), RecipeConfig(epochs=1), log=None)
    with pytest.raises(ValueError, match="10 feature rows"):
        train_fusion(fresh, (feats, emo[:5], sent), (feats, emo, sent), RecipeConfig(epochs=1), log=None)
