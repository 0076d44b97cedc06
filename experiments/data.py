"""Data for the harness: the data set, its verified tensor cache, per split.

The data set is the truth: its split lists and labels decide what a run trains
and evaluates on. The cache is derived data, brought up to date with it on
every run (moved, dropped or relabelled samples are rebuilt or forgotten), then
checked to hold exactly the data set's samples, labels and image hashes. All
regimes read the same cached tensors by sample id; nothing is recomputed
between regimes or seeds.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from cache.build import build_cache
from cache.loader import CachedSplit
from cache.store import cache_lock
from experiments.config import HarnessConfig
from neural.errors import UserError
from pipelines.datasets import get_dataset
from pipelines.datasets.base import Dataset
from pipelines.pipeline import PipelineConfig

SPLITS = ("pretrain", "train", "val", "test")
#: What the harness's cache refusals tell the user to do (flags of experiments/joint_vs_frozen.py).
REBUILD_HINT = "rerun with --rebuild-cache to rebuild it, or give another --cache directory"


@dataclass
class ExperimentData:
    dataset: Dataset
    pipeline: PipelineConfig
    cache_dir: Path
    splits: dict[str, CachedSplit]
    truth_table: dict | None  # synthetic: the generator's P(source | context)
    build_summary: str
    #: (sample id, reason) of every sample left out: by the data set (missing image,
    #: label outside the vocabulary, ...) or by the cache build (unreadable image, ...)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: synthetic: the generator's circumplex table P(emotion | v-bin, a-bin) and its rows'
    #: weights P(v-bin, a-bin): ``{"circumplex": ..., "bin_weights": ...}``
    va_truth: dict | None = None

    def split(self, name: str) -> CachedSplit:
        return self.splits[name]


def dataset_options(cfg: HarnessConfig) -> dict:
    """The ``get_dataset`` options of the (resolved) config's data set."""
    if cfg.dataset == "synthetic_clips":
        opts = {"n_clips": cfg.n_clips, "seed": cfg.data_seed, "frames": cfg.clip_frames, "frame_size": cfg.clip_size}
        if cfg.data_root:
            opts["root"] = cfg.data_root
        return opts
    if cfg.dataset == "meld":
        opts = {"root": cfg.data_root, "seed": cfg.data_seed}
        if cfg.mapping:
            opts["mapping"] = cfg.mapping
        return opts
    if cfg.dataset == "synthetic":
        opts = {"n_images": cfg.n_images, "image_size": cfg.image_size, "seed": cfg.data_seed,
                "large_face_threshold": cfg.face_size_threshold}
        if cfg.data_root:
            opts["root"] = cfg.data_root
        return opts
    if cfg.dataset == "findingemo":
        opts = {"images": cfg.images, "annotations": cfg.annotations}
    else:
        opts = {"path": cfg.csv}
    if cfg.mapping:
        opts["mapping"] = cfg.mapping
    return {k: v for k, v in opts.items() if v is not None}


def default_face_source(dataset: str) -> str:
    """Where face boxes come from unless told: the synthetic set records them, others need MTCNN."""
    return "annotations" if dataset == "synthetic" else "mtcnn"


def pipeline_config(cfg: HarnessConfig) -> PipelineConfig:
    face_source = cfg.face_source or default_face_source(cfg.dataset)
    return PipelineConfig(
        face_source=face_source,
        scene_weights=cfg.scene_weights,
        store_scene_layer3=cfg.unfreeze_layer4,
        scene_size=cfg.image_size if cfg.dataset == "synthetic" else 224,
        va_backbone=cfg.va_backbone,
        clip_model=cfg.clip_model,
    )


def default_cache_dir(dataset: Dataset, pipeline) -> Path:
    """``.emologic/cache/<dataset>-<digest of the data set's location and the pipeline>``."""
    key = json.dumps([dataset.name, dataset.source, pipeline.semantic_dict()], sort_keys=True, default=str)
    return Path(".emologic") / "cache" / f"{dataset.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def load_data(cfg: HarnessConfig) -> ExperimentData:
    """Load (generating if needed) the data set and build or reuse its cache."""
    from neural.cluster import resolve_device

    dataset = get_dataset(cfg.dataset, **dataset_options(cfg))
    missing = [s for s in SPLITS if not dataset.by_split(s)] if set(SPLITS) <= set(dataset.split_names) else SPLITS
    if missing:
        raise UserError(
            f"data set {dataset.name} has no samples in split(s) {', '.join(missing)}; "
            f"the harness needs {', '.join(SPLITS)}"
        )
    pipeline = pipeline_config(cfg)
    cache_dir = Path(cfg.cache) if cfg.cache else default_cache_dir(dataset, pipeline)
    # locked from build to load: another run's build cannot change the cache in between
    with cache_lock(cache_dir):
        report = build_cache(dataset, cache_dir, pipeline, progress=cfg.progress, repair=cfg.rebuild_cache,
                             replace_mismatched=cfg.rebuild_cache, hint=REBUILD_HINT,
                             device=resolve_device(cfg.device))
        splits = {}
        for s in SPLITS:
            splits[s] = CachedSplit(cache_dir, s, expected_cfg=pipeline)
            splits[s].check_samples(dataset.by_split(s), report.splits[s].hashes, where=f"{cache_dir}/{s}")
    truth = va_truth = None
    if cfg.dataset == "synthetic":
        from pipelines.datasets.synthetic import read_truth
        from pipelines.datasets.synthetic_va import bin_probabilities

        stored = read_truth(dataset.source)
        truth = stored["source_table"]
        va_truth = {"circumplex": stored["circumplex"], "bin_weights": bin_probabilities(stored["va_noise"])}
    skipped = list(dataset.skipped) + [(s.sample_id, s.reason) for s in report.skipped]
    return ExperimentData(dataset, pipeline, cache_dir, splits, truth, report.summary(), skipped, va_truth)
