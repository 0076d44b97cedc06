"""The clip track's stage 0 and regimes: the fusion net under ``clip_sentiment.pl``.

    stage 0   the fusion net (text + video + audio) trained on the ``pretrain`` split with
              the source's recipe (:func:`neural.multimodal_training.train_fusion`): both heads,
              class-weighted cross-entropy with label smoothing, differential learning rates,
              gradient clipping, ReduceLROnPlateau, the best validation epoch kept
    frozen    the two heads' outputs computed once per clip and bound through ``logic.given.given_networks``;
              only the rule parameters learn (the polarity table and the sentiment sources)
    joint     rules and the fusion net's trainable parts (projections, fusion layer, heads)
              learn together through the logic's loss ``model.nll`` (-log P(label(clip,
              emotion, sentiment)): both labels), with the recipe's optimizer groups plus a
              rule-logit group, clipping, ReduceLROnPlateau on the validation NLL

Both regimes start from the same stage-0 net and the same rule initialisation
(``--rule-init``: the program's documented values, or uniform), train on the
``train`` split, pick nothing on ``test``, and are evaluated there. Everything
runs on the cached frozen-encoder features (:mod:`experiments.harness.clip_data`): the
encoders never run here and never change.

Choices worth knowing:

* the rule logits keep their learning rate in ``joint`` (the plateau scheduler
  anneals the network groups only), so the rules learn at the same rate in both
  regimes and the comparison is about the networks;
* the rule logits get no weight decay (it would pull them toward uniform);
* gradient clipping is over the network's parameters (the recipe's), not the rules';
* class weights (inverse emotion frequency, mean 1) weight each clip's NLL by its
  emotion label; they leave the polarity rows' optimum alone (each row only sees
  clips of its own emotion) and reweight the sentiment-source choice.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from neural.provenance import mark_trained

from experiments.harness.drift import parameter_drift, snapshot
from experiments.harness.clip_data import ClipExperimentData, ClipFeatures
from experiments.harness.config import HarnessConfig
from experiments.regimes import Regime
from experiments.metrics import classification_metrics, confusion, table_error
from logic.model import ClipInputs, LogicModel
from logic.given import given_networks
from logic.program import Program
from neural.multimodal import FusionHead, MultimodalEmotionHead, MultimodalFusionNet, MultimodalSentimentHead
from neural.multimodal_recipe import (
    RecipeConfig,
    class_weights,
    clip_gradients,
    head_metrics,
    make_optimizer,
    make_scheduler,
)
from neural.multimodal_training import train_fusion
from neural.common import EMOTIONS, SENTIMENTS

E, S = len(EMOTIONS), len(SENTIMENTS)
#: The fusion net's head that each of its predicates' networks is (``FusionHead(net, head)``).
HEADS = {MultimodalEmotionHead.registry_name: "emotion", MultimodalSentimentHead.registry_name: "sentiment"}


def logic_model(cfg: HarnessConfig, program: Program, networks: dict) -> LogicModel:
    """The program over ``networks``: the one place the clip track builds its logic model."""
    return LogicModel(program, networks, engine=cfg.engine, param_lr=cfg.rule_lr)


def bound_heads(program: Program, net: MultimodalFusionNet) -> dict[str, nn.Module]:
    """The program's networks bound to the fusion net's heads."""
    return {name: FusionHead(net, HEADS[name]) for nets in program.tensor_networks.values() for name in nets}


# --------------------------------------------------------------------------- #
# The fusion net's parts
# --------------------------------------------------------------------------- #
def trainable_modules(net: MultimodalFusionNet) -> nn.ModuleDict:
    """Every module with trainable parameters, by the name drift is reported under."""
    mods = nn.ModuleDict({
        "text_projection": net.text_encoder.projection,
        "video_fc": net.video_encoder.backbone.fc,
        "audio_projection": net.audio_encoder.projection,
        "fusion": net.fusion_layer,
        "emotion_head": net.emotion_classifier,
        "sentiment_head": net.sentiment_classifier,
    })
    covered = {id(p) for p in mods.parameters()}
    stray = [n for n, p in net.named_parameters() if p.requires_grad and id(p) not in covered]
    if stray:
        raise ValueError(f"trainable parameters outside the reported modules: {stray[:5]}")
    return mods


def reset_trainable(net: MultimodalFusionNet, seed: int) -> None:
    """Re-draw the trainable parts' initial weights from ``seed`` (the frozen encoders stay)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in trainable_modules(net).modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()


@torch.no_grad()
def frozen_fingerprint(net: MultimodalFusionNet) -> list[float]:
    """Sum and sum of squares (float64) of every tensor of the frozen encoders: equal
    before and after training unless something changed them."""
    out = []
    for m in net.frozen_modules():
        for t in list(m.parameters()) + list(m.buffers()):
            t = t.detach().double()
            out += [float(t.sum()), float((t * t).sum())]
    return out


# --------------------------------------------------------------------------- #
# Evaluation
# --------------------------------------------------------------------------- #
def clip_metrics(emotion: torch.Tensor, sentiment: torch.Tensor, joint: torch.Tensor,
                 labels: torch.Tensor, sentiments: torch.Tensor) -> dict:
    """Both heads' metrics and the joint NLL of ``emotion [N, 7]``, ``sentiment [N, 3]``,
    ``joint [N, 7, 3]`` distributions against the clips' labels."""
    emo = classification_metrics(emotion, labels, E)
    emo["weighted_precision"] = head_metrics(emotion, labels)["weighted_precision"]
    sen = classification_metrics(sentiment, sentiments, S)
    sen["weighted_precision"] = head_metrics(sentiment, sentiments)["weighted_precision"]
    at = joint[torch.arange(len(labels)), labels, sentiments].double().clamp_min(1e-12)
    return {
        "metrics": emo,
        "sentiment_metrics": sen,
        "joint_nll": float(-at.log().mean()),
        "confusion": confusion(emotion, labels, E).tolist(),
        "sentiment_confusion": confusion(sentiment, sentiments, S).tolist(),
    }


@torch.no_grad()
def head_outputs(net: MultimodalFusionNet, f: ClipFeatures, heads=("emotion", "sentiment"),
                 batch_size: int = 1024) -> torch.Tensor:
    """The net's ``heads`` on cached features, in eval mode, side by side: [N, 7 + 3] = [emotion | sentiment]."""
    net.eval()
    parts = []
    for i in range(0, len(f), batch_size):
        out = net.forward_features(f.feats[i:i + batch_size])  # [b, F] -> {emotion [b, 7], sentiment [b, 3]}
        parts.append(torch.cat([out[h] for h in heads], 1))
    return torch.cat(parts)


def evaluate_net(net: MultimodalFusionNet, f: ClipFeatures) -> dict:
    """The fusion net alone (no logic): its heads are independent, P(E, S) = P(E) P(S)."""
    x = head_outputs(net, f)
    emotion, sentiment = x[:, :E], x[:, E:]
    return clip_metrics(emotion, sentiment, emotion[:, :, None] * sentiment[:, None, :], f.labels, f.sentiments)


def _inputs(x: torch.Tensor, f: ClipFeatures, idx) -> ClipInputs:
    ids = [f.sample_ids[i] for i in idx.tolist()] if isinstance(idx, torch.Tensor) else f.sample_ids[idx]
    return ClipInputs(ids, {"clip": x[idx]}, f.labels[idx], f.sentiments[idx])


@torch.no_grad()
def evaluate_logic(model: LogicModel, x: torch.Tensor, f: ClipFeatures, batch_size: int = 512) -> dict:
    """The program's P(emotion), P(sentiment) and P(emotion, sentiment) on ``x`` (what the
    bound networks read: head outputs or features, [N, ...]) against ``f``'s labels."""
    model.eval()
    em, se, jo = [], [], []
    for i in range(0, len(f), batch_size):
        out = model(_inputs(x, f, slice(i, i + batch_size)))
        em.append(out.emotion.float())
        se.append(out.sentiment.float())
        jo.append(out.joint.float())
    return clip_metrics(torch.cat(em), torch.cat(se), torch.cat(jo), f.labels, f.sentiments)


def polarity_errors(table: dict, data: ClipExperimentData, feats: dict[str, ClipFeatures]) -> dict:
    """Error of a polarity table against the generator's (synthetic clips) and against the
    observed table of the clips trained on (``train`` split): ``{reference: {max_abs, mean_abs}}``."""
    out = {}
    if data.truth_polarity:
        out["generator"] = table_error(table, data.truth_polarity)
    out["empirical_train"] = table_error(table, feats["train"].polarity_table())
    return out


# --------------------------------------------------------------------------- #
# Stage 0
# --------------------------------------------------------------------------- #
@dataclass
class FusionStage0:
    """The stage-0 fusion net of a seed and how good it is on its own."""

    net: MultimodalFusionNet
    #: validation metrics per head, by the program's network names (the report's stage-0 table)
    metrics: dict = field(default_factory=dict)
    #: the net alone on test (:func:`evaluate_net`): the no-logic reference
    test: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)  # best epoch, seconds, recipe


def stage0_metrics(net: MultimodalFusionNet, feats: dict[str, ClipFeatures]) -> tuple[dict, dict]:
    val, test = evaluate_net(net, feats["val"]), evaluate_net(net, feats["test"])
    return {MultimodalEmotionHead.registry_name: val["metrics"],
            MultimodalSentimentHead.registry_name: val["sentiment_metrics"]}, test


def train_clip_stage0(cfg: HarnessConfig, feats: dict[str, ClipFeatures], base_net: MultimodalFusionNet,
                      seed: int, log=print, tb=None) -> FusionStage0:
    """The recipe on the pretrain split (validation split for the plateau scheduler and the
    best epoch), from trainable weights drawn with ``seed`` on a copy of ``base_net``."""
    net = copy.deepcopy(base_net)
    reset_trainable(net, seed)
    rcfg = RecipeConfig(epochs=cfg.stage0_epochs, seed=seed, class_weighted=cfg.class_weights)
    out = train_fusion(net, feats["pretrain"].triple(), feats["val"].triple(), rcfg, tb=tb, log=None,
                       tb_prefix=f"stage0/seed{seed}")
    mark_trained(net, "trained in stage 0", cfg.dataset)
    metrics, test = stage0_metrics(net, feats)
    info = {"best_epoch": out["best_epoch"], "epochs": cfg.stage0_epochs, "seconds": out["seconds"],
            "n_pretrain": len(feats["pretrain"]), "recipe": rcfg.to_dict()}
    log(f"[seed {seed}] stage 0 (fusion net, {cfg.stage0_epochs} epochs, best {out['best_epoch']}) in "
        f"{out['seconds']:.1f} s: val emotion acc {metrics['multimodal_emotion']['accuracy']:.3f}, "
        f"sentiment acc {metrics['multimodal_sentiment']['accuracy']:.3f}")
    return FusionStage0(net, metrics, test, info)


# --------------------------------------------------------------------------- #
# Training through the logic
# --------------------------------------------------------------------------- #
@dataclass
class ClipRegimeResult:
    metrics: dict  # emotion: accuracy, macro_f1, nll, ece, weighted_precision, n (test)
    sentiment_metrics: dict  # sentiment: the same (test)
    joint_nll: float  # mean -log P(emotion = label, sentiment = label) (test)
    polarity_table: dict
    sentiment_sources: dict
    polarity_error: dict  # {"generator"?, "empirical_train": {max_abs, mean_abs}}
    rule_table: dict
    history: list = field(default_factory=list)
    drift: dict | None = None
    frozen_encoders_unchanged: bool | None = None
    confusion: list | None = None
    sentiment_confusion: list | None = None
    wall_time_s: float = 0.0
    model: LogicModel | None = None
    net: MultimodalFusionNet | None = None
    net_trained: bool = False
    provenance: dict | None = None  # per source: where the fusion net's knowledge came from (set by the harness)

    def to_json(self) -> dict:
        keys = ("metrics", "sentiment_metrics", "joint_nll", "polarity_table", "sentiment_sources", "polarity_error",
                "rule_table", "history", "drift", "frozen_encoders_unchanged", "confusion", "sentiment_confusion",
                "wall_time_s", "provenance")
        return {k: getattr(self, k) for k in keys}


def _batch_indices(n: int, batch_size: int, gen: torch.Generator, min_size: int) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=gen)
    return [idx for idx in order.split(batch_size) if len(idx) >= min_size]


def train_clip_logic(name: str, cfg: HarnessConfig, data: ClipExperimentData, feats: dict[str, ClipFeatures],
                     x: dict[str, torch.Tensor], model: LogicModel, net: MultimodalFusionNet, seed: int,
                     train_net: bool, log=print, tb=None) -> ClipRegimeResult:
    """Train ``model`` on ``x["train"]`` (what its networks read) for ``cfg.epochs`` epochs;
    the rules always, the fusion net's trainable parts when ``train_net``."""
    t0 = time.time()
    torch.manual_seed(seed)  # dropout
    model.reset_rules(cfg.rule_init)
    trainable = trainable_modules(net)
    before, frozen_before = snapshot(trainable), frozen_fingerprint(net)
    train = feats["train"]
    weights = class_weights(train.labels, E) if cfg.class_weights else None
    rcfg = RecipeConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, seed=seed, class_weighted=cfg.class_weights)
    opt, sched, rule_opt = None, None, None
    rule_params = model.rule_parameters()  # empty: the engine trains its rules with its own optimizer
    if train_net and rule_params:
        rules = {"name": "rules", "params": rule_params, "lr": cfg.rule_lr, "weight_decay": 0.0}
        opt = make_optimizer(net, rcfg, extra_groups=[rules])
    elif train_net:
        opt = make_optimizer(net, rcfg)
    if opt is None or not rule_params:
        rule_opt = model.rule_optimizer(cfg.rule_lr)  # deepproblog: its own SGD on the t(_) parameters
    if opt is not None:
        sched = make_scheduler(opt, rcfg)
        for i, g in enumerate(opt.param_groups):
            if g.get("name") == "rules":
                sched.min_lrs[i] = g["lr"]  # the plateau scheduler anneals the network groups only
    net_params = [p for p in trainable.parameters()]
    gen = torch.Generator().manual_seed(seed)
    history = []
    threads = torch.get_num_threads()
    if rcfg.torch_threads is not None:
        torch.set_num_threads(rcfg.torch_threads)  # the recipe's choice: small batches, one thread
    try:
        for epoch in range(1, cfg.epochs + 1):
            te = time.time()
            model.train()
            total, n, grad_norm = 0.0, 0, 0.0
            for idx in _batch_indices(len(train), cfg.batch_size, gen, 2 if train_net else 1):
                for o in (opt, rule_opt):
                    if o is not None:
                        o.zero_grad()
                loss = model.nll(_inputs(x["train"], train, idx), weights)
                loss.backward()
                if train_net:
                    grad_norm = max(grad_norm, clip_gradients(net_params, rcfg))
                for o in (opt, rule_opt):
                    if o is not None:
                        o.step()
                total += loss.item() * len(idx)
                n += len(idx)
            val = evaluate_logic(model, x["val"], feats["val"])
            if sched is not None:
                sched.step(val["joint_nll"])
            row = {"epoch": epoch, "train_loss": total / max(n, 1), "val_nll": val["joint_nll"],
                   "val_accuracy": val["metrics"]["accuracy"],
                   "val_emotion_weighted_precision": val["metrics"]["weighted_precision"],
                   "val_sentiment_accuracy": val["sentiment_metrics"]["accuracy"],
                   "val_sentiment_weighted_precision": val["sentiment_metrics"]["weighted_precision"],
                   "source_probs": {"sentiment_source": model.sentiment_sources()},
                   "polarity": model.polarity_table()}
            if train_net:
                row["grad_norm"] = grad_norm
                row["lr"] = {g.get("name", str(i)): g["lr"] for i, g in enumerate(opt.param_groups)}
            history.append(row)
            if tb is not None:
                tb.add_dict(f"{name}/seed{seed}", {
                    "train/loss": row["train_loss"], "val/nll": val["joint_nll"],
                    "val/emotion/accuracy": row["val_accuracy"],
                    "val/emotion/weighted_precision": row["val_emotion_weighted_precision"],
                    "val/sentiment/accuracy": row["val_sentiment_accuracy"],
                    "val/sentiment/weighted_precision": row["val_sentiment_weighted_precision"],
                    "rules/p_head": row["source_probs"]["sentiment_source"].get("head"),
                    **({"train/grad_norm": grad_norm} if train_net else {}),
                }, epoch)
            if epoch == 1 or epoch == cfg.epochs or epoch % 10 == 0:
                log(f"[{name} seed {seed}] epoch {epoch}/{cfg.epochs}  loss {row['train_loss']:.4f}  val nll "
                    f"{val['joint_nll']:.4f}  emotion acc {row['val_accuracy']:.3f}  sentiment acc "
                    f"{row['val_sentiment_accuracy']:.3f}  ({time.time() - te:.2f} s)")
    finally:
        torch.set_num_threads(threads)
    test = evaluate_logic(model, x["test"], feats["test"])
    table = model.polarity_table()
    net.eval()
    if train_net:
        mark_trained(net, f"fine-tuned in {name}", cfg.dataset)
    return ClipRegimeResult(
        metrics=test["metrics"],
        sentiment_metrics=test["sentiment_metrics"],
        joint_nll=test["joint_nll"],
        polarity_table=table,
        sentiment_sources=model.sentiment_sources(),
        polarity_error=polarity_errors(table, data, feats),
        rule_table=model.rule_table(),
        history=history,
        drift=parameter_drift(before, snapshot(trainable), group_depth=1),
        frozen_encoders_unchanged=frozen_fingerprint(net) == frozen_before,
        confusion=test["confusion"],
        sentiment_confusion=test["sentiment_confusion"],
        wall_time_s=time.time() - t0,
        model=model,
        net=net,
        net_trained=train_net,
    )


def run_regime(regime: Regime, cfg: HarnessConfig, data: ClipExperimentData, feats: dict[str, ClipFeatures],
               program: Program, stage0: FusionStage0, seed: int, log=print, tb=None) -> ClipRegimeResult:
    """One regime of the clip track on a seed's own copy of the stage-0 net.

    Networks frozen: only the rules learn, on the stage-0 heads' outputs (computed once per
    clip). Networks trained: rules and the fusion net's trainable parts, through the logic
    (both heads on one shared net), reading the cached features."""
    splits = ("train", "val", "test")
    net = stage0.net
    if regime.train_networks:
        model = logic_model(cfg, program, bound_heads(program, net))
        x = {s: feats[s].feats for s in splits}
    else:
        heads = [HEADS[n] for nets in program.tensor_networks.values() for n in nets]
        x = {s: head_outputs(net, feats[s], heads) for s in splits}
        # the heads' outputs side by side, in the source table's columns (head_outputs keeps that order)
        model = logic_model(cfg, program, given_networks(program))
    return train_clip_logic(regime.name, cfg, data, feats, x, model, net, seed, train_net=regime.train_networks,
                            log=log, tb=tb)
