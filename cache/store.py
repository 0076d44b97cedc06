"""On-disk layout of the tensor cache.

One directory per split::

    CACHE/<split>/manifest.json
    CACHE/<split>/shard-00000.safetensors
    ...

A shard holds ``k`` samples (row ``i`` = ``sample_ids[i]`` in its metadata).
Its tensors depend on the cache's kind (``"kind"`` in the manifest, see
:mod:`cache.kinds`; ``cache.clip_kind`` documents the clip layout). An image
shard holds:

    scene          [k, 512]        float32
    va             [k, D]          float32   only when va_backbone != "scene"
    scene_layer3   [k, 256, h, w]  float32   only when store_scene_layer3
    faces          [F, S, S]       uint8     every face of the shard, flat
    face_offsets   [k + 1]         int64     faces of row i: faces[off[i]:off[i+1]]
    boxes          [F, 4]          float32   (x1, y1, x2, y2) pixels
    probs          [F]             float32
    image_size     [k, 2]          int64     (width, height)
    labels         [k]             int64     -1 where unknown

Absent faces take no space: nothing is invented for them. The manifest records
the pipeline config, backbone identity, package versions, one entry per shard
(name, sha256, samples) and per sample (id, image sha256, n_faces, label,
annotations, shard, row), plus the skip report. Every file is written atomically
(temp file in the same directory, then ``os.replace``): a crash leaves the old
file or the new one, never half of one.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neural.errors import UserError
from neural.files import atomic_write_bytes  # noqa: F401  (re-exported)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DEFAULT_SPLIT = "all"

#: Per-sample rows (first dim = samples in the shard).
ROW_KEYS = ("scene", "va", "scene_layer3", "image_size", "labels")
#: Per-face rows (first dim = faces in the shard).
FACE_KEYS = ("faces", "boxes", "probs")


class CacheError(UserError):
    """A cache that cannot be used as it is (missing, corrupt, stale)."""


class CacheConfigMismatch(CacheError):
    """The cache was built with another pipeline config or other weights."""



def split_dir(cache_dir: str | os.PathLike, split: str | None) -> Path:
    return Path(cache_dir) / (split or DEFAULT_SPLIT)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def _jsonable(obj: Any):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} in the cache manifest: {obj!r}")


def to_json_value(obj: Any) -> Any:
    """``obj`` as plain JSON types (numpy scalars/arrays, paths, tuples converted)."""
    return json.loads(json.dumps(obj, default=_jsonable))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, default=_jsonable).encode())


def read_manifest(directory: str | os.PathLike) -> dict:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise CacheError(f"{directory}: not a cache split (no {MANIFEST}); build it with `emologic cache build`")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CacheError(f"{path}: unreadable manifest ({exc})") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise CacheError(
            f"{path}: cache format {manifest.get('format')!r}, this emologic reads format {FORMAT_VERSION}; rebuild it"
        )
    return manifest


def write_shard(path: str | os.PathLike, tensors: dict[str, torch.Tensor], sample_ids: list[str]) -> str:
    """Write a shard atomically; returns its sha256."""
    from safetensors.torch import save

    data = save(
        {k: v.contiguous() for k, v in tensors.items()},
        metadata={"sample_ids": json.dumps(list(sample_ids)), "format": str(FORMAT_VERSION)},
    )
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def read_shard_bytes(data: bytes) -> tuple[dict[str, torch.Tensor], list[str]]:
    from safetensors.torch import load

    tensors = load(data)
    # The metadata lives in the header: 8-byte little-endian length, then JSON.
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    ids = json.loads(header.get("__metadata__", {}).get("sample_ids", "[]"))
    return tensors, ids


def read_shard(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``(tensors, sample_ids)`` of a shard file."""
    return read_shard_bytes(Path(path).read_bytes())


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("torch", "torchvision", "facenet-pytorch", "safetensors", "pillow", "numpy", "av", "transformers", "emologic"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def cache_info(cache_dir: str | os.PathLike) -> list[dict]:
    """Per split: kind, counts, faces per image (images) or clips without audio (clips),
    bytes on disk and per sample, config, identity."""
    root = Path(cache_dir)
    dirs = [root] if (root / MANIFEST).is_file() else sorted(p.parent for p in root.glob(f"*/{MANIFEST}"))
    if not dirs:
        raise CacheError(f"{root}: no cache here (no */{MANIFEST}); build one with `emologic cache build`")
    out = []
    for d in dirs:
        m = read_manifest(d)
        n = len(m["samples"])
        shard_bytes = sum((d / s["name"]).stat().st_size for s in m["shards"] if (d / s["name"]).is_file())
        total = shard_bytes + (d / MANIFEST).stat().st_size
        faces: dict[int, int] = {}
        for e in m["samples"]:
            if "n_faces" in e:
                faces[e["n_faces"]] = faces.get(e["n_faces"], 0) + 1
        kind = m.get("kind", "image")
        out.append({
            "split": d.name,
            "kind": kind,
            "directory": str(d),
            "samples": n,
            "skipped": len(m["skipped"]),
            "complete": m.get("complete", False),
            "shards": len(m["shards"]),
            "faces_per_image": dict(sorted(faces.items())),
            **({"without_audio": sum(not e.get("audio_present", True) for e in m["samples"])} if kind == "clip" else {}),
            "bytes": total,
            "bytes_per_image": total / n if n else None,
            "config": m["config"],
            "identity": m.get("identity", {}),
            "versions": m.get("versions", {}),
        })
    return out
