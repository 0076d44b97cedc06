"""The (seed, regime) units of a run as Ray tasks: ``joint_vs_frozen.py --ray [ADDRESS]``.

Stage 0 (per seed, or once) is loaded here where a run or the cache already
has it, else trained by a Ray task; the units of a seed take that task's result
as an argument, so Ray starts them when it is ready. Stage 0 and the cached
data sit in Ray's object store, so every unit reads the same networks and
tensors, on whichever machine it runs; this process saves stage 0 as a serial
run does. Each unit is one
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
from neural.common import atomic_write_bytes

#: Called in the worker with (regime, seed) after the unit trained, before it returns (fault injection in tests).
UnitHook = Callable[[str, int], None]
#: ``unit_fn(shared, stage0, regime, seed, unit_dir, tb_dir, device) -> result with to_json()``, run on a worker
UnitFn = Callable


def run_unit_task(unit_fn: UnitFn, shared, stage0, regime: str, seed: int, threads: int, device: str,
                  hook: UnitHook | None):
    """One worker's unit: ``(result json, {relative path: bytes} of its files, seconds)``."""
    import tempfile

    import torch

    from neural.compute import flush_denormals

    # the serial run's thread count: the same float summation order, the same numbers
    torch.set_num_threads(threads)
    flush_denormals()  # as the serial run does
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"emologic-unit-{regime}-{seed}-") as tmp:
        tmp = Path(tmp)
        result = unit_fn(shared, stage0, regime, seed, tmp / "unit", tmp / "tb", device)
        files = {str(p.relative_to(tmp)): p.read_bytes() for p in sorted(tmp.rglob("*")) if p.is_file()}
    if hook is not None:
        hook(regime, seed)
    return result.to_json(), files, time.perf_counter() - start


def run_stage0_task(stage0_fn: Callable, shared, seed: int, threads: int):
    """Stage 0 of ``seed`` on a worker: ``(networks, seconds)``; the driver saves them."""
    import torch

    from neural.compute import flush_denormals

    torch.set_num_threads(threads)
    flush_denormals()  # as the serial run does
    start = time.perf_counter()
    return stage0_fn(shared, seed), time.perf_counter() - start


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
                  save_state, stage0_fn=None) -> dict:
        """Every unfinished unit on Ray; returns the stage-0 networks by seed (a string).

        Stage 0 is loaded here where it exists (``make_stage0(seed, dir, train=False)``); otherwise it is
        trained by a Ray task ``stage0_fn(shared, seed)`` (here when none is given) whose result the units
        of that seed take as their argument: Ray starts them when it is ready, and this process saves it.
        """
        import torch

        ray = connect_ray(self.address, num_cpus=self.workers)
        gpus = self.gpus_per_unit if self.gpus_per_unit is not None else (1.0 if self.device.startswith("cuda") else 0.0)
        opts = dict(num_cpus=self.cpus_per_unit, num_gpus=gpus, max_retries=self.max_retries, retry_exceptions=False)
        task = ray.remote(run_unit_task).options(**opts)
        threads = self.threads or torch.get_num_threads()
        shared_ref = ray.put(shared)  # the cached data once, not once per unit

        stage0s, stage0_refs, training, units = {}, {}, {}, []
        for seed in cfg.seeds:
            s0 = str(seed if cfg.stage0_per_seed else cfg.seeds[0])
            if s0 not in stage0_refs:
                directory = run_dir / "checkpoints" / f"stage0-seed{s0}"
                pred = make_stage0(int(s0), directory, train=stage0_fn is None)
                if pred is not None:
                    stage0s[s0], stage0_refs[s0] = pred, ray.put(pred)
                else:
                    # two results: the networks (what the units take) and the seconds it took
                    ref, seconds_ref = ray.remote(run_stage0_task).options(**opts, num_returns=2).remote(
                        stage0_fn, shared_ref, int(s0), threads)
                    stage0_refs[s0], training[ref] = ref, (s0, directory, seconds_ref)
            units += [(regime, seed, s0) for regime in cfg.regimes if not state.is_done(regime, seed)]

        def submit(unit):
            regime, seed, s0 = unit
            return task.remote(unit_fn, shared_ref, stage0_refs[s0], regime, seed, threads, self.device, self.hook)

        limit = self.workers or max(1, len(units))
        in_flight = {submit(u): u for u in units[:limit]}
        queued = list(units[limit:])
        try:
            while in_flight or training:
                ready, _ = ray.wait(list(training) + list(in_flight), num_returns=1)
                for ref in ready:
                    if ref in training:  # a stage 0 arrived: saved as a serial run saves it
                        s0, directory, seconds_ref = training.pop(ref)
                        pred, seconds = ray.get(ref), ray.get(seconds_ref)
                        stage0s[s0] = make_stage0(int(s0), directory, trained=pred)
                        timings["stage0"] = timings.get("stage0", 0.0) + seconds
                        continue
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
            for ref in [*in_flight, *training]:  # interrupted: what arrived is saved; the rest runs on --resume
                ray.cancel(ref)
        return {k: stage0s[k] for k in sorted(stage0s, key=lambda k: cfg.seeds.index(int(k)))}
