"""The clip track of the joint-vs-frozen comparison: the fusion net under ``clip_sentiment.pl``.

``run_clips(cfg, argv)`` is what ``python experiments/joint_vs_frozen.py --dataset
synthetic_clips`` (or ``--dataset meld --root DIR``) does, called by
:func:`experiments.harness.run` for a clip data set:

1. the data set (generated first for ``synthetic_clips``), the verified clip
   cache, and the frozen-encoder features of every split, cached next to it
   (:mod:`experiments.clip_data`);
2. stage 0: the fusion net trained with the source's recipe on ``pretrain``,
   per seed (or once with ``--no-stage0-per-seed``), reused from the cache by later
   runs with the same data, features, settings and seed;
3. the regimes (``frozen``, ``joint``: :mod:`experiments.clip_regimes`) per seed;
4. results, report, plots, as the image track.

The run directory is the image track's (config.json, state.json for --resume,
results.json, report.md, plots/, tb/) with these checkpoints::

    checkpoints/stage0-seed<S>/multimodal_fusion/        the stage-0 net (registry checkpoint:
                                                          weights.safetensors + config.json)
    checkpoints/stage0-seed<S>/stage0.json               its validation and test metrics
    checkpoints/seed<S>/<regime>/rules.json              learned rule parameters
    checkpoints/seed<S>/<regime>/model.json              program, regime, engine, pipeline,
                                                          fusion config, where the net is
    checkpoints/seed<S>/joint/networks/multimodal_fusion.trainable.safetensors
                                                          what joint training changed (the
                                                          trainable parts; the frozen encoders
                                                          are the stage-0 checkpoint's)

:func:`load_clip_network` rebuilds a regime's fusion net from them. The stage-0
checkpoint is hard-linked from the cache's copy where the file system allows
(it holds the frozen encoders: about 220 MB with MiniLM and R3D-18).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path

from experiments.clip_data import (
    ClipExperimentData,
    ClipFeatures,
    clip_features,
    features_key,
    load_clip_data,
)
from experiments.clip_regimes import (
    ClipRegimeResult,
    FusionStage0,
    get_clip_regime,
    polarity_errors,
    train_clip_stage0,
)
from experiments.config import HarnessConfig
from experiments.harness import _log, finish_run, open_run, run_units, write_plots
from experiments.metrics import aggregate_seeds
from experiments.runs import (
    RunState,
    TBLogger,
    atomic_write_json,
    config_fingerprint,
)
from logic.model import LogicModel
from logic.given import GivenSlice
from logic.program import Program, available_programs, load_program
from neural.errors import UserError
from neural.multimodal_training import load_trainable, save_trainable
from neural.registry import load_network, save_network
from neural.vocabulary import EMOTIONS, SENTIMENTS

#: bumped when the clip stage 0 changes, so older reusable stage-0 nets are not reused
CLIP_STAGE0_VERSION = 1
NET_NAME = "multimodal_fusion"
TRAINABLE_FILE = f"networks/{NET_NAME}.trainable.safetensors"


# --------------------------------------------------------------------------- #
# Stage 0: trained once, reused
# --------------------------------------------------------------------------- #
def _load_stage0(directory: Path) -> FusionStage0 | None:
    marker = directory / "stage0.json"
    if not marker.is_file() or not (directory / NET_NAME / "weights.safetensors").is_file():
        return None
    info = json.loads(marker.read_text())
    return FusionStage0(load_network(directory / NET_NAME).eval(), info["metrics"], info["test"], info["info"])


def _save_stage0(stage0: FusionStage0, directory: Path) -> None:
    save_network(stage0.net, directory / NET_NAME)
    atomic_write_json(directory / "stage0.json", {"metrics": stage0.metrics, "test": stage0.test, "info": stage0.info})


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link every file of ``src`` into ``dst`` (copy where links are not possible)."""
    for f in sorted(p for p in src.rglob("*") if p.is_file() and not p.name.startswith(".")):
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            os.link(f, tmp)
        except OSError:
            shutil.copy2(f, tmp)
        os.replace(tmp, target)


def clip_stage0(cfg: HarnessConfig, data: ClipExperimentData, feats: dict[str, ClipFeatures], seed: int,
                directory: Path, tb=None) -> FusionStage0:
    """The stage-0 fusion net of ``seed``: from the run (--resume), else from the cache when
    another run trained it on the same features with the same settings and seed (stage 0
    is deterministic in those), else trained here; then kept in ``directory``."""
    stage0 = _load_stage0(directory)
    if stage0 is not None:
        _log(f"[seed {seed}] stage 0 loaded from {directory}")
        return stage0
    key = {"stage0_epochs": cfg.stage0_epochs, "class_weights": cfg.class_weights, "seed": seed,
           # the content it learns and selects on (ids, labels, clip hashes), not where the data set lives
           "data": {s: data.split(s).content_digest() for s in ("pretrain", "val")},
           "features": config_fingerprint(features_key(data)),
           "version": CLIP_STAGE0_VERSION}
    shared = data.cache_dir / "stage0" / f"clip-{config_fingerprint(key)}"
    stage0 = _load_stage0(shared)
    if stage0 is not None:
        _log(f"[seed {seed}] stage 0 reused from {shared} (same features, stage-0 settings and seed)")
    else:
        stage0 = train_clip_stage0(cfg, feats, data.base_net(), seed, log=_log, tb=tb)
        _save_stage0(stage0, shared)
    _link_tree(shared, directory)
    return stage0


# --------------------------------------------------------------------------- #
# Checkpoints
# --------------------------------------------------------------------------- #
def save_clip_regime(result: ClipRegimeResult, cfg: HarnessConfig, data: ClipExperimentData, directory: Path,
                     regime: str, stage0_dir: Path) -> None:
    """Rules, and what the regime changed in the net, with a ``model.json`` that says how to rebuild both."""
    directory.mkdir(parents=True, exist_ok=True)
    result.model.save_rules(directory / "rules.json")
    trainable = None
    if result.net_trained:
        save_trainable(result.net, directory / TRAINABLE_FILE)
        trainable = TRAINABLE_FILE
    atomic_write_json(directory / "model.json", {
        "regime": regime,
        "modality": "clip",
        "program": cfg.program,
        "engine": cfg.engine,
        "rule_init": cfg.rule_init,
        "pipeline": data.pipeline.to_dict(),
        "fusion": dataclasses.asdict(data.fusion),
        # the program's networks are the two heads of one fusion net
        "bindings": {"multimodal_emotion": [NET_NAME, "emotion"], "multimodal_sentiment": [NET_NAME, "sentiment"]},
        "networks": {NET_NAME: {"base": os.path.relpath(stage0_dir / NET_NAME, directory), "trainable": trainable}},
        "rules": "rules.json",
        "provenance": result.provenance,
    })


def load_clip_network(directory: str | os.PathLike):
    """The fusion net of a clip regime checkpoint (``checkpoints/seed<S>/<regime>``), in eval mode."""
    directory = Path(directory)
    meta = json.loads((directory / "model.json").read_text())
    if meta.get("modality") != "clip":
        raise UserError(f"{directory}: not a clip checkpoint (model.json has no modality 'clip')")
    spec = meta["networks"][NET_NAME]
    net = load_network(directory / spec["base"])
    if spec.get("trainable"):
        load_trainable(net, directory / spec["trainable"])
    return net.eval()


# --------------------------------------------------------------------------- #
# The run
# --------------------------------------------------------------------------- #
def _clip_program(cfg: HarnessConfig) -> Program:
    program = load_program(cfg.program, check_bindings=False)
    if program.kind != "clip":
        raise UserError(f"--program {cfg.program} is an {program.kind} program; clip data sets need a clip program "
                        f"({', '.join(available_programs('clip'))})")
    return program


def run_clips(cfg: HarnessConfig, argv: list[str], resume: str | None = None) -> Path:
    cfg = cfg.resolved()
    cfg.validate()
    program = _clip_program(cfg)
    run_dir, state, command = open_run(cfg, argv, resume)
    timings: dict[str, float] = {}
    t = time.time()
    data = load_clip_data(cfg)
    timings["data_and_cache"] = time.time() - t
    _log(data.build_summary)
    _log(data.dataset.describe())
    t = time.time()
    feats = clip_features(data, progress=cfg.progress, log=_log, device=cfg.device)
    timings["features"] = time.time() - t
    tb = TBLogger(run_dir / "tb")

    def run_unit(regime: str, seed: int, stage0: FusionStage0, stage0_dir: Path, unit_dir: Path):
        own = copy.copy(stage0)
        own.net = copy.deepcopy(stage0.net)  # every regime starts from the same stage-0 net
        result = get_clip_regime(regime)(cfg, data, feats, program, own, seed, log=_log, tb=tb)
        result.provenance = {source: result.net.source_provenance() for source in program.tensor_networks}
        save_clip_regime(result, cfg, data, unit_dir, regime, stage0_dir)
        return result

    try:
        stage0s = run_units(cfg, state, run_dir, timings,
                            lambda s0, d: clip_stage0(cfg, data, feats, s0, d, tb=tb), run_unit)
    finally:
        tb.close()

    t = time.time()
    results = collect_clip_results(cfg, state, data, feats, program, stage0s, timings)
    plots = write_plots(results, run_dir)
    timings["report"] = time.time() - t
    results["timings"] = timings
    finish_run(run_dir, results, command, cfg, plots)
    return run_dir


def starting_rules(cfg: HarnessConfig, program: Program, data: ClipExperimentData,
                   feats: dict[str, ClipFeatures]) -> dict:
    """The rule parameters every regime starts from (``--rule-init``), and their polarity-table error."""
    model = LogicModel(program, {"multimodal_emotion": GivenSlice(0, len(EMOTIONS)),
                                 "multimodal_sentiment": GivenSlice(len(EMOTIONS), len(EMOTIONS) + len(SENTIMENTS))})
    model.reset_rules(cfg.rule_init)
    table = model.polarity_table()
    return {"kind": cfg.rule_init, "polarity_table": table, "sentiment_sources": model.sentiment_sources(),
            "polarity_error": polarity_errors(table, data, feats)}


def skipped_summary(data: ClipExperimentData, feats: dict[str, ClipFeatures]) -> dict:
    """Every clip left out (by the data set, the cache build, the features), counted by reason."""
    clips = list(data.skipped) + [s for f in feats.values() for s in f.skipped]
    by_reason = Counter(reason.split(":", 1)[0] for _, reason in clips)
    return {"n": len(clips), "by_reason": dict(by_reason.most_common()), "clips": [list(c) for c in clips]}


def collect_clip_results(cfg: HarnessConfig, state: RunState, data: ClipExperimentData,
                         feats: dict[str, ClipFeatures], program: Program, stage0s: dict[str, FusionStage0],
                         timings: dict) -> dict:
    regimes = {}
    for regime in cfg.regimes:
        per_seed = state.seed_results(regime, cfg.seeds)
        if not per_seed:
            continue
        summary = aggregate_seeds([
            {k: r.get(k) for k in ("metrics", "sentiment_metrics", "joint_nll", "polarity_error", "wall_time_s")}
            for r in per_seed.values()
        ])
        regimes[regime] = {"per_seed": per_seed, "summary": summary}
    first = next(iter(stage0s.values()), None)
    return {
        "dataset": cfg.dataset,
        "modality": "clip",
        "program": cfg.program,
        "engine": cfg.engine,
        "seeds": cfg.seeds,
        "n_test": len(feats["test"]),
        "n_clips": {s: len(f) for s, f in feats.items()},
        "regimes": regimes,
        "truth_source_table": None,
        "truth_polarity_table": data.truth_polarity,
        "empirical_polarity_table": {"train": feats["train"].polarity_table(), "test": feats["test"].polarity_table()},
        "rule_init": starting_rules(cfg, program, data, feats),
        # {network: validation metrics} of the (first) stage-0 net; its test metrics alone (no logic)
        "stage0": first.metrics if first else {},
        "stage0_test": ({k: first.test[k] for k in ("metrics", "sentiment_metrics", "joint_nll")} if first else None),
        "stage0_per_seed": {s: {"metrics": st.metrics, "info": st.info} for s, st in stage0s.items()},
        "stage0_shared": not cfg.stage0_per_seed,
        "skipped": skipped_summary(data, feats),
        "timings": timings,
    }
