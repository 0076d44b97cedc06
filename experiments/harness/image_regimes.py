"""The image track's regimes (:mod:`experiments.regimes`) and their evaluation.

Every logic regime is :func:`train_logic` with the regime's ``train_rules`` and
``train_networks``; ``late_fusion`` (no logic) is :func:`late_fusion`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cache.batch import Batch
from experiments.harness.drift import parameter_drift, snapshot
from experiments.harness.binding import Binding, FrozenBinding
from experiments.harness.config import HarnessConfig
from experiments.harness.image_data import ExperimentData
from experiments.regimes import Regime
from experiments.metrics import (
    classification_metrics,
    confusion,
    dec_factor_agreement,
    posterior_agreement,
    source_table_error,
)
from experiments.harness.fitting import train_mode
from experiments.harness.image_stage0 import Predicates
from logic.model import LogicModel
from logic.program import Program
from neural.provenance import mark_trained
from neural.late_fusion import LateFusionNet
from neural.registry import get_network
from neural.common import EMOTIONS, FACE_SLOTS

@dataclass
class RegimeResult:
    metrics: dict
    history: list = field(default_factory=list)
    source_probs: dict | None = None
    rule_table: dict | None = None
    source_table_mae: float | None = None
    posterior_agreement: float | None = None
    dec_factor_agreement: float | None = None
    drift: dict | None = None
    confusion: list | None = None
    wall_time_s: float = 0.0
    model: nn.Module | None = None  # LogicModel, or the late-fusion network
    provenance: dict | None = None  # per source: where its networks' knowledge came from (set by the harness)
    va: dict | None = None  # programs with a V/A source: experiments.harness.va_source.regime_va_results

    def to_json(self) -> dict:
        return {
            "metrics": self.metrics,
            "history": self.history,
            "source_probs": self.source_probs,
            "rule_table": self.rule_table,
            "source_table_mae": self.source_table_mae,
            "posterior_agreement": self.posterior_agreement,
            "dec_factor_agreement": self.dec_factor_agreement,
            "drift": self.drift,
            "confusion": self.confusion,
            "wall_time_s": self.wall_time_s,
            "provenance": self.provenance,
            "va": self.va,
        }


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------
def evaluate_logic(model: LogicModel, binding, split, truth_table: dict | None, explain: bool = True,
                   batch_size: int = 512) -> dict:
    probs, labels, post_src, true_src, post_dicts, dec = [], [], [], [], [], []
    model.eval()
    device = next(model.parameters(), torch.zeros(0)).device  # the networks' (and rule parameters') device
    with torch.no_grad():
        for batch in split.batches(batch_size):
            out = model(binding.prepare(batch.to(device)), explain=explain)
            out.probs = out.probs.float().cpu()
            out.posterior = None if out.posterior is None else out.posterior.cpu()
            probs.append(out.probs)
            labels.append(batch.labels)
            if explain:
                rows = torch.arange(len(batch))
                at_label = out.posterior[rows, :, batch.labels]  # [B, S] P(source | image, observed emotion)
                best = at_label.argmax(1).tolist()
                post_src += [model.sources[i] for i in best]
                post_dicts += [dict(zip(model.sources, r)) for r in at_label.tolist()]
                true_src += batch.meta.get("true_source", [None] * len(batch))
                dec += batch.meta.get("dec_factors", [None] * len(batch))
    p, y = torch.cat(probs), torch.cat(labels)
    result = {"metrics": classification_metrics(p, y, len(EMOTIONS)), "confusion": confusion(p, y, len(EMOTIONS)).tolist()}
    if explain and all(t is not None for t in true_src):
        result["posterior_agreement"] = posterior_agreement(post_src, true_src)
    if explain and any(d for d in dec):
        result["dec_factor_agreement"] = dec_factor_agreement(post_dicts, dec)
    return result


def truth_for_program(truth_table: dict, probs: dict) -> dict:
    """The generator's P(source | context) restricted to the sources the program has
    in each context, renormalised: what a program without some source (e.g.
    context_selection, no V/A source) can at best learn, since the labels that
    source decided look like noise to it. Contexts with one such source are left out."""
    out = {}
    for ctx, row in truth_table.items():
        if ctx not in probs:
            continue
        kept = {s: p for s, p in row.items() if s in probs[ctx] and p > 0}
        total = sum(kept.values())
        if len(kept) > 1 and total > 0:
            out[ctx] = {s: p / total for s, p in kept.items()}
    return out


def learned_sources(model: LogicModel, truth_table: dict | None) -> tuple[dict, float | None]:
    probs = model.source_probabilities()
    mae = None
    if truth_table:
        mae = source_table_error(probs, truth_for_program(truth_table, probs))["mae"]
    return probs, mae


def class_weights_for(split) -> torch.Tensor:
    counts = torch.bincount(split.labels()[split.labels() >= 0], minlength=len(EMOTIONS)).double()
    w = counts.sum() / (len(EMOTIONS) * counts.clamp_min(1))
    return w


# ---------------------------------------------------------------------------
# Training through the logic
# ---------------------------------------------------------------------------
def train_logic(
    name: str,
    cfg: HarnessConfig,
    data: ExperimentData,
    program: Program,
    pred: Predicates,
    seed: int,
    train_rules: bool,
    train_networks: bool,
    log=print,
    tb=None,
) -> RegimeResult:
    t0 = time.time()
    torch.manual_seed(seed)
    binding = Binding(program, pred)
    uses_va = binding.uses_va
    if not train_networks:
        binding = FrozenBinding(binding, {s: data.split(s) for s in ("train", "val", "test")})
    model = LogicModel(program, binding.networks, engine=cfg.engine, face_size_threshold=cfg.face_size_threshold,
                       param_lr=cfg.rule_lr)
    model.reset_rules(cfg.rule_init or "uniform")  # every regime starts from the same rules (default uniform trust)
    trainable = pred.trainable()
    before = snapshot(trainable)
    # networks and rule parameters on the device; handed back on the CPU (saved, compared, shared)
    device = torch.device(cfg.device)
    model.to(device)
    if pred.va_regressor is not None:
        pred.va_regressor.to(device)
    if device.type != "cpu":
        log(f"[{name} seed {seed}] networks on {device}; {model.engine_placement}")
    rule_opt = model.rule_optimizer(cfg.rule_lr) if train_rules else None
    net_opt = None
    if train_networks:
        groups = [{"params": [p for p in pred.scene_head.parameters()], "lr": cfg.net_lr},
                  {"params": [p for p in pred.face_net.parameters() if p.requires_grad], "lr": cfg.net_lr}]
        if pred.scene_layer4 is not None:
            groups += pred.scene_layer4.param_groups()
        if binding.uses_va:
            groups += pred.va_regressor.param_groups(cfg.net_lr)  # the V/A heads, through the bin mass
        if pred.feature_nets:  # the program's networks on registered features (a plug-in's)
            groups.append({"params": [p for net in pred.feature_nets.values() for p in net.parameters()],
                           "lr": cfg.net_lr})
        for g in groups:
            for p in g["params"]:
                p.requires_grad_(True)
        net_opt = torch.optim.Adam(groups)
    else:
        for p in trainable.parameters():
            p.requires_grad_(False)
    weights = class_weights_for(data.split("train")).to(device) if cfg.class_weights else None
    train_split, val_split = data.split("train"), data.split("val")
    history = []
    for epoch in range(1, cfg.epochs + 1):
        te = time.time()
        model.train()
        for m in trainable.values():
            train_mode(m, train_networks)
        total, n = 0.0, 0
        batches = train_split.batches(cfg.batch_size, shuffle=True, seed=seed * 1000 + epoch)
        n_batches = (len(train_split) + cfg.batch_size - 1) // cfg.batch_size
        for batch in tqdm(batches, total=n_batches, desc=f"{name} s{seed} e{epoch}", leave=False,
                          disable=not cfg.progress):
            for opt in (rule_opt, net_opt):
                if opt is not None:
                    opt.zero_grad()
            loss = model.nll(binding.prepare(batch.to(device)), weights)
            loss.backward()
            for opt in (rule_opt, net_opt):
                if opt is not None:
                    opt.step()
            total += loss.item() * len(batch)
            n += len(batch)
        val = evaluate_logic(model, binding, val_split, None, explain=False)["metrics"]
        row = {"epoch": epoch, "train_loss": total / n, "val_accuracy": val["accuracy"], "val_nll": val["nll"],
               "source_probs": model.source_probabilities()}
        history.append(row)
        if tb is not None:
            tb.add_dict(f"{name}/seed{seed}", {"train_loss": row["train_loss"], "val_accuracy": val["accuracy"],
                                               "val_nll": val["nll"]}, epoch)
        log(f"[{name} seed {seed}] epoch {epoch}/{cfg.epochs}  loss {row['train_loss']:.4f}  "
            f"val acc {val['accuracy']:.3f}  val nll {val['nll']:.4f}  ({time.time() - te:.1f} s)")
    test = evaluate_logic(model, binding, data.split("test"), data.truth_table)
    model.cpu()
    if pred.va_regressor is not None:
        pred.va_regressor.cpu()
    probs, mae = learned_sources(model, data.truth_table)
    for m in trainable.values():
        m.eval()
        if train_networks:
            mark_trained(m, f"fine-tuned in {name}", cfg.dataset)
    va = None
    if uses_va:
        from experiments.harness.va_source import regime_va_results

        va = regime_va_results(pred, model.rule_table(), data)
    return RegimeResult(
        va=va,
        metrics=test["metrics"],
        history=history,
        source_probs=probs,
        rule_table=model.rule_table(),
        source_table_mae=mae,
        posterior_agreement=test.get("posterior_agreement"),
        dec_factor_agreement=test.get("dec_factor_agreement"),
        drift=parameter_drift(before, snapshot(trainable)),
        confusion=test["confusion"],
        wall_time_s=time.time() - t0,
        model=model,
    )


def run_regime(regime: Regime, cfg: HarnessConfig, data: ExperimentData, program: Program, pred: Predicates,
               seed: int, log=print, tb=None) -> RegimeResult:
    """One regime of the image track on a seed's own copy of the stage-0 networks."""
    if not regime.logic:
        return late_fusion(cfg, data, program, pred, seed, log=log, tb=tb)
    return train_logic(regime.name, cfg, data, program, pred, seed, train_rules=regime.train_rules,
                       train_networks=regime.train_networks, log=log, tb=tb)


# ---------------------------------------------------------------------------
# The purely neural baseline
# ---------------------------------------------------------------------------
def _fusion_inputs(frozen: FrozenBinding, batch: Batch):
    t = frozen.prepare(batch).tensors
    faces = torch.stack([t[s] for s in FACE_SLOTS], dim=1)  # [B, 3, 7], NaN where absent
    return t["scene"], faces, batch.face_mask


def late_fusion(cfg, data, program, pred, seed, log=print, tb=None) -> RegimeResult:
    """A neural model on the same stage-0 outputs (scene and face distributions + face mask)."""
    t0 = time.time()
    torch.manual_seed(seed)
    frozen = FrozenBinding(Binding(program, pred), {s: data.split(s) for s in ("train", "val", "test")})
    device = torch.device(cfg.device)
    net = get_network(LateFusionNet.registry_name).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.baseline_lr)
    weights = class_weights_for(data.split("train")).float().to(device) if cfg.class_weights else None
    history = []

    def predict(split):
        net.eval()
        with torch.no_grad():
            ps = [net(*_fusion_inputs(frozen, b.to(device))).cpu() for b in split.batches(512)]
        return torch.cat(ps), split.labels()

    for epoch in range(1, cfg.epochs + 1):
        net.train()
        total, n = 0.0, 0
        for batch in data.split("train").batches(cfg.batch_size, shuffle=True, seed=seed * 1000 + epoch):
            batch = batch.to(device)
            loss = F.cross_entropy(net.logits(*_fusion_inputs(frozen, batch)), batch.labels, weight=weights)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
            n += len(batch)
        p, y = predict(data.split("val"))
        val = classification_metrics(p, y, len(EMOTIONS))
        history.append({"epoch": epoch, "train_loss": total / n, "val_accuracy": val["accuracy"], "val_nll": val["nll"]})
        log(f"[late_fusion seed {seed}] epoch {epoch}/{cfg.epochs}  loss {total / n:.4f}  "
            f"val acc {val['accuracy']:.3f}  val nll {val['nll']:.4f}")
    p, y = predict(data.split("test"))
    net.cpu()
    return RegimeResult(
        metrics=classification_metrics(p, y, len(EMOTIONS)),
        history=history,
        confusion=confusion(p, y, len(EMOTIONS)).tolist(),
        wall_time_s=time.time() - t0,
        model=net,
    )
