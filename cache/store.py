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
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neural.common import UserError, atomic_write_bytes, sha256_file

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


class CacheBusy(CacheError):
    """Another process is writing the cache and the caller chose not to wait."""


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
    if not isinstance(manifest, dict):
        raise CacheError(f"{path}: malformed manifest (a JSON {type(manifest).__name__}, expected an object)")
    if manifest.get("format") != FORMAT_VERSION:
        raise CacheError(
            f"{path}: cache format {manifest.get('format')!r}, this emologic reads format {FORMAT_VERSION}; rebuild it"
        )
    _check_manifest_shape(manifest, path)
    return manifest


#: The manifest's lists and the keys every one of their items must have.
_MANIFEST_LISTS = {"shards": ("name", "sha256"), "samples": ("id", "sha256", "shard", "row"), "skipped": ("id", "reason")}


def _check_manifest_shape(manifest: dict, path) -> None:
    """Refuse a manifest whose lists are not lists of objects with their keys (hand-edited,
    or written by something else), so readers can index it without tracebacks."""
    if not isinstance(manifest.get("config"), dict):
        raise CacheError(f"{path}: malformed manifest ('config' is not an object)")
    for key, needed in _MANIFEST_LISTS.items():
        items = manifest.get(key)
        if not isinstance(items, list):
            raise CacheError(f"{path}: malformed manifest ({key!r} is a {type(items).__name__}, expected a list)")
        for i, item in enumerate(items):
            if not isinstance(item, dict) or any(k not in item for k in needed):
                raise CacheError(f"{path}: malformed manifest ({key}[{i}] is not an object with {', '.join(needed)})")
            if key == "samples" and not isinstance(item["row"], int):
                raise CacheError(f"{path}: malformed manifest (samples[{i}].row is not an integer)")


def check_config(manifest: dict, cfg, identity: dict | None, where, hint: str | None = None) -> None:
    """Raise :class:`CacheConfigMismatch` when ``manifest`` was built otherwise.

    ``cfg`` is a pipeline config of any kind, or a dict read as the manifest's kind.
    ``hint`` ends the message (what the caller's user can do about it).
    """
    from cache.kinds import kind_of_config, kind_of_manifest
    from pipelines.pipeline import config_differences

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
            + (hint or "use a new cache directory or rebuild it with `emologic cache build --force`")
        )


# One FileLock object per cache directory and process: FileLock counts nested
# acquisitions of the same object, so `cache build --force` (delete, then build)
# and the harness (build, then load) can hold the lock around code that takes it again.
_LOCKS: dict[str, Any] = {}
LOCK_FILE = ".lock"


@contextmanager
def cache_lock(cache_dir: str | os.PathLike, wait: bool = True, log=print):
    """Hold the write lock of ``cache_dir`` (created if needed) for the ``with`` block.

    Another process holding it: wait (saying so once) or, with ``wait=False``,
    raise :class:`CacheBusy`. ``filelock`` rather than raw ``fcntl``: the same
    code works on Windows, and the OS drops the lock when its holder dies, so a
    killed build never leaves a stale lock behind.
    """
    from filelock import FileLock, Timeout

    root = Path(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    key = str(root.resolve())
    lock = _LOCKS.setdefault(key, FileLock(str(root / LOCK_FILE)))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            raise CacheBusy(f"{root}: another process is writing this cache; wait for it to finish "
                            "(or drop --no-wait to wait)") from None
        log(f"{root}: another process is writing this cache; waiting for it to finish ...")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


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


def _shard_missing(path: Path) -> CacheError:
    return CacheError(f"{path}: shard listed in the manifest is missing; run `emologic cache verify`")


def _shard_changed(path: Path) -> CacheError:
    return CacheError(f"{path}: shard changed after it was written (sha256 differs); run `emologic cache verify`")


def checked_shard(directory: Path, info: dict, check_hash: bool = True) -> Path:
    """The path of a shard the manifest lists, refused (one line) when it is missing or,
    with ``check_hash``, when its bytes are not the ones the manifest recorded."""
    path = Path(directory) / info["name"]
    if not path.is_file():
        raise _shard_missing(path)
    if check_hash and sha256_file(path) != info["sha256"]:
        raise _shard_changed(path)
    return path


def checked_shard_bytes(directory: Path, info: dict, check_hash: bool = True) -> bytes:
    """:func:`checked_shard`, reading the file once for both the hash and the caller."""
    path = Path(directory) / info["name"]
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _shard_missing(path) from None
    if check_hash and hashlib.sha256(data).hexdigest() != info["sha256"]:
        raise _shard_changed(path)
    return data


def entries_by_shard(directory: Path, manifest: dict, shard_ids: dict[str, list[str]]) -> dict[str, list[dict]]:
    """The manifest's entries grouped by shard, each checked to be where the manifest puts it
    (``shard_ids``: the sample ids each shard's metadata lists, in row order)."""
    by_shard: dict[str, list[dict]] = {}
    for e in manifest["samples"]:
        ids = shard_ids.get(e["shard"], [])
        if e["row"] >= len(ids) or ids[e["row"]] != e["id"]:
            raise CacheError(
                f"{directory}: sample {e['id']!r} is not in shard {e['shard']} where the manifest "
                "puts it; run `emologic cache verify`"
            )
        by_shard.setdefault(e["shard"], []).append(e)
    return by_shard


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
