"""The image track's data: the cached images (:mod:`experiments.harness.data`), their
pipeline, and on the synthetic set the generator's truth."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from cache.loader import CachedSplit
from experiments.harness.config import HarnessConfig, default_face_source
from experiments.harness.data import CachedData, load_cached
from pipelines.pipeline import PipelineConfig


@dataclass
class ExperimentData(CachedData):
    truth_table: dict | None = None  # synthetic: the generator's P(source | context)
    #: synthetic: the generator's circumplex table P(emotion | v-bin, a-bin) and its rows'
    #: weights P(v-bin, a-bin): ``{"circumplex": ..., "bin_weights": ...}``
    va_truth: dict | None = None


def pipeline_config(cfg: HarnessConfig, program=None) -> PipelineConfig:
    """The image pipeline of a run; with ``program``, computing the registered features its
    sources read (:mod:`pipelines.feature_registry`, e.g. a plug-in's) besides the built-in ones."""
    from pipelines.feature_registry import is_registered_feature

    features = () if program is None else tuple(
        s.feature for s in program.sources.values() if is_registered_feature(s.feature))
    return PipelineConfig(
        features=features,
        face_source=cfg.face_source or default_face_source(cfg.dataset),
        scene_weights=cfg.scene_weights,
        store_scene_layer3=cfg.unfreeze_layer4,
        scene_size=cfg.image_size if cfg.dataset == "synthetic" else 224,
        va_backbone=cfg.va_backbone,
        clip_model=cfg.clip_model,
    )


def load_data(cfg: HarnessConfig, program=None) -> ExperimentData:
    """Load (generating if needed) the image data set and build or reuse its cache
    (with the registered features ``program`` reads, when given)."""
    cached = load_cached(cfg, pipeline_config(cfg, program), CachedSplit)
    data = ExperimentData(**{f.name: getattr(cached, f.name) for f in dataclasses.fields(CachedData)})
    if cfg.dataset == "synthetic":
        from pipelines.datasets.synthetic import read_truth
        from pipelines.datasets.synthetic_va import bin_probabilities

        stored = read_truth(data.dataset.source)
        data.truth_table = stored["source_table"]
        data.va_truth = {"circumplex": stored["circumplex"], "bin_weights": bin_probabilities(stored["va_noise"])}
    return data
