"""A cache build on Ray workers: ``emologic cache build ... --ray [ADDRESS]``.

    from cache.distributed import RayBuild
    build_cache(dataset, "cache/", cfg, ray=RayBuild(address=None, workers=2))

Who does what:

* the **driver** (this process) decides what is left to compute (resume: the same
  rule as a serial build), cuts it into chunks of ``shard_size`` samples, names
  each chunk's shard up front, and is the only writer of ``manifest.json``;
* a **worker** (one Ray task per chunk) runs the pipeline on its own device
  (MTCNN and the backbones batched, ``cfg.batch_size`` at a time) and writes its
  one shard atomically (temp file + rename). It never touches the manifest.

The driver lists shards in chunk order, so the manifest's samples are in the
data set's order, as in a serial build: the same samples, and, because every
worker runs the same batches as a serial build (chunks are cut at
``shard_size``, a multiple of the batch size by default) with the same torch
thread count, the same tensors bit for bit (``tests/test_distributed_cache.py``).
A worker that dies is retried by Ray (``max_retries``): its shard is rewritten
under the same name, and it is listed once. An interrupted build resumes like a
serial one: shards written but never listed are removed and their samples
computed again.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from neural.cluster import connect_ray

#: Called in a worker with the shard name just before it writes the shard (fault injection in tests).
ChunkHook = Callable[[str], None]

#: pipelines already built in this worker process, by (kind, config, device): Ray reuses worker
#: processes, so each loads its networks once, not once per chunk
_PIPELINES: dict[tuple, object] = {}


def _pipeline(kind_name: str, cfg_dict: dict, device: str):
    from cache.kinds import get_cache_kind

    key = (kind_name, json.dumps(cfg_dict, sort_keys=True, default=str), device)
    if key not in _PIPELINES:
        kind = get_cache_kind(kind_name)
        _PIPELINES[key] = kind.make_pipeline(kind.config_cls.from_dict(cfg_dict), device=device)
    return _PIPELINES[key]


def compute_chunk(kind_name: str, cfg_dict: dict, device: str, threads: int, directory: str, name: str,
                  samples: list, hook: ChunkHook | None = None):
    """One worker's job: process ``samples``, write shard ``name``; ``(WrittenShard | None, skips, seconds)``."""
    import torch

    from cache.kinds import get_cache_kind
    from cache.writer import write_items_shard

    # the serial build's thread count: float sums (hence tensors) do not depend on who computed them
    torch.set_num_threads(threads)
    start = time.perf_counter()
    pipeline = _pipeline(kind_name, cfg_dict, device)
    done, skips = [], []
    for d, s in pipeline.iter_process(samples, progress=False):
        done.extend(d)
        skips.extend(s)
    if hook is not None:
        hook(name)
    written = write_items_shard(Path(directory), name, done, get_cache_kind(kind_name), pipeline.cfg)
    return written, skips, time.perf_counter() - start


@dataclass(frozen=True)
class RayBuild:
    """How to spread a cache build over Ray (see the module doc)."""

    address: str | None = None  # None: a local Ray on this machine; else a cluster's address
    workers: int | None = None  # chunks computed at the same time (None: as many as Ray schedules)
    device: str = "cpu"  # where each worker runs its networks
    cpus_per_worker: float = 1.0
    gpus_per_worker: float | None = None  # None: 1 when device is cuda, else 0
    threads: int | None = None  # torch threads per worker (None: cpus_per_worker, at least 1)
    max_retries: int = 3  # a worker that dies is run again this many times
    hook: ChunkHook | None = None

    def _remote(self, ray):
        gpus = self.gpus_per_worker if self.gpus_per_worker is not None else (1.0 if self.device.startswith("cuda") else 0.0)
        return ray.remote(compute_chunk).options(
            num_cpus=self.cpus_per_worker, num_gpus=gpus, max_retries=self.max_retries,
            # a dead worker process is retried; a Python error in the pipeline is a bug: not retried
            retry_exceptions=False,
        )

    def build(self, writer, todo: list, report, shard_size: int, progress: bool, on_shard) -> None:
        """Compute ``todo`` on Ray, listing each chunk's shard in ``writer``'s manifest in chunk order."""
        if not todo:
            return
        ray = connect_ray(self.address, num_cpus=self.workers)
        task = self._remote(ray)
        threads = self.threads or max(1, int(self.cpus_per_worker))
        cfg_dict = writer.cfg.to_dict()
        chunks = [todo[i:i + shard_size] for i in range(0, len(todo), shard_size)]
        names = writer.new_shard_names(len(chunks))
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc=f"cache {writer.split} (ray)", unit=report.unit, leave=False)

        def submit(i: int):
            return task.remote(writer.kind.name, cfg_dict, self.device, threads, str(writer.directory), names[i],
                               chunks[i], self.hook)

        limit = self.workers or len(chunks)
        in_flight = {submit(i): i for i in range(min(limit, len(chunks)))}
        next_chunk, next_commit = len(in_flight), 0
        finished: dict[int, tuple] = {}
        try:
            while in_flight:
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    i = in_flight.pop(ref)
                    finished[i] = ray.get(ref)
                    if bar is not None:
                        bar.update(len(chunks[i]))
                    if next_chunk < len(chunks):  # keep `workers` chunks in flight, no more
                        in_flight[submit(next_chunk)] = next_chunk
                        next_chunk += 1
                # list shards in chunk order: the manifest's sample order is the data set's
                while next_commit in finished:
                    written, skips, _ = finished.pop(next_commit)
                    report.n_processed += len(chunks[next_commit])
                    name = writer.record(written, skips)
                    if name is not None:
                        report.shards_written += 1
                        if on_shard is not None:
                            on_shard(writer.split, name, written.record["n_samples"])
                    next_commit += 1
        finally:
            for ref in in_flight:  # interrupted: stop what is left; unlisted shards are removed on resume
                ray.cancel(ref)
            if bar is not None:
                bar.close()
