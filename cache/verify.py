"""Check every entry of a cache: ``verify_cache(dir) -> VerifyReport``.

Problems found (``Problem.kind``):

* ``manifest``        unreadable manifest or a malformed entry;
* ``config_mismatch`` built with another pipeline config than ``expected_cfg``
  (a config of any kind, or a dict read as the cache's kind);
* ``shard_missing``   a shard the manifest lists is not on disk;
* ``shard_tampered``  a shard whose bytes differ from the sha256 recorded at write time;
* ``missing_sample``  a manifest entry whose sample is not in its shard;
* ``shape``           a tensor of the wrong shape or dtype (or a face count that disagrees);
* ``nonfinite``       NaN or inf in a stored tensor (where it is present: a clip
                      without audio stores NaN rows on purpose);
* ``image_changed``   the source image's sha256 differs from the one cached
                      (``clip_changed`` in a clip cache);
* ``config_disagreement``  a split built with another pipeline config or identity
                      than the first split (the harness would refuse the cache);
* ``split_missing``   a split that a whole-data-set build wrote is not there;
* ``duplicate``       one sample id cached in two splits.

Warnings (not failures): the source file is not on disk any more (the cached
tensors stay usable), or the build did not finish (rerun it to resume).

What is checked per shard and per sample beyond the shared rules comes from the
cache's kind (:mod:`cache.kinds`): the image kind checks faces and features,
the clip kind video, audio, tokens and the audio-present flags.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from cache.kinds import CacheKind, kind_of_manifest
from cache.loader import split_dirs
from cache.store import MANIFEST, check_config, read_manifest, read_shard_bytes
from neural.common import UserError, sha256_file


@dataclass
class Problem:
    split: str
    kind: str
    where: str  # sample id or shard name
    message: str

    def __str__(self) -> str:
        return f"{self.split}/{self.where}: {self.kind}: {self.message}"


@dataclass
class VerifyReport:
    n_samples: int = 0
    n_shards: int = 0
    n_images_checked: int = 0  # source files (images or clips) re-hashed
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def kinds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.problems:
            out[p.kind] = out.get(p.kind, 0) + 1
        return out

    def summary(self, max_listed: int = 20) -> str:
        head = (
            f"checked {self.n_samples} samples in {self.n_shards} shards "
            f"({self.n_images_checked} source files re-hashed): "
        )
        lines = [head + ("OK" if self.ok else f"{len(self.problems)} problem(s)")]
        for kind, n in self.kinds().items():
            lines.append(f"  {n:6d}  {kind}")
        lines += [f"  {p}" for p in self.problems[:max_listed]]
        if len(self.problems) > max_listed:
            lines.append(f"  ... and {len(self.problems) - max_listed} more")
        if self.warnings:
            lines.append(f"{len(self.warnings)} warning(s):")
            lines += [f"  {w}" for w in self.warnings[:max_listed]]
            if len(self.warnings) > max_listed:
                lines.append(f"  ... and {len(self.warnings) - max_listed} more")
        return "\n".join(lines)


def _shape_ok(shape: tuple, want: tuple) -> bool:
    return len(shape) == len(want) and all(w is None or s == w for s, w in zip(shape, want))


def _verify_split(directory: Path, expected_cfg, check_images: bool, report: VerifyReport) -> dict | None:
    """Check one split directory; returns its manifest (None when unreadable)."""
    split = directory.name

    def problem(kind, where, msg):
        report.problems.append(Problem(split, kind, where, msg))

    try:
        manifest = read_manifest(directory)
        kind = kind_of_manifest(manifest)
        cfg = kind.config_cls.from_dict(manifest["config"])
        shards_info = {s["name"]: s for s in manifest["shards"]}
        entries = manifest["samples"]
    except (UserError, KeyError, TypeError) as exc:
        problem("manifest", "manifest.json", str(exc))
        return None
    if expected_cfg is not None:
        try:
            check_config(manifest, expected_cfg, None, directory)
        except UserError as exc:
            problem("config_mismatch", "manifest.json", str(exc))
    if not manifest.get("complete", False):
        report.warnings.append(Problem(split, "incomplete", "manifest.json", "the build did not finish; rerun `emologic cache build` to resume"))

    # entries by shard first, so that one shard at a time is in memory (clip shards are large)
    by_shard: dict[str, list[tuple[str, dict]]] = {}
    seen = set()
    for e in entries:
        sid = str(e.get("id"))
        report.n_samples += 1
        if sid in seen:
            problem("manifest", sid, "listed twice in the manifest")
        seen.add(sid)
        name = e.get("shard")
        if name not in shards_info:
            problem("missing_sample", sid, f"its shard {name!r} is not listed in the manifest")
            continue
        by_shard.setdefault(name, []).append((sid, e))

    for name, info in shards_info.items():
        report.n_shards += 1
        loaded = _check_shard(directory, name, info, kind, cfg, problem)
        if loaded is None:
            continue  # the shard's problem is reported; its samples are not checked further
        tensors, ids = loaded
        for sid, e in by_shard.get(name, []):
            row = e.get("row")
            if not isinstance(row, int) or not 0 <= row < len(ids) or ids[row] != sid:
                problem("missing_sample", sid, f"not in shard {name} (row {row})")
                continue
            kind.check_entry(e, sid, row, tensors, problem)
            if check_images:
                _check_source(kind, e, sid, split, report, problem)
    return manifest


def _check_across_splits(root: Path, manifests: dict[str, dict], report: VerifyReport) -> None:
    """What no single split shows: configs that disagree, splits gone, ids in two splits."""
    if not manifests:
        return
    first_split, first = next(iter(manifests.items()))
    for split, m in list(manifests.items())[1:]:
        try:
            check_config(m, kind_of_manifest(first).config_cls.from_dict(first["config"]), first.get("identity", {}),
                         root / split, hint=f"split {first_split!r} was built otherwise; rebuild one of them")
        except UserError as exc:
            report.problems.append(Problem(split, "config_disagreement", "manifest.json", str(exc)))
    built = {s for m in manifests.values() for s in (m.get("dataset") or {}).get("splits", [])}
    for split in sorted(built - set(manifests)):
        where = root / split
        report.problems.append(Problem(split, "split_missing", str(where),
                                       f"the build wrote this split but {where / MANIFEST} is gone; rerun `emologic cache build`"))
    owner: dict[str, str] = {}
    for split, m in manifests.items():
        for e in m["samples"]:
            if e["id"] in owner and owner[e["id"]] != split:
                report.problems.append(Problem(split, "duplicate", str(e["id"]),
                                               f"also cached in split {owner[e['id']]!r}"))
            owner.setdefault(e["id"], split)


def _check_shard(directory: Path, name: str, info: dict, kind: CacheKind, cfg, problem) -> tuple[dict, list[str]] | None:
    """``(tensors, sample ids)`` of a shard after checking its hash and shapes; None if unusable."""
    path = directory / name
    if not path.is_file():
        problem("shard_missing", name, "listed in the manifest but not on disk")
        return None
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != info.get("sha256"):
        problem("shard_tampered", name, "sha256 differs from the one recorded when it was written")
        return None
    try:
        tensors, ids = read_shard_bytes(data)
    except Exception as exc:  # noqa: BLE001 - a corrupt file can fail in many ways
        problem("shard_tampered", name, f"unreadable ({type(exc).__name__}: {exc})")
        return None
    k = len(ids)
    want = kind.expected_shapes(cfg, k, tensors)
    for key in sorted(set(want) | set(tensors)):
        if key not in tensors:
            problem("shape", name, f"tensor {key!r} is missing")
        elif key not in want:
            problem("shape", name, f"unexpected tensor {key!r} {tuple(tensors[key].shape)}")
        else:
            shape, dtype = want[key]
            t = tensors[key]
            if not _shape_ok(tuple(t.shape), shape) or t.dtype != dtype:
                problem("shape", name, f"{key} is {tuple(t.shape)} {t.dtype}, expected {shape} {dtype}")
    kind.check_shard(tensors, k, name, problem)
    if k != info.get("n_samples"):
        problem("shape", name, f"holds {k} samples, the manifest says {info.get('n_samples')}")
    return tensors, ids


def _check_source(kind: CacheKind, e: dict, sid: str, split: str, report: VerifyReport, problem) -> None:
    path = Path(e.get(kind.source_key, ""))
    what = kind.source_name  # "image" | "clip"
    if not path.is_file():
        report.warnings.append(Problem(split, f"{what}_missing", sid, f"source {what} {path} not found; hash not checked"))
        return
    report.n_images_checked += 1
    if sha256_file(path) != e.get("sha256"):
        problem(f"{what}_changed", sid, f"{path} changed since it was cached (sha256 differs)")


def verify_cache(
    cache_dir: str | os.PathLike,
    expected_cfg=None,
    split: str | None = None,
    check_images: bool = True,
) -> VerifyReport:
    """Check every split (or ``split``) under ``cache_dir``; see the module doc."""
    report = VerifyReport()
    directories = split_dirs(cache_dir, split)
    manifests = {}
    for directory in directories:
        manifest = _verify_split(directory, expected_cfg, check_images, report)
        if manifest is not None:
            manifests[directory.name] = manifest
    root = Path(cache_dir)
    if split is None and not (root / MANIFEST).is_file():  # the whole cache, not one split's directory
        _check_across_splits(root, manifests, report)
    return report
