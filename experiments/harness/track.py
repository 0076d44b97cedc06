"""What one kind of data (images, video clips) brings to the harness loop.

:func:`experiments.harness.loop.run` drives a :class:`Track`: it opens the run,
has the track load its data, gets stage 0 per seed (:func:`stage0`: loaded from the
run, reused from the cache, or trained), runs every (regime, seed) unit serially or
on Ray, collects the results and writes the report. A track provides those steps
for its data; nothing in the loop knows which track it drives.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from experiments.harness.config import HarnessConfig
from experiments.regimes import Regime, get_regime
from experiments.metrics import aggregate_seeds
from experiments.runs import RunState, config_fingerprint


def log(msg: str) -> None:
    print(msg, flush=True)


class Track:
    """One track of the harness. Subclasses set :attr:`name` and implement the steps below."""

    name: str = ""
    #: the units can run as Ray tasks (``--ray``)
    supports_ray: bool = False
    #: what a stage-0 reuse from the cache shares with the run that trained it (for the log line)
    reuse_reason: str = "same training data, stage-0 settings and seed"
    #: per seed: the keys of a unit's results that are aggregated over seeds
    summary_keys: tuple[str, ...] = ()

    def __init__(self, cfg: HarnessConfig):
        self.cfg = cfg
        self.program = self.load_program()

    def __getstate__(self) -> dict:
        # shipped to Ray workers without the program: each loads its own (compiled circuits stay per process),
        # with the plug-ins this process loaded, whose networks the program and the stage-0 networks hold
        from experiments.plugins import loaded_plugins

        return {k: v for k, v in self.__dict__.items() if k != "program"} | {"plugins": loaded_plugins()}

    def __setstate__(self, state: dict) -> None:
        from experiments.plugins import load_recorded

        load_recorded(state.pop("plugins", []))
        self.__dict__.update(state)
        self.program = self.load_program()

    # -- the config ------------------------------------------------------------
    @classmethod
    def config_problems(cls, cfg: HarnessConfig) -> list[str]:
        """Problems of a resolved config that only this track knows about."""
        return []

    # -- data -------------------------------------------------------------------
    def load_program(self):
        raise NotImplementedError

    def load(self, timings: dict) -> None:
        """Load the data (and what the track derives from it), filling ``timings``."""
        raise NotImplementedError

    # -- stage 0 ----------------------------------------------------------------
    def stage0_key(self, seed: int) -> dict:
        """What a stage-0 result of ``seed`` depends on (equal keys: reusable)."""
        raise NotImplementedError

    def shared_stage0_dir(self, seed: int) -> Path:
        """Where stage 0 of ``seed`` is kept beside the cache, for later runs."""
        return self.data.cache_dir / "stage0" / config_fingerprint(self.stage0_key(seed))[:16]

    def load_stage0(self, directory: Path):
        """Stage-0 networks saved in ``directory``, or ``None``."""
        raise NotImplementedError

    def save_stage0(self, stage0, directory: Path) -> None:
        raise NotImplementedError

    def keep_stage0(self, stage0, shared: Path, directory: Path) -> None:
        """Put the stage-0 networks kept in ``shared`` into the run's ``directory``."""
        self.save_stage0(stage0, directory)

    def train_stage0(self, seed: int, tb=None):
        raise NotImplementedError

    # -- units ------------------------------------------------------------------
    def run_regime(self, regime: Regime, seed: int, stage0, stage0_dir: Path, unit_dir: Path, tb):
        """One (regime, seed) unit from the stage-0 networks (left as they are), its checkpoint in
        ``unit_dir``; returns a result with ``to_json()``."""
        raise NotImplementedError

    def run_unit(self, regime: str, seed: int, stage0, stage0_dir: Path, unit_dir: Path, tb):
        return self.run_regime(get_regime(regime), seed, stage0, stage0_dir, unit_dir, tb)

    # -- results ----------------------------------------------------------------
    def results(self, state: RunState, stage0s: dict) -> dict:
        """The track's sections of ``results.json`` (the loop adds the regimes and timings)."""
        raise NotImplementedError

    def summary_row(self, result: dict) -> dict:
        """What of one unit's results is aggregated over seeds."""
        return {k: result.get(k) for k in self.summary_keys}

    def regime_results(self, state: RunState) -> dict:
        """Per regime: every seed's results and their means and stds over seeds."""
        out = {}
        for regime in self.cfg.regimes:
            per_seed = state.seed_results(regime, self.cfg.seeds)
            if per_seed:
                summary = aggregate_seeds([self.summary_row(r) for r in per_seed.values()])
                out[regime] = {"per_seed": per_seed, "summary": summary}
        return out


def skipped_summary(items: list[tuple[str, str]], what: str) -> dict:
    """Every sample left out, counted by reason: ``{"n", "by_reason", what: [[id, reason], ...]}``."""
    by_reason = Counter(reason.split(":", 1)[0] for _, reason in items)
    return {"n": len(items), "by_reason": dict(by_reason.most_common()), what: [list(i) for i in items]}


def stage0(track: Track, seed: int, directory: Path, train: bool = True, trained=None, tb=None):
    """Stage-0 networks of ``seed``: trained once, then reloaded (on --resume, and from
    the cache when another run trained them with an equal :meth:`Track.stage0_key`:
    stage 0 is deterministic in it).

    ``train=False``: ``None`` where they would be trained; ``trained``: networks
    trained elsewhere (a Ray worker, :mod:`experiments.harness.sweep`), saved as these."""
    if trained is None:
        found = track.load_stage0(directory)
        if found is not None:
            log(f"[seed {seed}] stage 0 loaded from {directory}")
            return found
    shared = track.shared_stage0_dir(seed)
    if trained is None:
        found = track.load_stage0(shared)
        if found is not None:
            log(f"[seed {seed}] stage 0 reused from {shared} ({track.reuse_reason})")
            track.keep_stage0(found, shared, directory)
            return found
        if not train:
            return None
        trained = track.train_stage0(seed, tb)
    track.save_stage0(trained, shared)
    track.keep_stage0(trained, shared, directory)
    return trained


def track_class(name: str) -> type[Track]:
    """The :class:`Track` of ``name`` (imported on demand: each pulls in its networks)."""
    if name == "clip":
        from experiments.harness.clip_track import ClipTrack

        return ClipTrack
    from experiments.harness.image_track import ImageTrack

    return ImageTrack
