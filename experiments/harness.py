"""The joint-vs-frozen comparison: data, stage 0, regimes x seeds, results, report.

``run(cfg, argv)`` is what ``python experiments/joint_vs_frozen.py`` does; a clip
data set (``synthetic_clips``, ``meld``) runs the clip track instead
(:mod:`experiments.clip_harness`), into the same kind of run directory. A run
directory holds:

    config.json            the resolved config and the exact command
    state.json             finished (regime, seed) units, for --resume
    results.json           per regime and seed, plus means and stds over seeds
    report.md              the comparison as tables, with command and config
    plots/*.png            training curves, source trajectories, confusions, drift
    tb/                    TensorBoard event logs
    checkpoints/stage0-seed<S>/<network>/            stage-0 networks (safetensors + config)
    checkpoints/seed<S>/<regime>/{networks/,rules.json,model.json}
"""
from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

from experiments.config import HarnessConfig
from experiments.data import load_data
from experiments.face_zero_shot import face_reading
from experiments.metrics import aggregate_seeds
from experiments.regimes import Binding, RegimeResult, confusion_sum, get_regime
from experiments.reports.plots import plot_confusions, plot_drift, plot_source_trajectories, plot_training_curves
from experiments.reports.render import render_report, summary_lines
from experiments.resume import check_resumable
from experiments.runs import (
    RunState,
    TBLogger,
    atomic_write_json,
    atomic_write_text,
    config_fingerprint,
    format_command,
    load_state,
    mark_latest,
    new_run_dir,
    resolve_run,
    save_state,
    write_resolved_config,
)
from experiments.stage0 import Predicates, load_predicates, save_predicates, train_stage0
from logic.engines import engine_class
from logic.program import available_programs, load_program
from neural.errors import UserError
from neural.registry import save_network
from neural.vocabulary import FACE_SLOTS
from pipelines.pipeline import feature_provenance
from neural.vocabulary import EMOTIONS


def _log(msg: str) -> None:
    print(msg, flush=True)


#: bumped when stage-0 training changes, so older reusable stage-0 networks are not reused
STAGE0_VERSION = 4
STAGE0_KEYS = ("stage0_epochs", "head_epochs", "stage0_lr", "face_lr", "face_weights", "face_init", "unfreeze_layer4",
               "layer4_lr")


def _load_stage0(directory: Path) -> Predicates | None:
    marker = directory / "stage0.json"
    if not marker.is_file():
        return None
    info = json.loads(marker.read_text())
    pred = load_predicates(directory, info["face_source"])
    pred.metrics = info["metrics"]
    return pred


def _save_stage0(pred: Predicates, directory: Path) -> None:
    save_predicates(pred, directory)
    atomic_write_json(directory / "stage0.json", {"face_source": pred.face_source, "metrics": pred.metrics})


def stage0_key(cfg: HarnessConfig, data, seed: int, needs_va: bool) -> dict:
    """What stage 0 of ``seed`` depends on, and so what reusing it requires to be equal:
    the content it was trained and selected on (sample ids, labels, image hashes and
    annotations of the pretrain and val splits -- not where the data set lives), the
    pipeline that made the features and the stage-0 settings. With a V/A source the
    test split too: stage 0 records the V/A regressor's test metrics."""
    splits = ("pretrain", "val", "test") if needs_va else ("pretrain", "val")
    return {k: getattr(cfg, k) for k in STAGE0_KEYS} | {
        "seed": seed, "va": needs_va, "version": STAGE0_VERSION,
        "pipeline": data.pipeline.semantic_dict(),
        "data": {s: data.split(s).content_digest() for s in splits},
    }


def stage0(cfg: HarnessConfig, data, seed: int, needs_va: bool, directory: Path, train: bool = True,
           trained: Predicates | None = None) -> Predicates | None:
    """Stage-0 networks of ``seed``: trained once, then reloaded (on --resume, and
    from the tensor cache when another run trained them on the same cached data
    with the same stage-0 settings and seed: stage 0 is deterministic in those).

    ``train=False``: ``None`` where they would be trained; ``trained``: networks
    trained elsewhere (a Ray worker, :mod:`experiments.sweep`), saved as these."""
    if trained is None:
        pred = _load_stage0(directory)
        if pred is not None:
            _log(f"[seed {seed}] stage 0 loaded from {directory}")
            return pred
    shared = data.cache_dir / "stage0" / config_fingerprint(stage0_key(cfg, data, seed, needs_va))[:16]
    if trained is None:
        pred = _load_stage0(shared)
        if pred is not None:
            _log(f"[seed {seed}] stage 0 reused from {shared} (same training data, stage-0 settings and seed)")
            _save_stage0(pred, directory)
            return pred
        if not train:
            return None
        trained = train_stage0(cfg, data, seed, needs_va, log=_log)
    _save_stage0(trained, shared)
    _save_stage0(trained, directory)
    return trained


def save_regime(result: RegimeResult, pred: Predicates, cfg: HarnessConfig, data, directory: Path, regime: str) -> None:
    """A checkpoint that rebuilds the trained program (used by ``emologic query``)."""
    nets = directory / "networks"
    if regime == "late_fusion":
        save_network(result.model, nets / "late_fusion")
    else:
        save_predicates(pred, nets)
        result.model.save_rules(directory / "rules.json")
    atomic_write_json(directory / "model.json", {
        "regime": regime,
        "program": cfg.program,
        "engine": cfg.engine,
        "face_size_threshold": cfg.face_size_threshold,
        "face_source": pred.face_source,
        "pipeline": data.pipeline.to_dict(),
        "provenance": result.provenance,
        "networks": "networks",
        "rules": None if regime == "late_fusion" else "rules.json",
    })


def open_run(cfg: HarnessConfig, argv: list[str], resume: str | None) -> tuple[Path, RunState, str]:
    """A new run directory (or the one to resume, refusing another config): ``(run_dir, state, command)``."""
    command = format_command([sys.executable.rsplit("/", 1)[-1], "experiments/joint_vs_frozen.py", *argv])
    fingerprint = config_fingerprint(cfg.to_dict())
    if resume:
        run_dir = resolve_run(resume, cfg.runs_dir)
        state = load_state(run_dir)
        check_resumable(run_dir, state, cfg.to_dict())
        _log(f"resuming {run_dir} ({len(state.completed())} unit(s) done)")
    else:
        run_dir = new_run_dir(cfg.runs_dir, cfg.name, latest=False)  # `latest` moves when it finishes
        _OPENED.append(run_dir)
        state = RunState(fingerprint=fingerprint, units={})
        save_state(run_dir, state)
    write_resolved_config(run_dir, cfg.to_dict(), argv)
    _log(f"run directory: {run_dir}")
    return run_dir, state, command


def finish_run(run_dir: Path, results: dict, command: str, cfg: HarnessConfig, plots: dict) -> None:
    """Write ``results.json`` and ``report.md`` and print the summary."""
    atomic_write_json(run_dir / "results.json", results)
    atomic_write_text(run_dir / "report.md", render_report(results, command, cfg.to_dict(), plots=plots))
    (run_dir / "FAILED").unlink(missing_ok=True)  # a resumed run that failed before
    mark_latest(run_dir)
    for line in summary_lines(results):
        _log(line)
    _log(f"\nrun directory: {run_dir}")
    _log(f"report: {run_dir / 'report.md'}")


def run_units(cfg: HarnessConfig, state: RunState, run_dir: Path, timings: dict, make_stage0, run_unit,
              sweep=None, remote_unit=None, shared=None, remote_stage0=None) -> dict:
    """The seeds x regimes loop of both tracks: stage 0 once (or once per seed with
    ``--stage0-per-seed``), then every unfinished (regime, seed) unit, each saved
    and marked done as it finishes, so Ctrl-C keeps them for ``--resume``.

    make_stage0(stage0_seed, directory) -> stage-0 networks
    run_unit(regime, seed, stage0, stage0_directory, unit_directory) -> result with ``to_json()``
    Returns the stage-0 networks by their seed (as a string).

    ``sweep`` (:class:`experiments.sweep.RaySweep`): the units run as Ray tasks,
    ``remote_unit(shared, stage0, regime, seed, unit_dir, tb_dir, device)`` on ``shared``, and so does
    the training of stage 0 (``remote_stage0(shared, seed)``) where ``make_stage0(seed, directory,
    train=False)`` finds none to load; ``make_stage0(seed, directory, trained=networks)`` saves it.
    """
    if sweep is not None:
        try:
            return sweep.run_units(cfg, state, run_dir, timings, make_stage0, remote_unit, shared, save_state,
                                   remote_stage0)
        except KeyboardInterrupt:
            _log(f"\ninterrupted: finished units are saved in {run_dir}; continue with --resume {run_dir}")
            raise
    stage0s: dict = {}
    try:
        current = current_dir = None
        for seed in cfg.seeds:
            if current is None or cfg.stage0_per_seed:
                t = time.time()
                s0 = seed if cfg.stage0_per_seed else cfg.seeds[0]
                current_dir = run_dir / "checkpoints" / f"stage0-seed{s0}"
                current = stage0s[str(s0)] = make_stage0(s0, current_dir)
                timings["stage0"] = timings.get("stage0", 0.0) + time.time() - t
            for regime in cfg.regimes:
                if state.is_done(regime, seed):
                    continue
                t = time.time()
                result = run_unit(regime, seed, current, current_dir, run_dir / "checkpoints" / f"seed{seed}" / regime)
                state.mark_done(regime, seed, result.to_json())
                save_state(run_dir, state)
                timings[regime] = timings.get(regime, 0.0) + time.time() - t
    except KeyboardInterrupt:
        _log(f"\ninterrupted: finished units are saved in {run_dir}; continue with --resume {run_dir}")
        raise
    return stage0s


def train_unit(cfg: HarnessConfig, data, program, features: dict, pred: Predicates, regime: str, seed: int,
               unit_dir: Path, tb) -> RegimeResult:
    """One (regime, seed) unit of the image track, its checkpoint saved in ``unit_dir``."""
    own = copy.deepcopy(pred)  # every regime starts from the same stage-0 networks
    result = get_regime(regime)(cfg, data, program, own, seed, log=_log, tb=tb)
    result.provenance = Binding(program, own).provenance(features)
    save_regime(result, own, cfg, data, unit_dir, regime)
    return result


def remote_image_stage0(shared: dict, seed: int) -> Predicates:
    """Stage 0 of ``seed`` on a Ray worker (:mod:`experiments.sweep`); the driver saves it."""
    return train_stage0(shared["cfg"], shared["data"], seed, shared["needs_va"], log=_log)


def remote_image_unit(shared: dict, pred: Predicates, regime: str, seed: int, unit_dir: Path, tb_dir: Path,
                      device: str) -> RegimeResult:
    """:func:`train_unit` on a Ray worker (:mod:`experiments.sweep`): its own program and TensorBoard log."""
    with TBLogger(tb_dir) as tb:
        return train_unit(shared["cfg"], shared["data"], load_program(shared["cfg"].program), shared["features"],
                          pred, regime, seed, unit_dir, tb)


#: Run directories created by this call of :func:`run` (by :func:`open_run`, for either track).
_OPENED: list[Path] = []


def _abandon(run_dir: Path, exc: BaseException) -> None:
    """A new run that failed: removed when no (regime, seed) unit finished (nothing in it is
    worth keeping: stage 0 is also saved beside the cache), else marked failed; ``latest``
    never points at it. An interrupted run is kept for --resume."""
    if isinstance(exc, KeyboardInterrupt) or not run_dir.is_dir():
        return
    if not load_state(run_dir).completed():
        shutil.rmtree(run_dir, ignore_errors=True)
        _log(f"run failed before any unit finished; removed {run_dir}")
    else:
        atomic_write_text(run_dir / "FAILED", f"{type(exc).__name__}: {exc}\n")
        _log(f"run failed; finished units are kept in {run_dir} (marked FAILED); continue with --resume {run_dir}")


def run(cfg: HarnessConfig, argv: list[str], resume: str | None = None, sweep=None) -> Path:
    """The whole comparison; a clip data set runs the clip track (:mod:`experiments.clip_harness`).

    ``sweep``: a :class:`experiments.sweep.RaySweep` runs the units on Ray (same run directory)."""
    _OPENED.clear()
    try:
        return _run(cfg, argv, resume, sweep)
    except BaseException as exc:
        for run_dir in _OPENED:
            _abandon(run_dir, exc)
        raise
    finally:
        _OPENED.clear()


def _run(cfg: HarnessConfig, argv: list[str], resume: str | None, sweep=None) -> Path:
    cfg.validate()
    cfg = cfg.resolved()
    if cfg.modality == "clip":
        if sweep is not None:
            raise UserError(f"--ray runs the units of image data sets; {cfg.dataset} (clips) runs on this machine")
        from experiments.clip_harness import run_clips

        return run_clips(cfg, argv, resume)
    if sweep is not None:  # the units train where the config says (a GPU per unit when it is cuda)
        sweep = dataclasses.replace(sweep, device=cfg.device)
    run_dir, state, command = open_run(cfg, argv, resume)

    timings: dict[str, float] = {}
    t = time.time()
    program = load_program(cfg.program)
    if program.kind != "image":
        raise UserError(f"--program {cfg.program} is a {program.kind} program; image data sets need an image "
                        f"program ({', '.join(available_programs('image'))})")
    needs_va = "va_valence" in program.networks
    if cfg.va_backbone != "scene" and not needs_va:
        raise UserError(f"--va-backbone {cfg.va_backbone} applies to programs with a V/A source "
                        f"(va_selection); {cfg.program} has none")
    data = load_data(cfg)
    timings["data_and_cache"] = time.time() - t
    engine = engine_class(cfg.engine)
    if not engine.torch_rules:
        _log(f"note: rule parameters: {engine.rule_training} (the compiled engine: Adam on "
             "logits), so learned rules differ between engines; with --rule-lr 0 both give the same numbers")
    _log(data.build_summary)
    _log(data.dataset.describe())
    features = feature_provenance(data.pipeline, data.split("train").manifests[0].get("identity"))
    tb = TBLogger(run_dir / "tb")

    def run_unit(regime: str, seed: int, pred: Predicates, stage0_dir: Path, unit_dir: Path) -> RegimeResult:
        return train_unit(cfg, data, program, features, pred, regime, seed, unit_dir, tb)

    try:
        stage0s = run_units(cfg, state, run_dir, timings, lambda s0, d, **kw: stage0(cfg, data, s0, needs_va, d, **kw),
                            run_unit, sweep, remote_image_unit,
                            {"cfg": cfg, "data": data, "features": features, "needs_va": needs_va},
                            remote_image_stage0)
    finally:
        tb.close()
    stage0_metrics = {s: pred.metrics for s, pred in stage0s.items()}

    t = time.time()
    results = collect_results(cfg, state, data, stage0_metrics, timings)
    if any(slot in program.tensor_networks for slot in FACE_SLOTS):  # the program reads faces
        results["face_reading"] = face_reading(data, next(iter(stage0s.values())).face_net)
    plots = write_plots(results, run_dir)
    timings["report"] = time.time() - t
    results["timings"] = timings
    finish_run(run_dir, results, command, cfg, plots)
    return run_dir


def collect_results(cfg: HarnessConfig, state: RunState, data, stage0_metrics: dict, timings: dict) -> dict:
    regimes = {}
    for regime in cfg.regimes:
        per_seed = state.seed_results(regime, cfg.seeds)
        if not per_seed:
            continue
        summary = aggregate_seeds([
            {"metrics": r["metrics"], "source_table_mae": r.get("source_table_mae"),
             "posterior_agreement": r.get("posterior_agreement"), "wall_time_s": r.get("wall_time_s"),
             # the V/A source (programs with one): test metrics and circumplex error, not the table itself
             "va": {k: v for k, v in (r.get("va") or {}).items() if k != "circumplex"} or None}
            for r in per_seed.values()
        ])
        regimes[regime] = {"per_seed": per_seed, "summary": summary}
    return {
        "dataset": cfg.dataset,
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
        "skipped": {"n": len(data.skipped),
                    "by_reason": dict(Counter(reason.split(":", 1)[0] for _, reason in data.skipped).most_common()),
                    "images": [list(item) for item in data.skipped]},
        "timings": timings,
    }


def write_plots(results: dict, run_dir: Path) -> dict[str, str]:
    out = run_dir / "plots"
    confusions = {
        r: confusion_sum([s["confusion"] for s in v["per_seed"].values() if s.get("confusion")])
        for r, v in results["regimes"].items()
    }
    paths = {
        "training curves": plot_training_curves(results, out / "training_curves.png"),
        "source probabilities": plot_source_trajectories(results, out / "source_trajectories.png"),
        "confusion matrices": plot_confusions(confusions, list(EMOTIONS), out / "confusions.png"),
        "parameter drift": plot_drift(results, out / "drift.png"),
    }
    return {k: str(Path(v).relative_to(run_dir)) for k, v in paths.items()}
