"""The (seed, regime) units of a run as Ray tasks: ``joint_vs_frozen.py --ray [ADDRESS]``.

Stage 0 is trained (or loaded) once here, in the driver, exactly as in a serial
run, and put in Ray's object store with the cached data, so every unit reads
the same networks and tensors, on whichever machine it runs. Each unit is one
Ray task, a pure function of its (regime, seed) and those objects: it trains in a
temporary directory on its worker and returns its result and the files it wrote
(checkpoint, TensorBoard events). Only the driver writes into the run directory
and ``state.json``, unit by unit as they arrive, so:

* the run directory is the one a serial run writes (same results.json figures:
  every regime seeds torch with its seed, and each worker uses the serial run's
  torch thread count, so float sums happen in the same order);
* a worker that dies leaves nothing behind; Ray runs its task again
  (``max_retries``) and the unit is recorded once;
* an interrupted run keeps every unit that arrived, and ``--resume`` finishes it
  serially or on Ray alike (the state file does not say how a unit was run).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from neural.cluster import connect_ray
from neural.files import atomic_write_bytes

#: Called in the worker with (regime, seed) after the unit trained, before it returns (fault injection in tests).
UnitHook = Callable[[str, int], None]
#: ``unit_fn(shared, stage0, regime, seed, unit_dir, tb_dir, device) -> result with to_json()``, run on a worker
UnitFn = Callable


def run_unit_task(unit_fn: UnitFn, shared, stage0, regime: str, seed: int, threads: int, device: str,
                  hook: UnitHook | None):
    """One worker's unit: ``(result json, {relative path: bytes} of its files, seconds)``."""
    import tempfile

    import torch

    # the serial run's thread count: the same float summation order, the same numbers
    torch.set_num_threads(threads)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"emologic-unit-{regime}-{seed}-") as tmp:
        tmp = Path(tmp)
        result = unit_fn(shared, stage0, regime, seed, tmp / "unit", tmp / "tb", device)
        files = {str(p.relative_to(tmp)): p.read_bytes() for p in sorted(tmp.rglob("*")) if p.is_file()}
    if hook is not None:
        hook(regime, seed)
    return result.to_json(), files, time.perf_counter() - start


@dataclass(frozen=True)
class RaySweep:
    """How to spread a run's units over Ray (see the module doc)."""

    address: str | None = None  # None: a local Ray on this machine
    workers: int | None = None  # units at the same time (None: as many as Ray schedules)
    device: str = "cpu"  # where each unit trains
    threads: int | None = None  # torch threads per unit (None: this process's count, as a serial run)
    cpus_per_unit: float = 1.0
    gpus_per_unit: float | None = None  # None: 1 when device is cuda, else 0
    max_retries: int = 3
    hook: UnitHook | None = None

    def run_units(self, cfg, state, run_dir: Path, timings: dict, make_stage0, unit_fn: UnitFn, shared,
                  save_state) -> dict:
        """Stage 0 here, then every unfinished unit on Ray; returns the stage-0 networks by seed (a string)."""
        import torch

        stage0s, units = {}, []
        for seed in cfg.seeds:
            s0 = seed if cfg.stage0_per_seed else cfg.seeds[0]
            if str(s0) not in stage0s:
                t = time.time()
                stage0s[str(s0)] = make_stage0(s0, run_dir / "checkpoints" / f"stage0-seed{s0}")
                timings["stage0"] = timings.get("stage0", 0.0) + time.time() - t
            units += [(regime, seed, str(s0)) for regime in cfg.regimes if not state.is_done(regime, seed)]
        if not units:
            return stage0s
        ray = connect_ray(self.address, num_cpus=self.workers)
        gpus = self.gpus_per_unit if self.gpus_per_unit is not None else (1.0 if self.device.startswith("cuda") else 0.0)
        task = ray.remote(run_unit_task).options(num_cpus=self.cpus_per_unit, num_gpus=gpus,
                                                 max_retries=self.max_retries, retry_exceptions=False)
        threads = self.threads or torch.get_num_threads()
        shared_ref = ray.put(shared)  # the cached data once, not once per unit
        stage0_refs = {k: ray.put(v) for k, v in stage0s.items()}

        def submit(unit):
            regime, seed, s0 = unit
            return task.remote(unit_fn, shared_ref, stage0_refs[s0], regime, seed, threads, self.device, self.hook)

        limit = self.workers or len(units)
        in_flight = {submit(u): u for u in units[:limit]}
        queued = list(units[limit:])
        try:
            while in_flight:
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    regime, seed, _ = in_flight.pop(ref)
                    result, files, seconds = ray.get(ref)
                    unit_dir = run_dir / "checkpoints" / f"seed{seed}" / regime
                    for rel, data in files.items():
                        top, _, rest = rel.partition("/")
                        # "unit/..." is the unit's checkpoint; "tb/..." its TensorBoard events
                        atomic_write_bytes((unit_dir if top == "unit" else run_dir / top) / rest, data)
                    state.mark_done(regime, seed, result)
                    save_state(run_dir, state)
                    timings[regime] = timings.get(regime, 0.0) + seconds
                    if queued:  # keep `workers` units in flight, no more
                        nxt = queued.pop(0)
                        in_flight[submit(nxt)] = nxt
        finally:
            for ref in in_flight:  # interrupted: what arrived is saved; the rest runs on --resume
                ray.cancel(ref)
        return stage0s
