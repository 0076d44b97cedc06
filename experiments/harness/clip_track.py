"""The clip track: the fusion net under ``clip_sentiment.pl`` on cached video clips.

1. the data set (generated first for ``synthetic_clips``), the verified clip
   cache, and the frozen-encoder features of every split, cached next to it
   (:mod:`experiments.harness.clip_data`);
2. stage 0: the fusion net trained with the source's recipe on ``pretrain``,
   per seed (or once with ``--no-stage0-per-seed``), reused from the cache by later
   runs with the same data, features, settings and seed;
3. the regimes (``frozen``, ``joint``: :mod:`experiments.harness.clip_regimes`) per seed.

Checkpoints in the run directory::

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
from pathlib import Path

from experiments.harness import clip_regimes
from experiments.harness.clip_data import ClipExperimentData, clip_features, features_key, load_clip_data
from experiments.harness.clip_regimes import HEADS, FusionStage0, logic_model, polarity_errors, train_clip_stage0
from experiments.harness.config import HarnessConfig
from experiments.regimes import Regime, get_regime
from experiments.harness.track import Track, log, skipped_summary
from experiments.runs import RunState, atomic_write_json, config_fingerprint
from logic.given import given_networks
from logic.program import Program, available_programs, load_program
from neural.common import UserError
from neural.multimodal import MultimodalFusionNet
from neural.multimodal_training import load_trainable, save_trainable
from neural.registry import load_network, save_network

#: bumped when the clip stage 0 changes, so older reusable stage-0 nets are not reused
CLIP_STAGE0_VERSION = 1
NET_NAME = MultimodalFusionNet.registry_name
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


# --------------------------------------------------------------------------- #
# Checkpoints
# --------------------------------------------------------------------------- #
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


class ClipTrack(Track):
    name = "clip"
    reuse_reason = "same features, stage-0 settings and seed"
    summary_keys = ("metrics", "sentiment_metrics", "joint_nll", "polarity_error", "wall_time_s")

    @classmethod
    def config_problems(cls, cfg: HarnessConfig) -> list[str]:
        from logic.engines import ENGINES, batched_engines

        problems = []
        if cfg.dataset == "meld" and not cfg.data_root:
            problems.append("--dataset meld needs --root DIR (MELD.Raw: the CSVs and the extracted clip folders)")
        if cfg.stage0_epochs < 1:
            problems.append("--stage0-epochs must be >= 1 for clips (the fusion net's stage 0)")
        if cfg.batch_size < 2:
            problems.append("--batch-size must be >= 2 for clips (the fusion layer has BatchNorm)")
        engine = ENGINES.get(cfg.engine)
        if engine is not None and not engine.batched and any(get_regime(r).train_networks for r in cfg.regimes):
            problems.append(f"the joint regime on clips needs --engine {batched_engines()}: the {cfg.engine} engine runs "
                            "the fusion net one clip at a time, and its BatchNorm cannot train on one clip "
                            f"(--engine {cfg.engine} --regimes frozen works)")
        if cfg.clip_frames < 1 or cfg.clip_seconds <= 0:
            problems.append("--clip-frames and --clip-seconds must be positive")
        if cfg.dataset == "synthetic_clips" and (cfg.clip_size < 32 or cfg.clip_size % 2 or cfg.n_clips < 1):
            problems.append("synthetic_clips needs an even --clip-size >= 32 and a positive --n-clips")
        return problems

    def load_program(self) -> Program:
        cfg = self.cfg
        program = load_program(cfg.program, check_bindings=False)
        if program.kind != "clip":
            raise UserError(f"--program {cfg.program} is an {program.kind} program; clip data sets need a clip "
                            f"program ({', '.join(available_programs('clip'))})")
        return program

    def load(self, timings: dict) -> None:
        t = time.time()
        self.data: ClipExperimentData = load_clip_data(self.cfg)
        timings["data_and_cache"] = time.time() - t
        log(self.data.build_summary)
        log(self.data.dataset.describe())
        t = time.time()
        self.feats = clip_features(self.data, progress=self.cfg.progress, log=log, device=self.cfg.device)
        timings["features"] = time.time() - t

    # -- stage 0 ----------------------------------------------------------------
    def stage0_key(self, seed: int) -> dict:
        return {"stage0_epochs": self.cfg.stage0_epochs, "class_weights": self.cfg.class_weights, "seed": seed,
                # the content it learns and selects on (ids, labels, clip hashes), not where the data set lives
                "data": {s: self.data.split(s).content_digest() for s in ("pretrain", "val")},
                "features": config_fingerprint(features_key(self.data)),
                "version": CLIP_STAGE0_VERSION}

    def shared_stage0_dir(self, seed: int) -> Path:
        return self.data.cache_dir / "stage0" / f"clip-{config_fingerprint(self.stage0_key(seed))}"

    def load_stage0(self, directory: Path) -> FusionStage0 | None:
        return _load_stage0(directory)

    def save_stage0(self, stage0: FusionStage0, directory: Path) -> None:
        _save_stage0(stage0, directory)

    def keep_stage0(self, stage0: FusionStage0, shared: Path, directory: Path) -> None:
        _link_tree(shared, directory)

    def train_stage0(self, seed: int, tb=None) -> FusionStage0:
        return train_clip_stage0(self.cfg, self.feats, self.data.base_net(), seed, log=log, tb=tb)

    # -- units ------------------------------------------------------------------
    def run_regime(self, regime: Regime, seed: int, stage0: FusionStage0, stage0_dir: Path, unit_dir: Path, tb):
        own = copy.copy(stage0)
        own.net = copy.deepcopy(stage0.net)  # every regime starts from the same stage-0 net
        result = clip_regimes.run_regime(regime, self.cfg, self.data, self.feats, self.program, own, seed,
                                         log=log, tb=tb)
        result.provenance = {source: result.net.source_provenance() for source in self.program.tensor_networks}
        self.save_regime(result, unit_dir, regime, stage0_dir)
        return result

    def save_regime(self, result, directory: Path, regime: Regime, stage0_dir: Path) -> None:
        """Rules, and what the regime changed in the net, with a ``model.json`` that says how to rebuild both."""
        cfg = self.cfg
        directory.mkdir(parents=True, exist_ok=True)
        result.model.save_rules(directory / "rules.json")
        trainable = None
        if result.net_trained:
            save_trainable(result.net, directory / TRAINABLE_FILE)
            trainable = TRAINABLE_FILE
        atomic_write_json(directory / "model.json", {
            "regime": regime.name,
            "modality": "clip",
            "program": cfg.program,
            "engine": cfg.engine,
            "rule_init": cfg.rule_init,
            "pipeline": self.data.pipeline.to_dict(),
            "fusion": dataclasses.asdict(self.data.fusion),
            # the program's networks are the heads of one fusion net
            "bindings": {n: [NET_NAME, HEADS[n]] for n in self.program.networks},
            "networks": {NET_NAME: {"base": os.path.relpath(stage0_dir / NET_NAME, directory),
                                    "trainable": trainable}},
            "rules": "rules.json",
            "provenance": result.provenance,
        })

    # -- results ----------------------------------------------------------------
    def starting_rules(self) -> dict:
        """The rule parameters every regime starts from (``--rule-init``), and their polarity-table error."""
        model = logic_model(self.cfg, self.program, given_networks(self.program))
        model.reset_rules(self.cfg.rule_init)
        table = model.polarity_table()
        return {"kind": self.cfg.rule_init, "polarity_table": table, "sentiment_sources": model.sentiment_sources(),
                "polarity_error": polarity_errors(table, self.data, self.feats)}

    def results(self, state: RunState, stage0s: dict) -> dict:
        cfg, data, feats = self.cfg, self.data, self.feats
        first = next(iter(stage0s.values()), None)
        return {
            "modality": "clip",
            "program": cfg.program,
            "engine": cfg.engine,
            "seeds": cfg.seeds,
            "n_test": len(feats["test"]),
            "n_clips": {s: len(f) for s, f in feats.items()},
            "regimes": self.regime_results(state),
            "truth_source_table": None,
            "truth_polarity_table": data.truth_polarity,
            "empirical_polarity_table": {"train": feats["train"].polarity_table(),
                                         "test": feats["test"].polarity_table()},
            "rule_init": self.starting_rules(),
            # {network: validation metrics} of the (first) stage-0 net; its test metrics alone (no logic)
            "stage0": first.metrics if first else {},
            "stage0_test": ({k: first.test[k] for k in ("metrics", "sentiment_metrics", "joint_nll")}
                            if first else None),
            "stage0_per_seed": {s: {"metrics": st.metrics, "info": st.info} for s, st in stage0s.items()},
            "stage0_shared": not cfg.stage0_per_seed,
            "skipped": skipped_summary(list(data.skipped) + [s for f in feats.values() for s in f.skipped], "clips"),
        }
