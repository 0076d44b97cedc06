"""Check every entry of a cache: ``verify_cache(dir) -> VerifyReport``.

Problems found (``Problem.kind``):

* ``manifest``        unreadable manifest or a malformed entry;
* ``config_mismatch`` built with another pipeline config than ``expected_cfg``;
* ``shard_missing``   a shard the manifest lists is not on disk;
* ``shard_tampered``  a shard whose bytes differ from the sha256 recorded at write time;
* ``missing_sample``  a manifest entry whose sample is not in its shard;
* ``shape``           a tensor of the wrong shape or dtype (or a face count that disagrees);
* ``nonfinite``       NaN or inf in a stored tensor;
* ``image_changed``   the source image's sha256 differs from the one cached.

Warnings (not failures): the source image is not on disk any more (the cached
tensors stay usable), or the build did not finish (rerun it to resume).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cache.build import check_config
from cache.loader import split_dirs
from cache.store import read_manifest, read_shard_bytes
from neural.errors import UserError
from pipelines.images import sha256_file
from pipelines.pipeline import PipelineConfig


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
    n_images_checked: int = 0
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
            f"({self.n_images_checked} source images re-hashed): "
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


def _expected_shapes(cfg: PipelineConfig, k: int, f: int, tensors: dict) -> dict[str, tuple[tuple, torch.dtype]]:
    """name -> (shape with None for a free dim, dtype) for a shard of k samples and f faces."""
    S = cfg.crop_size
    out = {
        "scene": ((k, 512), torch.float32),
        "faces": ((f, S, S), torch.uint8),
        "face_offsets": ((k + 1,), torch.int64),
        "boxes": ((f, 4), torch.float32),
        "probs": ((f,), torch.float32),
        "image_size": ((k, 2), torch.int64),
        "labels": ((k,), torch.int64),
    }
    if cfg.va_backbone != "scene":
        out["va"] = ((k, None), torch.float32)
    if cfg.store_scene_layer3:
        out["scene_layer3"] = ((k, 256, None, None), torch.float32)
    return out


def _shape_ok(shape: tuple, want: tuple) -> bool:
    return len(shape) == len(want) and all(w is None or s == w for s, w in zip(shape, want))


def _verify_split(directory: Path, expected_cfg, check_images: bool, report: VerifyReport) -> None:
    split = directory.name

    def problem(kind, where, msg):
        report.problems.append(Problem(split, kind, where, msg))

    try:
        manifest = read_manifest(directory)
        cfg = PipelineConfig.from_dict(manifest["config"])
        shards_info = {s["name"]: s for s in manifest["shards"]}
        entries = manifest["samples"]
    except (UserError, KeyError, TypeError) as exc:
        problem("manifest", "manifest.json", str(exc))
        return
    if expected_cfg is not None:
        try:
            check_config(manifest, expected_cfg, None, directory)
        except UserError as exc:
            problem("config_mismatch", "manifest.json", str(exc))
    if not manifest.get("complete", False):
        report.warnings.append(Problem(split, "incomplete", "manifest.json", "the build did not finish; rerun `emologic cache build` to resume"))

    shards: dict[str, tuple[dict, list[str]]] = {}
    for name, info in shards_info.items():
        report.n_shards += 1
        path = directory / name
        if not path.is_file():
            problem("shard_missing", name, "listed in the manifest but not on disk")
            continue
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != info.get("sha256"):
            problem("shard_tampered", name, "sha256 differs from the one recorded when it was written")
            continue
        try:
            tensors, ids = read_shard_bytes(data)
        except Exception as exc:  # noqa: BLE001 - a corrupt file can fail in many ways
            problem("shard_tampered", name, f"unreadable ({type(exc).__name__}: {exc})")
            continue
        k = len(ids)
        n_faces_total = tensors["faces"].shape[0] if "faces" in tensors else 0
        want = _expected_shapes(cfg, k, n_faces_total, tensors)
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
        off = tensors.get("face_offsets")
        if off is not None and off.shape == (k + 1,) and not (
            off[0] == 0 and bool((off[1:] >= off[:-1]).all()) and off[-1] == n_faces_total
        ):
            problem("shape", name, "face offsets are not a valid partition of the faces")
        if k != info.get("n_samples"):
            problem("shape", name, f"holds {k} samples, the manifest says {info.get('n_samples')}")
        shards[name] = (tensors, ids)

    seen = set()
    for e in entries:
        sid = str(e.get("id"))
        report.n_samples += 1
        if sid in seen:
            problem("manifest", sid, "listed twice in the manifest")
        seen.add(sid)
        name, row = e.get("shard"), e.get("row")
        if name not in shards_info:
            problem("missing_sample", sid, f"its shard {name!r} is not listed in the manifest")
            continue
        if name not in shards:
            continue  # the shard's problem is already reported
        tensors, ids = shards[name]
        if not isinstance(row, int) or not 0 <= row < len(ids) or ids[row] != sid:
            problem("missing_sample", sid, f"not in shard {name} (row {row})")
            continue
        _check_entry(e, sid, row, tensors, problem)
        if check_images:
            _check_image(e, sid, split, report, problem)


def _check_entry(e: dict, sid: str, row: int, tensors: dict, problem) -> None:
    off = tensors.get("face_offsets")
    face_rows = slice(0, 0)
    if off is not None and row + 1 < len(off):
        start, end = int(off[row]), int(off[row + 1])
        face_rows = slice(start, end)
        if end - start != e.get("n_faces"):
            problem("shape", sid, f"{end - start} faces stored, the manifest says {e.get('n_faces')}")
    labels = tensors.get("labels")
    if labels is not None and row < len(labels):
        want = -1 if e.get("label") is None else e.get("label")
        if int(labels[row]) != want:
            problem("shape", sid, f"stored label {int(labels[row])}, the manifest says {want}")
    for key in ("scene", "va", "scene_layer3"):
        t = tensors.get(key)
        if t is not None and row < len(t) and t.is_floating_point() and not bool(torch.isfinite(t[row]).all()):
            problem("nonfinite", sid, f"{key} contains NaN or inf")
    for key in ("boxes", "probs"):
        t = tensors.get(key)
        if t is not None and t.is_floating_point() and not bool(torch.isfinite(t[face_rows]).all()):
            problem("nonfinite", sid, f"{key} of its faces contain NaN or inf")


def _check_image(e: dict, sid: str, split: str, report: VerifyReport, problem) -> None:
    path = Path(e.get("image_path", ""))
    if not path.is_file():
        report.warnings.append(Problem(split, "image_missing", sid, f"source image {path} not found; hash not checked"))
        return
    report.n_images_checked += 1
    if sha256_file(path) != e.get("sha256"):
        problem("image_changed", sid, f"{path} changed since it was cached (sha256 differs)")


def verify_cache(
    cache_dir: str | os.PathLike,
    expected_cfg: PipelineConfig | dict | None = None,
    split: str | None = None,
    check_images: bool = True,
) -> VerifyReport:
    """Check every split (or ``split``) under ``cache_dir``; see the module doc."""
    report = VerifyReport()
    for directory in split_dirs(cache_dir, split):
        _verify_split(directory, expected_cfg, check_images, report)
    return report
