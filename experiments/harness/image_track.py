"""The image track: the scene/face (and V/A) program on cached images.

    checkpoints/stage0-seed<S>/<network>/            stage-0 networks (safetensors + config)
    checkpoints/stage0-seed<S>/stage0.json           where the face predicate came from, validation metrics
    checkpoints/seed<S>/<regime>/{networks/,rules.json,model.json}
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

from experiments.harness import image_regimes
from experiments.harness.binding import Binding
from experiments.harness.config import FACE_INITS, VA_BACKBONES, HarnessConfig, check_path
from experiments.harness.image_data import ExperimentData, load_data
from experiments.harness.image_stage0 import (
    Predicates,
    feature_networks,
    load_stage0,
    needs_va,
    save_predicates,
    save_stage0,
    stage0_key,
    train_stage0,
)
from experiments.regimes import Regime
from experiments.harness.track import Track, log, skipped_summary
from experiments.runs import RunState, atomic_write_json
from logic.engines import engine_class
from logic.program import Program, available_programs, load_program
from neural.common import FACE_SLOTS, UserError
from neural.registry import save_network
from pipelines.feature_registry import check_program_features
from pipelines.pipeline import feature_provenance


class ImageTrack(Track):
    name = "image"
    supports_ray = True
    summary_keys = ("metrics", "source_table_mae", "posterior_agreement", "wall_time_s")

    @classmethod
    def config_problems(cls, cfg: HarnessConfig) -> list[str]:
        problems = check_path(cfg.face_weights, "face_weights")
        if cfg.dataset == "findingemo" and not cfg.images:
            problems.append("--dataset findingemo needs --images DIR (the downloaded FindingEmo images)")
        if cfg.dataset == "csv" and not cfg.csv:
            problems.append("--dataset csv needs --csv FILE")
        if cfg.va_backbone not in VA_BACKBONES:
            problems.append(f"--va-backbone must be one of {', '.join(VA_BACKBONES)}")
        if cfg.face_init not in FACE_INITS:
            problems.append(f"--face-init must be one of {', '.join(FACE_INITS)}")
        return problems

    def load_program(self) -> Program:
        cfg = self.cfg
        program = load_program(cfg.program)
        if program.kind != "image":
            raise UserError(f"--program {cfg.program} is a {program.kind} program; image data sets need an image "
                            f"program ({', '.join(available_programs('image'))})")
        check_program_features(program)  # every source's feature is made by the pipeline or a plug-in
        self.va = needs_va(program)
        self.feature_nets = tuple(feature_networks(program))  # stage 0 trains them on their registered features
        if cfg.va_backbone != "scene" and not self.va:
            raise UserError(f"--va-backbone {cfg.va_backbone} applies to programs with a V/A source "
                            f"(va_selection); {cfg.program} has none")
        return program

    def load(self, timings: dict) -> None:
        t = time.time()
        self.data: ExperimentData = load_data(self.cfg, self.program)
        timings["data_and_cache"] = time.time() - t
        engine = engine_class(self.cfg.engine)
        if not engine.torch_rules:
            log(f"note: rule parameters: {engine.rule_training} (the compiled engine: Adam on logits), so learned "
                "rules differ between engines; with --rule-lr 0 both give the same numbers")
        log(self.data.build_summary)
        log(self.data.dataset.describe())
        self.features = feature_provenance(self.data.pipeline, self.data.split("train").manifests[0].get("identity"))

    # -- stage 0 ----------------------------------------------------------------
    def stage0_key(self, seed: int) -> dict:
        return stage0_key(self.cfg, self.data, seed, self.va, self.feature_nets)

    def load_stage0(self, directory: Path) -> Predicates | None:
        found = load_stage0(directory)
        if found is not None and not set(self.feature_nets) <= set(found.feature_nets):
            return None  # saved without the program's networks on registered features: train them
        return found

    def save_stage0(self, stage0: Predicates, directory: Path) -> None:
        save_stage0(stage0, directory)

    def train_stage0(self, seed: int, tb=None) -> Predicates:
        return train_stage0(self.cfg, self.data, seed, self.va, log=log, program=self.program)

    # -- units ------------------------------------------------------------------
    def run_regime(self, regime: Regime, seed: int, stage0: Predicates, stage0_dir, unit_dir: Path, tb):
        own = copy.deepcopy(stage0)  # every regime starts from the same stage-0 networks
        result = image_regimes.run_regime(regime, self.cfg, self.data, self.program, own, seed, log=log, tb=tb)
        result.provenance = Binding(self.program, own).provenance(self.features)
        self.save_regime(result, own, unit_dir, regime)
        return result

    def save_regime(self, result, pred: Predicates, directory: Path, regime: Regime) -> None:
        """A checkpoint that rebuilds the trained program (used by ``emologic query``)."""
        cfg = self.cfg
        nets = directory / "networks"
        if not regime.logic:
            save_network(result.model, nets / result.model.registry_name)
        else:
            save_predicates(pred, nets)
            result.model.save_rules(directory / "rules.json")
        atomic_write_json(directory / "model.json", {
            "regime": regime.name,
            "program": cfg.program,
            "engine": cfg.engine,
            "face_size_threshold": cfg.face_size_threshold,
            "face_source": pred.face_source,
            "pipeline": self.data.pipeline.to_dict(),
            "provenance": result.provenance,
            "networks": "networks",
            "rules": "rules.json" if regime.logic else None,
        })

    # -- results ----------------------------------------------------------------
    def summary_row(self, r: dict) -> dict:
        # the V/A source (programs with one): test metrics and circumplex error, not the table itself
        return super().summary_row(r) | {"va": {k: v for k, v in (r.get("va") or {}).items()
                                                 if k != "circumplex"} or None}

    def results(self, state: RunState, stage0s: dict) -> dict:
        cfg, data = self.cfg, self.data
        regimes = self.regime_results(state)
        stage0_metrics = {s: pred.metrics for s, pred in stage0s.items()}
        out = {
            "program": cfg.program,
            "engine": cfg.engine,
            "seeds": cfg.seeds,
            "n_test": len(data.split("test")),
            "regimes": regimes,
            "truth_source_table": data.truth_table,
            "truth_circumplex": (data.va_truth["circumplex"] if data.va_truth and any(
                r.get("va") for v in regimes.values() for r in v["per_seed"].values()) else None),
            # {network: validation metrics} of the (first) stage-0 networks
            "stage0": next(iter(stage0_metrics.values()), {}),
            "stage0_per_seed": stage0_metrics,
            "stage0_shared": not cfg.stage0_per_seed,
            "skipped": skipped_summary(data.skipped, "images"),
        }
        if any(slot in self.program.tensor_networks for slot in FACE_SLOTS):  # the program reads faces
            from experiments.harness.face_zero_shot import face_reading

            out["face_reading"] = face_reading(data, next(iter(stage0s.values())).face_net)
        return out
