"""Stage 0: each neural predicate trained on its own supervision (pretrain split).

- scene head (Scene2EmotionNet) on cached scene features, target: the scene's own
  emotion when the data set records it (synthetic), else the image label;
- face net (mini-XCEPTION): the real FER2013 weights, fine-tuned on cached face
  crops with per-face emotions when the data set records them (synthetic), kept
  as they are otherwise; on request a random init trained on those crops
  (``--face-init scratch``) or a predicate from ``emologic train-face``;
- valence/arousal regressor (only for programs with a VA source) on the
  valence/arousal annotations (:mod:`experiments.harness.va_source`);
- every other network of the program that reads a registered cached feature
  (:mod:`pipelines.feature_registry`, e.g. a plug-in's): built with
  ``get_network(name)`` and trained like the scene head, as a classifier of the
  image's label on its feature (:func:`feature_networks`).

Every regime of a seed starts from the same stage-0 networks.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from experiments.harness.config import HarnessConfig
from experiments.harness.image_data import ExperimentData
from experiments.harness.fitting import fit_classifier, recalibrate_batchnorm, train_feature_head
from experiments.metrics import classification_metrics
from experiments.runs import atomic_write_json
from neural.common import EMOTIONS, FACE_SLOTS, UserError, emotion_index
from neural.face import FaceEmotionNet
from neural.provenance import mark_trained
from neural.registry import get_network, load_network, save_network
from neural.scene import Scene2EmotionNet, SceneBackbone
from neural.va import VARegressor


@dataclass
class Predicates:
    """The networks of one seed: what the program's ``nn(...)`` atoms are bound to."""

    scene_head: nn.Module
    face_net: nn.Module
    va_regressor: nn.Module | None = None
    scene_layer4: nn.Module | None = None  # the scene backbone, when layer4 is trained
    face_source: str = "stage0"  # fer2013 | fer2013+stage0 | stage0 | <--face-weights path>
    metrics: dict = field(default_factory=dict)
    #: the program's networks on registered features (:func:`feature_networks`), by network name
    feature_nets: dict[str, nn.Module] = field(default_factory=dict)

    def bound(self) -> dict[str, nn.Module]:
        """The predicates stage 0 trains, by the network name a program's ``nn(...)`` binds
        (the face predicate plays the face network's part whatever its architecture)."""
        return {Scene2EmotionNet.registry_name: self.scene_head, FaceEmotionNet.registry_name: self.face_net,
                **self.feature_nets}

    def trainable(self) -> nn.ModuleDict:
        """The networks the logic can train, by the name drift is reported under."""
        mods = dict(self.bound())
        if self.va_regressor is not None:
            mods[VARegressor.registry_name] = self.va_regressor
        if self.scene_layer4 is not None:
            mods[SceneBackbone.registry_name] = self.scene_layer4
        return nn.ModuleDict(mods)


def feature_networks(program) -> dict[str, str]:
    """``{network: feature}`` for every network of ``program`` that reads a registered cached
    feature (its source's ``feature``, :mod:`logic.sources`): stage 0 builds it with
    ``get_network`` and trains it as a classifier of the image's label on that feature."""
    from pipelines.feature_registry import is_registered_feature

    return {net: src.feature for src in program.sources.values() if is_registered_feature(src.feature)
            for net in src.networks}


def needs_va(program) -> bool:
    """Whether ``program`` reads the V/A regressor: it binds networks stage 0 does not train
    (the regressor's valence and arousal bin adapters)."""
    trained = {Scene2EmotionNet.registry_name, FaceEmotionNet.registry_name, *feature_networks(program)}
    return any(n not in trained for n in program.networks)


def train_feature_networks(cfg: HarnessConfig, data: ExperimentData, program, seed: int,
                           metrics: dict) -> dict[str, nn.Module]:
    """Stage 0 of the program's networks on registered features (:func:`feature_networks`):
    each a fresh ``get_network(name)`` trained as the scene head is (:func:`train_feature_head`),
    on the image labels; their validation metrics go into ``metrics``."""
    pre, val = data.split("pretrain"), data.split("val")
    out = {}
    for name, feature in feature_networks(program).items():
        if tuple(program.domain_of(name)) != tuple(EMOTIONS):
            raise UserError(f"network {name} reads the registered feature {feature!r}, so stage 0 trains it on the "
                            f"image labels; its nn(...) domain must be the emotions ({', '.join(EMOTIONS)})")
        torch.manual_seed(seed)
        net = get_network(name)
        metrics[name] = train_feature_head(net, pre, val, feature, pre.labels(), val.labels(), cfg, seed)
        out[name] = net
    return out


def _flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random horizontal flips of face crops [B, 1, H, W] (expressions are symmetric)."""
    flip = (torch.rand(len(x), generator=g) < 0.5).to(x.device)  # drawn on the CPU: the same flips on any device
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def scene_targets(split, ids) -> torch.Tensor:
    """The scene's own emotion where recorded (synthetic), else the image label."""
    out = []
    for sid, y in zip(ids, split.labels(ids).tolist()):
        ann = split.annotations(sid)
        out.append(emotion_index(ann["scene_emotion"]) if "scene_emotion" in ann else y)
    return torch.tensor(out)


def face_examples(split, ids=None):
    """All face crops with a recorded per-face emotion: ([F, 1, 64, 64], [F])."""
    ids = split.sample_ids if ids is None else ids
    crops, labels = [], []
    for start in range(0, len(ids), 256):
        batch = split.batch(ids[start:start + 256])
        emos = batch.meta.get("face_emotions")
        if emos is None:
            return None
        for j, slot in enumerate(FACE_SLOTS):
            present = batch.face_mask[:, j]
            if present.any():
                crops.append(batch.tensors[slot][present])
                labels += [emotion_index(e[j]) for e, p in zip(emos, present.tolist()) if p]
    if not crops:
        return None
    return torch.cat(crops), torch.tensor(labels)


def stage0_face_net(cfg: HarnessConfig, pre, seed: int) -> tuple[nn.Module, str]:
    """The stage-0 face predicate and where it came from (``fer2013``, ``fer2013+stage0``,
    ``stage0`` or the ``--face-weights`` path).

    - ``--face-weights DIR``: that predicate, as it is;
    - ``--face-init fer2013`` (default): the real FER2013 weights, fine-tuned on the
      pretrain split's labelled faces where the data set has them (synthetic), kept
      as they are otherwise. The fine-tuning keeps what FER2013 knows: BatchNorm
      statistics frozen at FER2013's, a small learning rate (``--face-lr``);
    - ``--face-init scratch``: a random init trained on the labelled faces.
    """
    train_faces = face_examples(pre)
    dataset = cfg.dataset
    if cfg.face_weights:
        from neural.facetrain.backbones import load_face_predicate

        return load_face_predicate(cfg.face_weights), str(cfg.face_weights)
    if cfg.face_init == "fer2013":
        from neural.fer_weights import pretrained_face_net

        face_net = pretrained_face_net()
        if train_faces is None:
            return face_net, "fer2013"
        crops, labels = train_faces
        fit_classifier(face_net, crops, labels, cfg.stage0_epochs, cfg.face_lr, 64, seed, face_net.logits,
                        augment=_flip, freeze_bn=True, device=cfg.device)
        mark_trained(face_net, "fine-tuned in stage 0", dataset)
        return face_net, "fer2013+stage0"
    if train_faces is None:
        raise UserError(f"--face-init scratch needs faces labelled with their own emotion in the pretrain split; "
                        f"the {dataset} data set has none (use --face-init fer2013 or --face-weights DIR)")
    torch.manual_seed(seed)
    face_net = get_network(FaceEmotionNet.registry_name, bn_momentum=0.1)  # from scratch: torch's usual momentum
    crops, labels = train_faces
    fit_classifier(face_net, crops, labels, cfg.stage0_epochs, cfg.stage0_lr, 64, seed, face_net.logits,
                    augment=_flip, device=cfg.device)
    recalibrate_batchnorm(face_net, crops)
    mark_trained(face_net, "trained from scratch in stage 0", dataset)
    return face_net, "stage0"


def train_stage0(cfg: HarnessConfig, data: ExperimentData, seed: int, needs_va: bool, log=print,
                 program=None) -> Predicates:
    """The stage-0 networks of ``seed``; with ``program``, also its networks on registered features."""
    pre, val = data.split("pretrain"), data.split("val")
    t0 = time.time()
    metrics: dict = {}

    # -- scene head -----------------------------------------------------------
    torch.manual_seed(seed)
    scene_head = get_network(Scene2EmotionNet.registry_name)
    metrics[scene_head.registry_name] = train_feature_head(
        scene_head, pre, val, "scene", scene_targets(pre, pre.sample_ids), scene_targets(val, val.sample_ids), cfg, seed)

    # -- face net --------------------------------------------------------------
    face_net, face_source = stage0_face_net(cfg, pre, seed)
    val_faces = face_examples(val)
    if val_faces is not None:
        with torch.no_grad():
            metrics[FaceEmotionNet.registry_name] = classification_metrics(face_net(val_faces[0]), val_faces[1], len(EMOTIONS))

    # -- valence/arousal -------------------------------------------------------
    va = None
    if needs_va:
        from experiments.harness.va_source import train_va_stage0

        va, metrics[VARegressor.registry_name] = train_va_stage0(cfg, data, seed, log=log)

    # -- the scene backbone's last block, when the joint regime may train it ----
    layer4 = None
    if cfg.unfreeze_layer4:
        layer4 = get_network(SceneBackbone.registry_name, weights=data.pipeline.scene_weights, seed=data.pipeline.scene_seed,
                             unfreeze_layer4=True, layer4_lr=cfg.layer4_lr)
        layer4.train(False)

    # -- the program's networks on registered features (a plug-in's) -----------
    feature_nets = train_feature_networks(cfg, data, program, seed, metrics) if program is not None else {}

    face_metrics = metrics.get(FaceEmotionNet.registry_name)
    log(f"[seed {seed}] stage 0 in {time.time() - t0:.1f} s: scene head val acc "
        f"{metrics[scene_head.registry_name]['accuracy']:.3f}"
        + (f", face net ({face_source}) val acc {face_metrics['accuracy']:.3f}" if face_metrics else "")
        + "".join(f", {name} val acc {metrics[name]['accuracy']:.3f}" for name in feature_nets))
    return Predicates(scene_head, face_net, va, layer4, face_source, metrics, feature_nets)


def save_predicates(pred: Predicates, directory: Path) -> None:
    for name, net in pred.bound().items():
        if hasattr(net, "registry_name"):  # an external face predicate is reloaded from where it came from
            save_network(net, directory / name)
    for net in (pred.va_regressor, pred.scene_layer4):
        if net is not None:
            save_network(net, directory / net.registry_name)


def load_predicates(directory: Path, face_source: str, feature_nets=()) -> Predicates:
    """The networks :func:`save_predicates` wrote; ``feature_nets``: the names of the program's
    networks on registered features (:func:`feature_networks`) to load too."""
    def opt(name):
        return load_network(directory / name) if (directory / name).is_dir() else None

    face = opt(FaceEmotionNet.registry_name)
    if face is None:  # an external face predicate: reload it from where it came from
        if face_source == "fer2013":
            from neural.fer_weights import pretrained_face_net

            face = pretrained_face_net()
        else:
            from neural.facetrain.backbones import load_face_predicate

            face = load_face_predicate(face_source)
    layer4 = opt(SceneBackbone.registry_name)
    for m in (face, layer4):
        if m is not None:
            m.eval()
    return Predicates(load_network(directory / Scene2EmotionNet.registry_name).eval(), face,
                      opt(VARegressor.registry_name), layer4, face_source,
                      feature_nets={name: load_network(directory / name).eval() for name in feature_nets})


# --------------------------------------------------------------------------- #
# Kept in the run and beside the cache
# --------------------------------------------------------------------------- #
#: bumped when stage-0 training changes, so older reusable stage-0 networks are not reused
STAGE0_VERSION = 4
STAGE0_KEYS = ("stage0_epochs", "head_epochs", "stage0_lr", "face_lr", "face_weights", "face_init", "unfreeze_layer4",
               "layer4_lr")


def load_stage0(directory: Path) -> Predicates | None:
    marker = directory / "stage0.json"
    if not marker.is_file():
        return None
    info = json.loads(marker.read_text())
    pred = load_predicates(directory, info["face_source"], info.get("feature_networks", ()))
    pred.metrics = info["metrics"]
    return pred


def save_stage0(pred: Predicates, directory: Path) -> None:
    save_predicates(pred, directory)
    atomic_write_json(directory / "stage0.json", {"face_source": pred.face_source, "metrics": pred.metrics,
                                                  "feature_networks": sorted(pred.feature_nets)})


def stage0_key(cfg: HarnessConfig, data, seed: int, va: bool, feature_nets=()) -> dict:
    """What stage 0 of ``seed`` depends on, and so what reusing it requires to be equal:
    the content it was trained and selected on (sample ids, labels, image hashes and
    annotations of the pretrain and val splits -- not where the data set lives), the
    pipeline that made the features and the stage-0 settings. With a V/A source the
    test split too: stage 0 records the V/A regressor's test metrics. ``feature_nets``: the
    program's networks on registered features (only in the key when there are some, so the
    keys of programs without them stay those of earlier runs)."""
    splits = ("pretrain", "val", "test") if va else ("pretrain", "val")
    return {k: getattr(cfg, k) for k in STAGE0_KEYS} | {
        "seed": seed, "va": va, "version": STAGE0_VERSION,
        "pipeline": data.pipeline.semantic_dict(),
        "data": {s: data.split(s).content_digest() for s in splits},
    } | ({"feature_networks": sorted(feature_nets)} if feature_nets else {})
