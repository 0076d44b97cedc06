"""The valence/arousal source in the image harness: stage 0, its metrics, its truth.

- stage 0 trains the V/A regressor's heads on the pretrain split's valence and
  arousal with the source's recipe (seed 000: frozen backbone -- here its cached
  features, scene or CLIP --, dropout heads, MSE) and scores the MC-dropout mean
  on val and test (CCC, RMSE, Pearson r: :mod:`experiments.va_metrics`);
- every regime's run is scored the same way on test (``joint`` changes the
  heads; the other regimes keep the stage-0 ones), and the program's learned
  ``circumplex/3`` table is compared with the generator's
  (:func:`pipelines.datasets.synthetic_va.circumplex_table`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from experiments.va_metrics import va_metrics
from neural.common import UserError
from neural.provenance import mark_trained
from neural.registry import get_network
from neural.va import VARegressor

#: The program's table of P(emotion | valence bin, arousal bin): ``circumplex(V, A)`` groups.
CIRCUMPLEX = "circumplex"
#: The fixed number of MC-dropout passes of every V/A evaluation, so that numbers do not
#: depend on a config's n_samples; seeded so a rerun gives the same numbers.
EVAL_SAMPLES, EVAL_SEED = 20, 1234


def va_targets(split, ids=None) -> torch.Tensor:
    """[N, 2] (valence, arousal) annotations of ``ids`` (default: the whole split)."""
    ids = split.sample_ids if ids is None else ids
    rows = []
    for sid in ids:
        ann = split.annotations(sid)
        if "valence" not in ann or "arousal" not in ann:
            raise UserError(f"a program with a V/A source needs valence/arousal annotations; sample {sid!r} has "
                            "none (the synthetic and findingemo data sets have them)")
        rows.append([float(ann["valence"]), float(ann["arousal"])])
    return torch.tensor(rows, dtype=torch.float32)


def _features(split) -> torch.Tensor:
    return split.batch(split.sample_ids).tensors["va"]  # [N, D]: scene or CLIP features


@torch.no_grad()
def va_estimate(net, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The MC-dropout (mean, variance) [N, 2] each, with a fixed seed (the global RNG is restored)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(EVAL_SEED)
    try:
        return net.mc_predict(feats, n_samples=EVAL_SAMPLES)
    finally:
        torch.random.set_rng_state(state)


def score(net, split) -> dict:
    """V/A metrics of the MC-dropout mean on ``split``, plus the mean predictive std."""
    mean, var = va_estimate(net, _features(split))
    out = va_metrics(mean.numpy(), va_targets(split).numpy())
    out["mean_std"] = float(var.clamp_min(0).sqrt().mean())
    return out


def train_va_stage0(cfg, data, seed: int, log=print) -> tuple[torch.nn.Module, dict]:
    """The stage-0 V/A regressor and its ``{"val": ..., "test": ...}`` metrics."""
    pre = data.split("pretrain")
    target, feats = va_targets(pre), _features(pre)
    torch.manual_seed(seed)
    # the regressor reads cached features of any width (512 scene, CLIP's projection_dim)
    net = get_network(VARegressor.registry_name, feature_dim=int(feats.shape[1]))
    net.fit_input_scaling(feats)
    device = getattr(cfg, "device", "cpu")
    net.to(device)
    params = [p for g in net.param_groups(cfg.stage0_lr) for p in g["params"]]
    opt = torch.optim.Adam(params, lr=cfg.stage0_lr)
    g = torch.Generator().manual_seed(seed * 1000 + 23)
    net.train()
    for _ in range(max(1, cfg.head_epochs)):
        order = torch.randperm(len(feats), generator=g)
        for start in range(0, len(order), 128):
            idx = order[start:start + 128]
            loss = F.mse_loss(net(feats[idx].to(device)), target[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval().cpu()  # networks are handed back on the CPU, as the other stage-0 networks
    mark_trained(net, "trained in stage 0", cfg.dataset)
    metrics = {"val": score(net, data.split("val")), "test": score(net, data.split("test"))}
    log(f"[seed {seed}] stage 0 V/A regressor ({data.pipeline.va_backbone} features): CCC valence "
        f"{metrics['test']['valence']['ccc']:.3f}, arousal {metrics['test']['arousal']['ccc']:.3f} (test)")
    return net, metrics


def learned_circumplex(rule_table: dict) -> dict | None:
    """``{v: {a: {emotion: p}}}`` from a rule table's ``circumplex(v, a)`` groups (None without them)."""
    out: dict = {}
    for key, dist in rule_table.items():
        if key.startswith(CIRCUMPLEX + "("):
            v, a = (part.strip() for part in key[len(CIRCUMPLEX) + 1:-1].split(","))
            out.setdefault(v, {})[a] = dict(dist)
    return out or None


def regime_va_results(pred, rule_table: dict | None, data) -> dict:
    """What a regime's run says about the V/A source: test metrics of its regressor,
    its circumplex table, and that table's error against the generator's (synthetic)."""
    from pipelines.datasets.synthetic_va import circumplex_error

    out: dict = {"test": score(pred.va_regressor, data.split("test"))}
    table = learned_circumplex(rule_table or {})
    if table is not None:
        out["circumplex"] = table
        if data.va_truth is not None:
            out["circumplex_error"] = circumplex_error(table, data.va_truth["circumplex"],
                                                       data.va_truth["bin_weights"])
    return out
