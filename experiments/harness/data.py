"""Data for the harness, for every track: the data set, its verified tensor cache, per split.

The data set is the truth: its split lists and labels decide what a run trains
and evaluates on. The cache is derived data, brought up to date with it on
every run (moved, dropped or relabelled samples are rebuilt or forgotten), then
checked to hold exactly the data set's samples, labels and file hashes. All
regimes read the same cached tensors by sample id; nothing is recomputed
between regimes or seeds. What a track adds (the image track's generator truth,
the clip track's frozen-encoder features) lives in its own data module.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from cache.build import build_cache
from cache.store import cache_lock
from neural.common import UserError
from pipelines.datasets import get_dataset
from pipelines.datasets.base import Dataset

SPLITS = ("pretrain", "train", "val", "test")
#: What the harness's cache refusals tell the user to do (flags of experiments/joint_vs_frozen.py).
REBUILD_HINT = "rerun with --rebuild-cache to rebuild it, or give another --cache directory"


@dataclass
class CachedData:
    """A data set and its verified cache, whatever the track."""

    dataset: Dataset
    pipeline: object  # PipelineConfig | ClipPipelineConfig
    cache_dir: Path
    splits: dict  # {split: CachedSplit | CachedClipSplit}
    build_summary: str
    #: (sample id, reason) of every sample left out: by the data set (missing file, label
    #: outside the vocabulary, ...) or by the cache build (unreadable file, ...)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def split(self, name: str):
        return self.splits[name]


def dataset_options(cfg) -> dict:
    """The ``get_dataset`` options of the (resolved) config's data set."""
    if cfg.dataset == "synthetic_clips":
        opts = {"n_clips": cfg.n_clips, "seed": cfg.data_seed, "frames": cfg.clip_frames, "frame_size": cfg.clip_size,
                "root": cfg.data_root}
    elif cfg.dataset == "meld":
        opts = {"root": cfg.data_root, "seed": cfg.data_seed, "mapping": cfg.mapping}
    elif cfg.dataset == "synthetic":
        opts = {"n_images": cfg.n_images, "image_size": cfg.image_size, "seed": cfg.data_seed,
                "large_face_threshold": cfg.face_size_threshold, "root": cfg.data_root}
    elif cfg.dataset == "findingemo":
        opts = {"images": cfg.images, "annotations": cfg.annotations, "mapping": cfg.mapping}
    else:
        opts = {"path": cfg.csv, "mapping": cfg.mapping}
    return {k: v for k, v in opts.items() if v is not None}


def default_cache_dir(dataset: Dataset, pipeline) -> Path:
    """``.emologic/cache/<dataset>-<digest of the data set's location and the pipeline>``."""
    key = json.dumps([dataset.name, dataset.source, pipeline.semantic_dict()], sort_keys=True, default=str)
    return Path(".emologic") / "cache" / f"{dataset.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def load_cached(cfg, pipeline, split_type, progress: bool | None = None) -> CachedData:
    """Load (generating if needed) the config's data set, build or reuse its cache with ``pipeline``
    and read every split as ``split_type`` (``CachedSplit``, ``CachedClipSplit``), checked against the set."""
    from neural.cluster import resolve_device

    progress = cfg.progress if progress is None else progress
    dataset = get_dataset(cfg.dataset, **dataset_options(cfg))
    missing = [s for s in SPLITS if s not in dataset.split_names or not dataset.by_split(s)]
    if missing:
        raise UserError(f"data set {dataset.name} has no samples in split(s) {', '.join(missing)}; "
                        f"the harness needs {', '.join(SPLITS)}")
    cache_dir = Path(cfg.cache) if cfg.cache else default_cache_dir(dataset, pipeline)
    # locked from build to load: another run's build cannot change the cache in between
    with cache_lock(cache_dir):
        report = build_cache(dataset, cache_dir, pipeline, progress=progress, repair=cfg.rebuild_cache,
                             replace_mismatched=cfg.rebuild_cache, hint=REBUILD_HINT,
                             device=resolve_device(cfg.device))
        splits = {}
        for s in SPLITS:  # the data set is the truth: exactly its samples, labels and files
            splits[s] = split_type(cache_dir, s, expected_cfg=pipeline)
            splits[s].check_samples(dataset.by_split(s), report.splits[s].hashes, where=f"{cache_dir}/{s}")
    empty = [s for s, split in splits.items() if len(split) == 0]
    if empty:
        raise UserError(f"{cache_dir}: no usable sample in split(s) {', '.join(empty)} (see the skip report)")
    skipped = list(dataset.skipped) + [(s.sample_id, s.reason) for s in report.skipped]
    return CachedData(dataset, pipeline, cache_dir, splits, report.summary(), skipped)
