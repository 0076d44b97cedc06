"""Build (and resume) the tensor cache of a data set.

    report = build_cache(get_dataset("synthetic", root=...), "cache/", PipelineConfig())
    report = build_cache(get_dataset("meld", root=...), "cache/meld", ClipPipelineConfig())
    print(report.summary())

Images and clips share this code; what differs (the pipeline, the shard
layout, the per-sample manifest fields) comes from their :mod:`cache.kinds`
entry, chosen by the config's class (or the data set's ``modality`` when no
config is given). The manifest records the kind.

Resuming: a sample is finished when the manifest lists it in a shard, and the
manifest only lists a shard after the shard file is completely written. A
rerun after an interruption (or with more samples) computes only what is not
finished; a finished sample whose image file changed since (other sha256), or
whose label or annotations in the data set changed, is computed again, and
samples the data set no longer puts in a split are forgotten there. Previously
skipped samples are retried (their file may have been fixed). A rerun with
another pipeline config or other backbone weights raises
:class:`CacheConfigMismatch` naming the keys that differ.

One writer at a time: the cache directory is locked while it is written
(:func:`cache.store.cache_lock`). Damage that ``cache verify`` reports (missing
or changed shards, a broken manifest) is rebuilt by the next build, or refused
before anything is written (``repair=False``, the harness without --rebuild-cache).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cache.kinds import kind_of_config, kind_of_dataset
from cache.store import CacheConfigMismatch, DEFAULT_SPLIT, cache_lock, check_config, split_dir  # noqa: F401 (re-exported)
from cache.writer import SplitWriter
from neural.common import UserError
from pipelines.pipeline import Skip

DEFAULT_SHARD_SIZE = 256

#: ``on_shard(split, shard_name, n_samples)`` is called after each shard is committed.
ShardHook = Callable[[str, str, int], None]


@dataclass
class SplitBuildReport:
    split: str
    directory: Path
    n_samples: int  # samples asked for
    n_reused: int  # finished before this run, not recomputed
    n_processed: int  # computed in this run (cached or skipped)
    n_cached: int  # in the cache after this run (of the samples asked for)
    skipped: list[Skip] = field(default_factory=list)  # of the samples asked for
    n_changed: int = 0  # finished before, source file changed since, recomputed
    n_relabelled: int = 0  # finished before, label or annotations changed since, recomputed
    n_removed: int = 0  # cached before, no longer in this split of the data set, forgotten
    n_repaired: int = 0  # damaged shards/entries (or a damaged manifest) dropped and rebuilt
    hashes: dict[str, str] = field(default_factory=dict)  # sha256 of each sample's source file now
    shards_written: int = 0
    seconds: float = 0.0
    unit: str = "img"  # what a sample is, for messages ("img" | "clip")

    @property
    def per_second(self) -> float:
        """Samples computed (cached or skipped) per second in this run."""
        return self.n_processed / self.seconds if self.seconds > 0 else float("nan")

    images_per_second = per_second


@dataclass
class BuildReport:
    splits: dict[str, SplitBuildReport]

    @property
    def n_processed(self) -> int:
        return sum(r.n_processed for r in self.splits.values())

    @property
    def n_cached(self) -> int:
        return sum(r.n_cached for r in self.splits.values())

    @property
    def n_reused(self) -> int:
        return sum(r.n_reused for r in self.splits.values())

    @property
    def skipped(self) -> list[Skip]:
        return [s for r in self.splits.values() for s in r.skipped]

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.splits.values())

    def skip_counts(self) -> dict[str, int]:
        """Skips per kind of reason (the reason without the file-specific part)."""
        counts: dict[str, int] = {}
        for s in self.skipped:
            kind = s.reason.split(" (", 1)[0]
            counts[kind] = counts.get(kind, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))

    def summary(self, max_listed: int = 10) -> str:
        lines = []
        for name, r in self.splits.items():
            lines.append(
                f"{name}: {r.n_cached}/{r.n_samples} cached ({r.n_processed} computed now, "
                f"{r.n_reused} reused, {r.n_changed} changed {'images' if r.unit == 'img' else r.unit + 's'} recomputed"
                + (f", {r.n_relabelled} relabelled recomputed" if r.n_relabelled else "")
                + (f", {r.n_removed} no longer in this split removed" if r.n_removed else "")
                + (f", {r.n_repaired} damaged part(s) repaired" if r.n_repaired else "")
                + "), "
                f"{len(r.skipped)} skipped, {r.shards_written} shard(s) written, {r.seconds:.1f}s"
                + (f", {r.per_second:.1f} {r.unit}/s" if r.n_processed else "")
            )
        skipped = self.skipped
        lines.append(f"skipped: {len(skipped)}")
        for kind, n in self.skip_counts().items():
            lines.append(f"  {n:6d}  {kind}")
        for s in skipped[:max_listed]:
            lines.append(f"  {s.sample_id}: {s.reason}")
        if len(skipped) > max_listed:
            lines.append(f"  ... and {len(skipped) - max_listed} more (listed in each split's manifest.json)")
        return "\n".join(lines)


def group_by_split(dataset_or_samples, split: str | None) -> dict[str, list]:
    """``{split directory name: samples}``.

    A data set (``.samples`` + ``.by_split``) with ``split`` gives that split; without,
    every split (samples without one go to ``"all"``). A plain list of samples with
    ``split`` goes entirely into that directory; without, it is grouped by ``sample.split``.
    """
    is_dataset = hasattr(dataset_or_samples, "by_split") and hasattr(dataset_or_samples, "samples")
    if split is not None:
        samples = dataset_or_samples.by_split(split) if is_dataset else list(dataset_or_samples)
        return {split: list(samples)}
    samples = dataset_or_samples.samples if is_dataset else list(dataset_or_samples)
    groups: dict[str, list] = {}
    for s in samples:
        groups.setdefault(getattr(s, "split", None) or DEFAULT_SPLIT, []).append(s)
    return groups


def build_cache(
    dataset_or_samples,
    cache_dir,
    cfg=None,
    split: str | None = None,
    progress: bool = True,
    shard_size: int = DEFAULT_SHARD_SIZE,
    on_shard: ShardHook | None = None,
    pipeline=None,
    repair: bool = True,
    replace_mismatched: bool = False,
    hint: str | None = None,
    wait: bool = True,
    log=print,
    ray=None,
    device: str = "cpu",
) -> BuildReport:
    """Cache the tensors of a data set (or a list of samples) under ``cache_dir/<split>/``.

    ``cfg`` is a :class:`PipelineConfig` (images) or a
    :class:`~pipelines.clips.ClipPipelineConfig` (clips); default: the pipeline's,
    else the default config of the data set's modality. See
    :func:`group_by_split` for which samples go where. Returns per-split counts
    of reused, computed and skipped samples.

    A data set is the truth: a split directory keeps only the samples the data
    set puts in that split (moved or dropped ones are forgotten), and a sample
    whose file, label or annotations changed is computed again. The cache
    directory is locked while it is written (:func:`cache.store.cache_lock`;
    ``wait=False``: refuse instead of waiting). Damage (see :class:`SplitWriter`)
    is repaired, or with ``repair=False`` refused before anything is written;
    ``hint`` ends such refusals and config mismatches.

    ``ray``: a :class:`cache.distributed.RayBuild` computes the samples on Ray
    workers (this process still holds the lock and writes the manifest); the
    result equals a serial build's. ``device``: where MTCNN and the backbones
    run here (a ``RayBuild`` has its own).
    """
    cfg = cfg or (pipeline.cfg if pipeline is not None else kind_of_dataset(dataset_or_samples).config_cls())
    if pipeline is not None and pipeline.cfg != cfg:
        raise ValueError("build_cache: pipeline.cfg differs from cfg")
    if shard_size < 1:
        raise UserError(f"shard_size must be positive, got {shard_size}")
    kind = kind_of_config(cfg)
    modality = getattr(dataset_or_samples, "modality", kind.name)
    if modality != kind.name:
        raise UserError(
            f"data set {getattr(dataset_or_samples, 'name', '')!r} holds {modality} samples; "
            f"a {type(cfg).__name__} ({kind.name} pipeline) cannot cache them"
        )
    is_dataset = hasattr(dataset_or_samples, "by_split") and hasattr(dataset_or_samples, "samples")
    groups = group_by_split(dataset_or_samples, split)
    for name, samples in groups.items():
        ids = [str(s.sample_id) for s in samples]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise UserError(f"split {name!r}: duplicate sample id {dup!r}; sample ids must be unique")
    # with Ray, this process only needs the pipeline's identity (the weights' ids): it stays on the CPU
    pipeline = pipeline or kind.make_pipeline(cfg, device="cpu" if ray is not None else device)
    with cache_lock(cache_dir, wait=wait, log=log):
        # every split is checked before any is written: a damaged cache is not written into
        writers = {}
        for name in groups:
            directory = split_dir(cache_dir, name)
            directory.mkdir(parents=True, exist_ok=True)
            writers[name] = SplitWriter(directory, name, pipeline.cfg, pipeline.identity, repair=repair,
                                         replace_mismatched=replace_mismatched, hint=hint, log=log)
            if is_dataset:  # which splits a whole build made, so verify can tell when one goes missing
                writers[name].manifest["dataset"] = {
                    "name": getattr(dataset_or_samples, "name", ""),
                    "splits": sorted(groups) if split is None else [split],
                }
        reports = {}
        for name, samples in groups.items():
            reports[name] = _build_split(samples, writers[name], pipeline, progress, shard_size, on_shard,
                                         prune=is_dataset, ray=ray)
    return BuildReport(reports)


def _build_split(samples, writer: SplitWriter, pipeline, progress: bool, shard_size: int, on_shard,
                 prune: bool, ray=None) -> SplitBuildReport:
    start = time.perf_counter()
    split = writer.split
    ids = [str(s.sample_id) for s in samples]
    n_removed = writer.prune(set(ids)) if prune else 0

    todo, n_reused, n_changed, n_relabelled = [], 0, 0, 0
    for s in samples:
        done, why = writer.finished(s)
        n_reused += done
        n_changed += why == "changed"
        n_relabelled += why == "relabelled"
        if not done:
            todo.append(s)

    report = SplitBuildReport(split, writer.directory, len(samples), n_reused, 0, 0, n_changed=n_changed,
                              n_relabelled=n_relabelled, n_removed=n_removed, n_repaired=writer.n_repaired,
                              unit="img" if writer.kind.name == "image" else writer.kind.name)
    if ray is not None:
        ray.build(writer, todo, report, shard_size, progress, on_shard)
    else:
        _compute_serially(writer, todo, report, pipeline, progress, shard_size, on_shard)

    asked = set(ids)
    writer.write_manifest(complete=asked <= (set(writer.entries) | set(writer.skips)))
    writer.drop_unreferenced_shards()
    report.hashes = {i: writer.hashes[i] for i in ids if i in writer.hashes}
    report.n_cached = len(asked & set(writer.entries))
    report.skipped = [Skip(i, writer.skips[i]) for i in ids if i in writer.skips]
    report.seconds = time.perf_counter() - start
    return report


def _compute_serially(writer: SplitWriter, todo: list, report: SplitBuildReport, pipeline, progress: bool,
                      shard_size: int, on_shard) -> None:
    split = writer.split
    pending: list = []  # processed samples (ProcessedSample | ProcessedClip) not yet in a shard
    pending_skips: list[Skip] = []

    def flush() -> None:
        name = writer.commit(pending, pending_skips)
        n = len(pending)
        pending.clear()
        pending_skips.clear()
        if name is not None:
            report.shards_written += 1
            if on_shard is not None:
                on_shard(split, name, n)

    for done_chunk, skipped_chunk in pipeline.iter_process(todo, progress=progress, desc=f"cache {split}"):
        report.n_processed += len(done_chunk) + len(skipped_chunk)
        pending.extend(done_chunk)
        pending_skips.extend(skipped_chunk)
        while len(pending) >= shard_size:
            rest = pending[shard_size:]
            del pending[shard_size:]
            flush()
            pending.extend(rest)
    flush()
