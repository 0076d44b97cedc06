"""The joint-vs-frozen comparison, for every track: data, stage 0, regimes x seeds, results, report.

``run(cfg, argv)`` is what ``python experiments/joint_vs_frozen.py`` does. The data
set's track (:mod:`experiments.harness.image_track`, :mod:`experiments.harness.clip_track`)
provides the data, stage 0, the units and the results; this loop drives it into a
run directory that holds:

    config.json            the resolved config and the exact command
    state.json             finished (regime, seed) units, for --resume
    results.json           per regime and seed, plus means and stds over seeds
    report.md              the comparison as tables, with command and config
    plots/*.png            training curves, source trajectories, confusions, drift
    tb/                    TensorBoard event logs
    checkpoints/stage0-seed<S>/                      stage-0 networks (the track's)
    checkpoints/seed<S>/<regime>/                    the regime's checkpoint (the track's)
"""
from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from pathlib import Path

from experiments.harness.config import HarnessConfig
from experiments.harness.track import Track, log, stage0, track_class
from experiments.harness.resume import check_resumable
from experiments.runs import (
    RunState,
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
from experiments.tensorboard import TBLogger
from neural.common import UserError


def open_run(cfg: HarnessConfig, argv: list[str], resume: str | None) -> tuple[Path, RunState, str]:
    """A new run directory (or the one to resume, refusing another config): ``(run_dir, state, command)``."""
    command = format_command([sys.executable.rsplit("/", 1)[-1], "experiments/joint_vs_frozen.py", *argv])
    fingerprint = config_fingerprint(cfg.to_dict())
    if resume:
        run_dir = resolve_run(resume, cfg.runs_dir)
        state = load_state(run_dir)
        check_resumable(run_dir, state, cfg.to_dict())
        log(f"resuming {run_dir} ({len(state.completed())} unit(s) done)")
    else:
        run_dir = new_run_dir(cfg.runs_dir, cfg.name, latest=False)  # `latest` moves when it finishes
        _OPENED.append(run_dir)
        state = RunState(fingerprint=fingerprint, units={})
        save_state(run_dir, state)
    write_resolved_config(run_dir, cfg.to_dict(), argv)
    log(f"run directory: {run_dir}")
    return run_dir, state, command


def finish_run(run_dir: Path, results: dict, command: str, cfg: HarnessConfig, plots: dict) -> None:
    """Write ``results.json`` and ``report.md`` and print the summary."""
    from experiments.reports.render import render_report, summary_lines

    atomic_write_json(run_dir / "results.json", results)
    atomic_write_text(run_dir / "report.md", render_report(results, command, cfg.to_dict(), plots=plots))
    (run_dir / "FAILED").unlink(missing_ok=True)  # a resumed run that failed before
    mark_latest(run_dir)
    for line in summary_lines(results):
        log(line)
    log(f"\nrun directory: {run_dir}")
    log(f"report: {run_dir / 'report.md'}")


def run_units(track: Track, state: RunState, run_dir: Path, timings: dict, tb, sweep=None) -> dict:
    """The seeds x regimes loop: stage 0 once (or once per seed with ``--stage0-per-seed``),
    then every unfinished (regime, seed) unit, each saved and marked done as it finishes,
    so Ctrl-C keeps them for ``--resume``. Returns the stage-0 networks by their seed (as a string).

    ``sweep`` (:class:`experiments.harness.sweep.RaySweep`): the units run as Ray tasks
    (:func:`remote_unit` on the track), and so does the training of stage 0
    (:func:`remote_stage0`) where none is there to load.
    """
    cfg = track.cfg

    def make_stage0(seed: int, directory: Path, **kw):
        return stage0(track, seed, directory, tb=tb, **kw)

    if sweep is not None:
        try:
            return sweep.run_units(cfg, state, run_dir, timings, make_stage0, remote_unit, track, save_state,
                                   remote_stage0)
        except KeyboardInterrupt:
            log(f"\ninterrupted: finished units are saved in {run_dir}; continue with --resume {run_dir}")
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
                unit_dir = run_dir / "checkpoints" / f"seed{seed}" / regime
                result = track.run_unit(regime, seed, current, current_dir, unit_dir, tb)
                state.mark_done(regime, seed, result.to_json())
                save_state(run_dir, state)
                timings[regime] = timings.get(regime, 0.0) + time.time() - t
    except KeyboardInterrupt:
        log(f"\ninterrupted: finished units are saved in {run_dir}; continue with --resume {run_dir}")
        raise
    return stage0s


def remote_stage0(track: Track, seed: int):
    """Stage 0 of ``seed`` on a Ray worker (:mod:`experiments.harness.sweep`); the driver saves it."""
    return track.train_stage0(seed)


def remote_unit(track: Track, stage0, regime: str, seed: int, unit_dir: Path, tb_dir: Path, device: str):
    """One unit on a Ray worker (:mod:`experiments.harness.sweep`), with its own TensorBoard log."""
    with TBLogger(tb_dir) as tb:
        return track.run_unit(regime, seed, stage0, None, unit_dir, tb)


#: Run directories created by this call of :func:`run` (by :func:`open_run`).
_OPENED: list[Path] = []


def _abandon(run_dir: Path, exc: BaseException) -> None:
    """A new run that failed: removed when no (regime, seed) unit finished (nothing in it is
    worth keeping: stage 0 is also saved beside the cache), else marked failed; ``latest``
    never points at it. An interrupted run is kept for --resume."""
    if isinstance(exc, KeyboardInterrupt) or not run_dir.is_dir():
        return
    if not load_state(run_dir).completed():
        shutil.rmtree(run_dir, ignore_errors=True)
        log(f"run failed before any unit finished; removed {run_dir}")
    else:
        atomic_write_text(run_dir / "FAILED", f"{type(exc).__name__}: {exc}\n")
        log(f"run failed; finished units are kept in {run_dir} (marked FAILED); continue with --resume {run_dir}")


def run(cfg: HarnessConfig, argv: list[str], resume: str | None = None, sweep=None) -> Path:
    """The whole comparison on the data set's track.

    ``sweep``: a :class:`experiments.harness.sweep.RaySweep` runs the units on Ray (same run directory)."""
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
    kind = track_class(cfg.track)
    if sweep is not None and not kind.supports_ray:
        raise UserError(f"--ray runs the units of image data sets; {cfg.dataset} ({cfg.track}s) runs on this machine")
    if sweep is not None:  # the units train where the config says (a GPU per unit when it is cuda)
        sweep = dataclasses.replace(sweep, device=cfg.device)
    track = kind(cfg)  # the program, checked against the track before a run directory exists
    run_dir, state, command = open_run(cfg, argv, resume)
    timings: dict[str, float] = {}
    track.load(timings)
    tb = TBLogger(run_dir / "tb")
    try:
        stage0s = run_units(track, state, run_dir, timings, tb, sweep)
    finally:
        tb.close()
    t = time.time()
    results = {"dataset": cfg.dataset, **track.results(state, stage0s)}
    plots = write_plots(results, run_dir)
    timings["report"] = time.time() - t
    results["timings"] = timings
    finish_run(run_dir, results, command, cfg, plots)
    return run_dir


def write_plots(results: dict, run_dir: Path) -> dict[str, str]:
    import numpy as np

    from experiments.reports.plots import plot_confusions, plot_drift, plot_source_trajectories, plot_training_curves
    from neural.common import EMOTIONS

    out = run_dir / "plots"
    confusions = {
        r: np.sum([np.asarray(s["confusion"]) for s in v["per_seed"].values() if s.get("confusion")], axis=0)
        for r, v in results["regimes"].items()
    }
    paths = {
        "training curves": plot_training_curves(results, out / "training_curves.png"),
        "source probabilities": plot_source_trajectories(results, out / "source_trajectories.png"),
        "confusion matrices": plot_confusions(confusions, list(EMOTIONS), out / "confusions.png"),
        "parameter drift": plot_drift(results, out / "drift.png"),
    }
    return {k: str(Path(v).relative_to(run_dir)) for k, v in paths.items()}
