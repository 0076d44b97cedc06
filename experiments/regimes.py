"""The training regimes compared by the harness, and their evaluation.

    frozen         networks fixed, only the rule parameters learn (logic-only)
    joint          rule parameters and the trainable network parts learn together
    uniform_rules  rules fixed at uniform, networks trained through the logic
    late_fusion    no logic: a neural late-fusion model on the same network outputs

Each regime is registered with :func:`regime` and returns a :class:`RegimeResult`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cache.batch import Batch
from experiments.config import HarnessConfig
from experiments.data import ExperimentData
from experiments.drift import parameter_drift, snapshot
from experiments.metrics import (
    classification_metrics,
    confusion,
    dec_factor_agreement,
    posterior_agreement,
    source_table_error,
)
from experiments.stage0 import Predicates, train_mode
from logic.given import Given, GivenSlice
from logic.model import LogicModel
from logic.program import Program
from neural.provenance import mark_trained, provenance_of, source_provenance
from neural.registry import get_network
from neural.vocabulary import EMOTIONS, FACE_SLOTS

_REGIMES: dict[str, Callable] = {}


def regime(name: str):
    def deco(fn):
        _REGIMES[name] = fn
        return fn

    return deco


def get_regime(name: str) -> Callable:
    return _REGIMES[name]


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
    va: dict | None = None  # programs with a V/A source: experiments.va_source.regime_va_results

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
# Binding the program's neural predicates
# ---------------------------------------------------------------------------
class Layer4Head(nn.Module):
    """The scene predicate when layer4 is trained: [B, 256, h, w] -> layer4 -> pool -> head -> [B, 7]."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.from_layer3(f))

    @property
    def provenance(self):
        return provenance_of(self.head)


class Binding:
    """The networks the program's ``nn`` names are bound to in one regime, and
    how a cached batch becomes the tensors those networks read."""

    def __init__(self, program: Program, pred: Predicates):
        self.program, self.pred = program, pred
        self.uses_va = "va_valence" in program.networks
        scene = pred.scene_head if pred.scene_layer4 is None else Layer4Head(pred.scene_layer4, pred.scene_head)
        self.networks: dict[str, nn.Module] = {"scene2emotion": scene, "face_emotion": pred.face_net}
        if self.uses_va:
            self.networks["va_valence"] = get_network("va_valence")
            self.networks["va_arousal"] = get_network("va_arousal")
        self.networks = {k: v for k, v in self.networks.items() if k in program.networks}

    def provenance(self, features: dict) -> dict[str, dict]:
        """Per source: where its networks' knowledge came from (:func:`neural.provenance.source_provenance`);
        ``features``: :func:`pipelines.pipeline.feature_provenance` of the cache the run read."""
        features = {k: dict(v) for k, v in features.items()}
        if self.uses_va:
            features.setdefault("va", {})["va_regressor"] = provenance_of(self.pred.va_regressor)
        return source_provenance(self.program.tensor_networks, self.networks, features)

    def source_outputs(self, prepared: Batch) -> dict[str, torch.Tensor]:
        """Each source that one network reads (``Program.tensor_networks``): that
        network's output ``[B, K]`` float32, NaN where the source is absent."""
        out = {}
        for src, nets in self.program.tensor_networks.items():
            if len(nets) != 1 or nets[0] not in self.networks:
                continue
            present = prepared.present(src)
            t = torch.full((len(prepared), len(self.program.domain_of(nets[0]))), float("nan"))
            if present.any():
                t[present] = self.networks[nets[0]](prepared.tensors[src][present]).float()
            out[src] = t
        return out

    def prepare(self, batch: Batch) -> Batch:
        tensors = dict(batch.tensors)
        if self.pred.scene_layer4 is not None:
            tensors["scene"] = tensors["scene_layer3"]
        if self.uses_va:
            from neural.va import va_predicate_input

            va = self.pred.va_regressor
            # Training through the logic keeps MC dropout *with* gradients: the loss is
            # taken on the same Gaussian bin mass (mean and variance of the dropout
            # passes) that evaluation and query use, so the circumplex table and the
            # trust are learned against the distribution they will be read with, and
            # the heads learn their uncertainty too. Training on the mean alone would
            # leave only the min_std floor as variance: near-hard bins, vanishing
            # gradients far from the edges, and a train/eval mismatch. The heads are
            # small MLPs on cached features, so n passes cost little.
            mc = va.mc_predict_with_grad if torch.is_grad_enabled() and va.training else va.mc_predict
            tensors["va"] = va_predicate_input(*mc(tensors["va"]))
        return _with_tensors(batch, tensors)


class FrozenBinding:
    """Frozen networks: their outputs are computed once per sample, and the
    program's predicates read them through :class:`Given` stand-ins."""

    def __init__(self, binding: Binding, splits: dict):
        self.program = binding.program
        self.networks: dict[str, nn.Module] = {}
        for net in binding.networks:
            self.networks[net] = Given()
        if binding.uses_va:
            kv = len(self.program.domain_of("va_valence"))
            self.networks["va_valence"] = GivenSlice(0, kv)
            self.networks["va_arousal"] = GivenSlice(kv, kv + len(self.program.domain_of("va_arousal")))
        self.rows: dict[str, int] = {}
        self.outputs: dict[str, list[torch.Tensor]] = {}
        with torch.no_grad():
            for split in splits.values():
                for batch in split.batches(512):
                    prepared = binding.prepare(batch)
                    for src, out in binding.source_outputs(prepared).items():
                        self.outputs.setdefault(src, []).append(out)
                    if binding.uses_va:
                        va = prepared.tensors["va"]
                        self.outputs.setdefault("va", []).append(
                            torch.cat([binding.networks["va_valence"](va), binding.networks["va_arousal"](va)], 1)
                        )
                    for sid in batch.sample_ids:
                        self.rows[sid] = len(self.rows)
        self.table = {src: torch.cat(parts) for src, parts in self.outputs.items()}

    def prepare(self, batch: Batch) -> Batch:
        idx = torch.tensor([self.rows[s] for s in batch.sample_ids])
        # the table is computed once on the CPU; its rows go where the batch is
        return _with_tensors(batch, {src: t[idx].to(batch.labels.device) for src, t in self.table.items()})


def _with_tensors(batch: Batch, tensors: dict) -> Batch:
    return batch.with_tensors(tensors)


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
    if pred.va_regressor is not None and "va_valence" in program.networks:
        from experiments.va_source import regime_va_results

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


@regime("frozen")
def frozen(cfg, data, program, pred, seed, **kw) -> RegimeResult:
    return train_logic("frozen", cfg, data, program, pred, seed, train_rules=True, train_networks=False, **kw)


@regime("joint")
def joint(cfg, data, program, pred, seed, **kw) -> RegimeResult:
    return train_logic("joint", cfg, data, program, pred, seed, train_rules=True, train_networks=True, **kw)


@regime("uniform_rules")
def uniform_rules(cfg, data, program, pred, seed, **kw) -> RegimeResult:
    return train_logic("uniform_rules", cfg, data, program, pred, seed, train_rules=False, train_networks=True, **kw)


# ---------------------------------------------------------------------------
# The purely neural baseline
# ---------------------------------------------------------------------------
def _fusion_inputs(frozen: FrozenBinding, batch: Batch):
    t = frozen.prepare(batch).tensors
    faces = torch.stack([t[s] for s in FACE_SLOTS], dim=1)  # [B, 3, 7], NaN where absent
    return t["scene"], faces, batch.face_mask


@regime("late_fusion")
def late_fusion(cfg, data, program, pred, seed, log=print, tb=None) -> RegimeResult:
    """A neural model on the same stage-0 outputs (scene and face distributions + face mask)."""
    t0 = time.time()
    torch.manual_seed(seed)
    base = Binding(program, pred)
    base.networks.setdefault("face_emotion", pred.face_net)
    frozen = FrozenBinding(base, {s: data.split(s) for s in ("train", "val", "test")})
    device = torch.device(cfg.device)
    net = get_network("late_fusion").to(device)
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


def confusion_sum(matrices: list) -> np.ndarray:
    return np.sum([np.asarray(m) for m in matrices], axis=0)
