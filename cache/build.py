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
finished; a finished sample whose image file changed since (other sha256) is
computed again. Previously skipped samples are retried (their file may have been
fixed). A rerun with another pipeline config or other backbone weights raises
:class:`CacheConfigMismatch` naming the keys that differ.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cache.kinds import CacheKind, kind_of_config, kind_of_dataset, kind_of_manifest
from cache.store import (
    FORMAT_VERSION,
    MANIFEST,
    CacheConfigMismatch,
    DEFAULT_SPLIT,
    package_versions,
    read_manifest,
    shard_name,
    split_dir,
    to_json_value,
    write_json,
    write_shard,
)
from neural.errors import UserError
from neural.files import sha256_file
from pipelines.pipeline import Skip, config_differences

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
                f"{r.n_reused} reused, {r.n_changed} changed {'images' if r.unit == 'img' else r.unit + 's'} recomputed), "
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


class _SplitWriter:
    """The manifest of one split directory and the shards appended to it."""

    def __init__(self, directory: Path, split: str, cfg, identity: dict):
        self.directory = directory
        self.split = split
        self.kind: CacheKind = kind_of_config(cfg)
        self.cfg = cfg
        if (directory / MANIFEST).is_file():
            self.manifest = read_manifest(directory)
            check_config(self.manifest, cfg, identity, directory)
        else:
            self.manifest = {
                "format": FORMAT_VERSION,
                "kind": self.kind.name,
                "split": split,
                "config": cfg.to_dict(),
                "identity": identity,
                "versions": package_versions(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "complete": False,
                "shards": [],
                "samples": [],
                "skipped": [],
            }
        self.entries: dict[str, dict] = {e["id"]: e for e in self.manifest["samples"]}
        self.skips: dict[str, str] = {s["id"]: s["reason"] for s in self.manifest["skipped"]}
        for stale in directory.glob(".*.tmp"):  # left by a crash in the middle of a write
            stale.unlink()
        listed = {s["name"] for s in self.manifest["shards"]}
        for orphan in directory.glob("shard-*.safetensors"):  # written, never listed: an interrupted build's
            if orphan.name not in listed:
                orphan.unlink()

    def finished(self, sample) -> tuple[bool, bool]:
        """``(finished, changed)``: cached with the current content of its source file."""
        entry = self.entries.get(str(sample.sample_id))
        if entry is None:
            return False, False
        path = self.kind.source_path(sample)
        if not path.is_file():  # the file is gone; its cached tensors stay valid
            return True, False
        same = sha256_file(path) == entry["sha256"]
        return same, not same

    def new_shard_names(self, n: int) -> list[str]:
        """``n`` shard names not listed in the manifest (a name is never reused for other samples)."""
        used = {s["name"] for s in self.manifest["shards"]}
        names, i = [], len(self.manifest["shards"])
        while len(names) < n:
            if shard_name(i) not in used:
                names.append(shard_name(i))
            i += 1
        return names

    def commit(self, items: list, skips: list[Skip]) -> str | None:
        """Write ``items`` (processed samples) as a new shard, then the manifest that lists it."""
        written = write_items_shard(self.directory, self.new_shard_names(1)[0], items, self.kind, self.cfg)
        return self.record(written, skips)

    def record(self, written: "WrittenShard | None", skips: list[Skip]) -> str | None:
        """List a shard written by :func:`write_items_shard` (here or by a worker) and ``skips``
        in the manifest, then write the manifest."""
        name = None
        if written is not None:
            name = written.record["name"]
            self.manifest["shards"].append(written.record)
            for entry in written.entries:
                self.entries[entry["id"]] = entry
                self.skips.pop(entry["id"], None)
        for s in skips:
            self.skips[s.sample_id] = s.reason
            self.entries.pop(s.sample_id, None)  # its file changed and is now unusable
        self.write_manifest()
        return name

    def write_manifest(self, complete: bool | None = None) -> None:
        if complete is not None:
            self.manifest["complete"] = complete
        self.manifest["samples"] = list(self.entries.values())
        self.manifest["skipped"] = [{"id": k, "reason": v} for k, v in self.skips.items()]
        self.manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        write_json(self.directory / MANIFEST, self.manifest)


@dataclass
class WrittenShard:
    """A shard file on disk and what the manifest says about it (its record and sample entries)."""

    record: dict  # {"name", "sha256", "n_samples", "bytes"}
    entries: list[dict]  # per sample: id, sha256, kind fields, label, annotations, shard, row


def write_items_shard(directory: Path, name: str, items: list, kind: CacheKind, cfg) -> WrittenShard | None:
    """Write processed samples as shard ``name`` (atomically); ``None`` when there are none.

    Pure in its inputs, so a Ray worker can call it: only the writer of the
    manifest (the build's driver) decides whether the shard is listed.
    """
    if not items:
        return None
    digest = write_shard(directory / name, kind.shard_tensors(items, cfg), [p.sample_id for p in items])
    record = {"name": name, "sha256": digest, "n_samples": len(items), "bytes": (directory / name).stat().st_size}
    entries = [
        {
            "id": p.sample_id,
            "sha256": p.sha256,
            **kind.manifest_entry(p),
            "label": p.label,
            "annotations": to_json_value(p.annotations),
            "shard": name,
            "row": row,
        }
        for row, p in enumerate(items)
    ]
    return WrittenShard(record, entries)


def check_config(manifest: dict, cfg, identity: dict | None, where) -> None:
    """Raise :class:`CacheConfigMismatch` when ``manifest`` was built otherwise.

    ``cfg`` is a pipeline config of any kind, or a dict read as the manifest's kind.
    """
    kind = kind_of_manifest(manifest)
    wanted = kind.config_cls.from_dict(cfg) if isinstance(cfg, dict) else cfg
    if not isinstance(wanted, kind.config_cls):
        raise CacheConfigMismatch(
            f"{where}: this is a {kind.name} cache ({kind.config_cls.__name__}); "
            f"requested a {kind_of_config(wanted).name} pipeline ({type(wanted).__name__}); use another cache directory"
        )
    built = kind.config_cls.from_dict(manifest["config"])
    diffs = config_differences(built.semantic_dict(), wanted.semantic_dict())
    if identity is not None:  # only the keys given are compared
        built_identity = manifest.get("identity", {})
        diffs += config_differences({k: built_identity.get(k, "<absent>") for k in identity}, identity)
    if diffs:
        raise CacheConfigMismatch(
            f"{where}: cache was built with a different pipeline config ({'; '.join(diffs)}); "
            "use a new cache directory or rebuild with --force"
        )


def build_cache(
    dataset_or_samples,
    cache_dir,
    cfg=None,
    split: str | None = None,
    progress: bool = True,
    shard_size: int = DEFAULT_SHARD_SIZE,
    on_shard: ShardHook | None = None,
    pipeline=None,
    ray=None,
    device: str = "cpu",
) -> BuildReport:
    """Cache the tensors of a data set (or a list of samples) under ``cache_dir/<split>/``.

    ``cfg`` is a :class:`PipelineConfig` (images) or a
    :class:`~pipelines.clips.ClipPipelineConfig` (clips); default: the pipeline's,
    else the default config of the data set's modality. See
    :func:`group_by_split` for which samples go where. Returns per-split counts
    of reused, computed and skipped samples.

    ``ray``: a :class:`cache.distributed.RayBuild` computes the samples on Ray
    workers (this process still lists them in the manifest); the result equals a
    serial build's. ``device``: where MTCNN and the backbones run here (a
    ``RayBuild`` has its own).
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
    groups = group_by_split(dataset_or_samples, split)
    # with Ray, this process only needs the pipeline's identity (the weights' ids): it stays on the CPU
    pipeline = pipeline or kind.make_pipeline(cfg, device="cpu" if ray is not None else device)
    reports = {}
    for name, samples in groups.items():
        reports[name] = _build_split(samples, Path(cache_dir), name, pipeline, progress, shard_size, on_shard, ray)
    return BuildReport(reports)


def _build_split(samples, cache_dir: Path, split: str, pipeline, progress: bool, shard_size: int, on_shard,
                 ray=None) -> SplitBuildReport:
    start = time.perf_counter()
    ids = [str(s.sample_id) for s in samples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"split {split!r}: duplicate sample id {dup!r}; sample ids must be unique")
    directory = split_dir(cache_dir, split)
    directory.mkdir(parents=True, exist_ok=True)
    writer = _SplitWriter(directory, split, pipeline.cfg, pipeline.identity)

    todo, n_reused, n_changed = [], 0, 0
    for s in samples:
        done, changed = writer.finished(s)
        n_reused += done
        n_changed += changed
        if not done:
            todo.append(s)

    report = SplitBuildReport(split, directory, len(samples), n_reused, 0, 0, n_changed=n_changed,
                              unit="img" if writer.kind.name == "image" else writer.kind.name)
    if ray is not None:
        ray.build(writer, todo, report, shard_size, progress, on_shard)
    else:
        _compute_serially(writer, todo, report, pipeline, progress, shard_size, on_shard)

    asked = set(ids)
    writer.write_manifest(complete=asked <= (set(writer.entries) | set(writer.skips)))
    report.n_cached = len(asked & set(writer.entries))
    report.skipped = [Skip(i, writer.skips[i]) for i in ids if i in writer.skips]
    report.seconds = time.perf_counter() - start
    return report


def _compute_serially(writer: _SplitWriter, todo: list, report: SplitBuildReport, pipeline, progress: bool,
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
