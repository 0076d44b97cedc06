"""Registered cached features: whole-image tensors a plug-in adds to the image cache.

A neural predicate reads a cached tensor named by its program's source
(``tensor(light(Img))`` reads the feature ``light``). The built-in features
(the scene backbone's ``scene``/``scene_layer3``, the VA backbone's ``va``, the
face crops) are made by :class:`pipelines.pipeline.ImagePipeline` itself; any
other feature is registered here and named in ``PipelineConfig.features``:

    class Brightness:                            # the extractor
        weights_id = "brightness-v1"             # recorded in the cache manifest's identity
        def __call__(self, images):              # list[PIL.Image] (RGB) -> [B, 6] float32
            ...

    register_feature("light", lambda cfg, device: Brightness(), shape=(6,),
                     provenance=Provenance("fixed", "per-channel RGB mean and std"))

``build(cfg, device)`` makes the extractor from the pipeline config and the
device the pipeline runs on; ``shape`` is the per-sample shape (``None`` for a
free dimension) the cache verifies; ``provenance`` (a :class:`Provenance`, or a
function of the pipeline config giving one) is what reports and ``emologic
query`` say about where the feature's knowledge comes from.

Like :mod:`neural.registry`, an unknown name raises with the known ones listed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

from neural.common import UserError
from neural.provenance import Provenance

#: The features an image batch holds without registration: what ImagePipeline makes itself.
BUILTIN_FEATURES = ("scene", "va", "face1", "face2", "face3")
#: Tensor names the image pipeline and cache use themselves; a registered feature may not take one.
RESERVED_NAMES = frozenset({*BUILTIN_FEATURES, "scene_layer3", "faces", "face_offsets", "boxes", "probs",
                            "image_size", "labels", "counts", "n_faces"})


class FeatureExtractor(Protocol):
    weights_id: str

    def __call__(self, images: Sequence[Any]) -> Any:  # list[PIL.Image] -> torch.Tensor [B, *shape] float32
        ...


class UnknownFeatureError(UserError):
    pass


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    build: Callable[[Any, str], FeatureExtractor]  # (PipelineConfig, device) -> extractor
    shape: tuple[int | None, ...]  # per sample; None: a free dimension
    provenance: Provenance | Callable[[Any], Provenance]

    def provenance_for(self, cfg) -> Provenance:
        return self.provenance(cfg) if callable(self.provenance) else self.provenance

    def check_output(self, out, n: int):
        """``out`` as the cache stores it ([n, *shape] float32 on the CPU), or a one-line error."""
        import torch  # here: the registry is read by torch-free code (pipelines.config, the served query)

        if not isinstance(out, torch.Tensor):
            raise UserError(f"feature {self.name!r}: its extractor returned {type(out).__name__}, not a tensor")
        want = (n, *self.shape)
        if out.dim() != len(want) or any(w is not None and s != w for s, w in zip(out.shape, want)):
            shown = ", ".join("*" if w is None else str(w) for w in want)
            raise UserError(f"feature {self.name!r}: its extractor returned shape {tuple(out.shape)} for {n} "
                            f"images; registered per-sample shape gives [{shown}]")
        return out.detach().float().cpu().contiguous()


_FEATURES: dict[str, FeatureSpec] = {}


def register_feature(name: str, build: Callable[[Any, str], FeatureExtractor], shape: Sequence[int | None],
                     provenance: Provenance | Callable[[Any], Provenance]) -> FeatureSpec:
    """Make ``name`` computable by the image pipeline (``PipelineConfig(features=(name,))``).

    Registering the same name again replaces the spec only when it is equal (a
    module imported twice); another spec under a taken name raises."""
    if not name.isidentifier() or not name[0].islower():
        raise ValueError(f"feature name {name!r} must be a lower-case identifier (a ProbLog atom)")
    if name in RESERVED_NAMES:
        raise ValueError(f"feature name {name!r} is the pipeline's own; choose another")
    spec = FeatureSpec(name, build, tuple(None if s is None else int(s) for s in shape), provenance)
    old = _FEATURES.get(name)
    # the same plug-in imported again (a file path loaded under two module names) registers an equal spec
    same = old is not None and old.shape == spec.shape and \
        getattr(old.build, "__qualname__", None) == getattr(build, "__qualname__", None)
    if old is not None and not same:
        raise ValueError(f"feature {name!r} is already registered")
    _FEATURES[name] = spec
    return spec


def list_features() -> list[str]:
    return sorted(_FEATURES)


def is_registered_feature(name: str) -> bool:
    return name in _FEATURES


def get_feature(name: str) -> FeatureSpec:
    """The spec of feature ``name``; unknown names raise with the known ones listed."""
    if name not in _FEATURES:
        known = ", ".join(sorted(_FEATURES)) or "none"
        raise UnknownFeatureError(f"unknown cached feature {name!r}; registered features: {known} "
                                  "(a plug-in registers its features: see EMOLOGIC_PLUGINS)")
    return _FEATURES[name]


def check_program_features(program) -> None:
    """One line when a source of an image ``program`` reads a feature that is neither built in
    nor registered (a plug-in that was not loaded, a misspelt source)."""
    for src in program.sources.values():
        if src.feature not in BUILTIN_FEATURES and src.feature not in _FEATURES:
            raise UnknownFeatureError(
                f"source {src.name} of program {program.name} reads the cached feature {src.feature!r}, which is "
                f"neither built in ({', '.join(BUILTIN_FEATURES)}) nor registered "
                f"({', '.join(sorted(_FEATURES)) or 'none'}); a plug-in registers it (EMOLOGIC_PLUGINS)")
