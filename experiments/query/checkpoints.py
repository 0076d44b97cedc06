"""Where ``emologic query`` finds a trained program inside a run directory.

A run directory (:mod:`experiments.harness.loop`) holds, per seed and regime,
``checkpoints/seed<S>/<regime>/{model.json, networks/, rules.json}``. The
default regime of a seed is the logic regime (not ``late_fusion``, which has no
program to explain) with the lowest final validation NLL.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from experiments.regimes import REGIMES
from experiments.runs import load_state, resolve_run
from neural.common import UserError

#: Regimes whose checkpoints hold no program (nothing to explain).
NON_LOGIC_REGIMES = tuple(name for name, r in REGIMES.items() if not r.logic)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} is missing; is this a finished emologic run?") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} cannot be read ({exc})") from None


def seeds_with_checkpoints(run_dir: Path) -> list[int]:
    found = []
    for d in (run_dir / "checkpoints").glob("seed*"):
        if d.is_dir() and d.name[4:].isdigit():
            found.append(int(d.name[4:]))
    return sorted(found)


def _logic_regimes(seed_dir: Path) -> list[str]:
    """Regimes of a seed with a complete program checkpoint."""
    if not seed_dir.is_dir():
        return []
    return sorted(d.name for d in seed_dir.iterdir() if d.name not in NON_LOGIC_REGIMES
                  and (d / "model.json").is_file() and (d / "rules.json").is_file())


def final_val_nll(run_dir: Path, seed: int) -> dict[str, float]:
    """Regime -> validation NLL after the last epoch, from ``results.json``
    (or, for an unfinished run, from ``state.json``)."""
    per_regime: dict[str, dict] = {}
    results = run_dir / "results.json"
    if results.is_file():
        for regime, r in read_json(results).get("regimes", {}).items():
            if str(seed) in r.get("per_seed", {}):
                per_regime[regime] = r["per_seed"][str(seed)]
    else:
        for (regime, s), r in load_state(run_dir).units.items():
            if s == seed:
                per_regime[regime] = r
    out = {}
    for regime, r in per_regime.items():
        history = r.get("history") or []
        if history and history[-1].get("val_nll") is not None and math.isfinite(history[-1]["val_nll"]):
            out[regime] = float(history[-1]["val_nll"])
    return out


def choose_regime(run_dir: Path, seed: int, regime: str | None) -> tuple[str, str]:
    """The regime to load and why (for :meth:`TrainedProgram.describe`)."""
    if regime in NON_LOGIC_REGIMES:
        raise UserError(
            f"regime {regime!r} is a purely neural baseline with no program to query or explain; "
            "choose a logic regime (e.g. frozen or joint)"
        )
    seed_dir = run_dir / "checkpoints" / f"seed{seed}"
    available = _logic_regimes(seed_dir)
    if not available:
        raise UserError(f"{run_dir}: no trained program for seed {seed} (is the run finished?)")
    if regime is not None:
        if regime not in available:
            raise UserError(f"{run_dir}: no checkpoint of regime {regime!r} for seed {seed}; "
                            f"available: {', '.join(available)}")
        return regime, "as requested"
    nll = {r: v for r, v in final_val_nll(run_dir, seed).items() if r in available}
    if not nll:
        return available[0], "no validation results recorded; first available"
    best = min(nll, key=nll.get)
    listed = ", ".join(f"{r} {v:.3f}" for r, v in sorted(nll.items()))
    return best, f"lowest final val NLL: {listed}"


def synthetic_root(cfg: dict) -> Path:
    """Where the run's synthetic data set lives (its data_root, else the harness's default)."""
    if cfg.get("data_root"):
        return Path(cfg["data_root"])
    from experiments.harness.config import HarnessConfig
    from experiments.harness.data import dataset_options
    from pipelines.datasets.synthetic import default_root
    from pipelines.datasets.synthetic_config import SyntheticConfig

    known = {f.name for f in dataclasses.fields(HarnessConfig)}
    options = dataset_options(HarnessConfig(**{k: v for k, v in cfg.items() if k in known}))
    return default_root(SyntheticConfig.from_dict(options))




@dataclasses.dataclass
class RunCheckpoint:
    """One seed and regime of a run: what :meth:`TrainedProgram.load` rebuilds."""

    run_dir: Path
    config: dict  # the run's harness config
    seed: int
    regime: str
    why: str  # why this regime
    meta: dict  # the checkpoint's model.json

    @property
    def directory(self) -> Path:
        return self.run_dir / "checkpoints" / f"seed{self.seed}" / self.regime


def locate_checkpoint(run, regime: str | None, seed: int | None, runs_root) -> RunCheckpoint:
    """The checkpoint of ``run`` (a run directory, a run name under ``runs_root``,
    or ``None``/"latest"): ``seed`` defaults to the run's first seed, ``regime``
    to the logic regime with the lowest final validation NLL of that seed."""
    run_dir = resolve_run(run, runs_root)
    config = read_json(run_dir / "config.json")
    cfg = config.get("config", config)
    from experiments.harness.config import track_of as modality_of
    from experiments.plugins import check_run_plugins

    check_run_plugins(run_dir, config)  # its networks and features need their plug-ins

    if modality_of(cfg.get("dataset", "synthetic")) == "clip":
        raise UserError(f"{run_dir} is a video-clip run ({cfg.get('dataset')}); emologic query answers image "
                        "runs (see its learned rules with: emologic rules " + str(run_dir) + ")")
    seeds = seeds_with_checkpoints(run_dir)
    if seed is None:
        listed = [s for s in cfg.get("seeds", []) if s in seeds]
        if not (listed or seeds):
            raise UserError(f"{run_dir}: no checkpoints yet (is the run finished?)")
        seed = (listed or seeds)[0]
    elif seed not in seeds:
        raise UserError(f"{run_dir}: no checkpoints for seed {seed}; seeds: "
                        f"{', '.join(map(str, seeds)) or 'none'}")
    regime, why = choose_regime(run_dir, seed, regime)
    meta = read_json(run_dir / "checkpoints" / f"seed{seed}" / regime / "model.json")
    return RunCheckpoint(run_dir, cfg, seed, regime, why, meta)
