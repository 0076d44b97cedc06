"""Cache kinds: what differs between caching images and caching clips, behind one registry.

The build/resume/manifest/verify/atomic-write machinery (``cache.build``,
``cache.verify``, ``cache.store``, ``cache.loader``) is shared; a
:class:`CacheKind` supplies only what depends on the pipeline:

* ``config_cls``     its config dataclass (``to_dict``, ``from_dict``, ``semantic_dict``);
* ``make_pipeline``  ``(cfg, device="cpu") -> pipeline`` (its networks on ``device``); a pipeline has ``cfg``, ``identity`` (dict)
  and ``iter_process(samples, progress, desc) -> iter of (processed, skips)``;
* ``source_path``    the sample's source file, whose sha256 decides resume;
* ``shard_tensors``  ``(processed items, cfg) -> {name: tensor}`` of one shard;
* ``manifest_entry`` the per-sample manifest fields besides id, sha256, label,
  annotations, shard and row;
* ``expected_shapes`` / ``check_shard`` / ``check_entry``  what ``verify`` checks;
* ``read_rows``      ``(split dirs, manifests, cfg, check_hashes) -> rows``: how its shards
  are read back; ``rows`` has ``ids``, ``annotations``, ``columns`` (``{name: [N, ...]}``,
  ``labels`` among them) and ``batch(positions, sample_ids)`` (its :class:`cache.batch.Batch`);
* ``collate``        ``(processed items, cfg) -> batch``: the same batch without a cache.

A manifest names its kind (``"kind"``; manifests written before kinds existed
are ``"image"``).

    from cache.kinds import get_cache_kind, kind_of_config
    kind_of_config(ClipPipelineConfig()).name   # "clip"
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from neural.common import UserError

#: ``problem(kind, where, message)``: how verify checks report what they find.
ProblemFn = Callable[[str, str, str], None]


@dataclass(frozen=True)
class CacheKind:
    name: str
    config_cls: type
    make_pipeline: Callable[[Any], Any]
    source_path: Callable[[Any], Path]
    #: manifest key of the source file path (``image_path`` | ``clip_path``); also names
    #: the verify problem/warning kinds (``image_changed``, ``clip_missing``, ...)
    source_key: str
    shard_tensors: Callable[[list, Any], dict]
    manifest_entry: Callable[[Any], dict]
    #: ``(cfg, k samples, tensors) -> {name: (shape with None for free dims, dtype)}``
    expected_shapes: Callable[[Any, int, dict], dict]
    #: ``(tensors, k, shard name, problem)``: consistency within a shard beyond shapes
    check_shard: Callable[[dict, int, str, ProblemFn], None]
    #: ``(entry, sample id, row, tensors, problem)``: one sample's stored rows
    check_entry: Callable[[dict, str, int, dict, ProblemFn], None]
    #: ``(directories, manifests, cfg, check_hashes) -> rows`` (see the module docstring)
    read_rows: Callable[[list, list, Any, bool], Any]
    #: ``(processed items, cfg) -> batch``: pipeline output served without a cache
    collate: Callable[[list, Any], Any]

    @property
    def source_name(self) -> str:
        return self.source_key.removesuffix("_path")


_KINDS: dict[str, CacheKind] = {}


def register_cache_kind(kind: CacheKind) -> CacheKind:
    if kind.name in _KINDS and _KINDS[kind.name] != kind:
        raise ValueError(f"cache kind {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    return kind


def _ensure_builtin() -> None:
    # the built-in kinds register themselves on import
    import cache.clip_kind  # noqa: F401
    import cache.image_kind  # noqa: F401


def list_cache_kinds() -> list[str]:
    _ensure_builtin()
    return sorted(_KINDS)


def get_cache_kind(name: str) -> CacheKind:
    """The kind called ``name``; unknown names raise with the known ones listed."""
    _ensure_builtin()
    if name not in _KINDS:
        raise UserError(f"unknown cache kind {name!r}; known kinds: {', '.join(sorted(_KINDS))}")
    return _KINDS[name]


def kind_of_config(cfg) -> CacheKind:
    """The kind whose config class ``cfg`` is an instance of."""
    _ensure_builtin()
    for kind in _KINDS.values():
        if isinstance(cfg, kind.config_cls):
            return kind
    raise UserError(
        f"{type(cfg).__name__} is not the config of any cache kind "
        f"({', '.join(f'{k.name}: {k.config_cls.__name__}' for k in _KINDS.values())})"
    )


def kind_of_manifest(manifest: dict) -> CacheKind:
    """The kind a manifest was written by (``"image"`` when it predates kinds)."""
    return get_cache_kind(manifest.get("kind", "image"))


def kind_of_dataset(dataset_or_samples) -> CacheKind:
    """A data set's kind from its ``modality`` (``"image"`` for plain lists of samples)."""
    return get_cache_kind(getattr(dataset_or_samples, "modality", "image"))
