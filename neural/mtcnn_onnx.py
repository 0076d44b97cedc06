"""facenet-pytorch's MTCNN networks (PNet, RNet, ONet) exported once to ONNX, cached.

The torch-free face detector (``pipelines.mtcnn_onnx``) runs these files with
onnxruntime. They live in ``<cache>/onnx/mtcnn-<key>/`` (``<cache>``: see
:func:`neural.common.cache_dir`) with a ``manifest.json`` written last:

* ``pnet.onnx``  input ``images`` [B, 3, H, W] (B, H, W dynamic), outputs ``reg``
  [B, 4, H', W'] and ``prob`` [B, 2, H', W'];
* ``rnet.onnx``  input ``images`` [B, 3, 24, 24], outputs ``reg`` [B, 4], ``prob`` [B, 2];
* ``onet.onnx``  input ``images`` [B, 3, 48, 48], outputs ``reg`` [B, 4],
  ``landmarks`` [B, 10], ``prob`` [B, 2].

``<key>`` is a sha256 over facenet-pytorch's weight files and :data:`EXPORT_FORMAT`,
computed from the files alone: finding them needs neither torch nor facenet_pytorch
to be imported (``find_spec`` of a top-level package does not execute it), so a
process that only detects faces never pays torch's import. Only exporting imports
torch (this module imports it lazily, inside :func:`export_mtcnn`).

A directory is used only when its manifest names the key and the sha256 of every
file; anything else (a crash mid-export, a truncated file) is rebuilt. Exports run
under a file lock in a temporary directory that is renamed into place, so
concurrent processes never see a half-written directory and export at most once.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from neural.common import UserError, atomic_write_bytes, cache_dir, sha256_file

#: Bump when the exported graphs change (names, axes, opset ladder): the key, and so the directory, changes.
EXPORT_FORMAT = 1
NETS = ("pnet", "rnet", "onet")
INPUT_NAME = "images"
#: Output names in the order each network's ``forward`` returns them.
OUTPUT_NAMES = {"pnet": ("reg", "prob"), "rnet": ("reg", "prob"), "onet": ("reg", "landmarks", "prob")}
#: Fixed input side of RNet and ONet (PNet takes any size >= 12).
CROP_SIZES = {"rnet": 24, "onet": 48}
MANIFEST = "manifest.json"


class MtcnnOnnxError(UserError):
    """The MTCNN networks could not be found, exported or loaded as ONNX."""


def facenet_weight_files() -> list[Path]:
    """facenet-pytorch's ``data/{pnet,rnet,onet}.pt`` (located without importing the package)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise MtcnnOnnxError(
            "the MTCNN face detector needs facenet-pytorch's weights: pip install facenet-pytorch==2.5.3"
        )
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    files = [data / f"{net}.pt" for net in NETS]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise MtcnnOnnxError(f"facenet-pytorch is installed without its MTCNN weights ({', '.join(missing)}); "
                             "reinstall it: pip install --force-reinstall facenet-pytorch==2.5.3")
    return files


def mtcnn_key() -> str:
    """16 hex digits of sha256 over :data:`EXPORT_FORMAT` and the weight files' names and bytes."""
    h = hashlib.sha256(f"emologic-mtcnn-onnx-{EXPORT_FORMAT}".encode())
    for path in facenet_weight_files():
        h.update(path.name.encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def mtcnn_onnx_path(key: str | None = None) -> Path:
    """Where the ONNX files of ``key`` (default: the installed weights') live, exported or not."""
    return cache_dir() / "onnx" / f"mtcnn-{key or mtcnn_key()}"


def _is_complete(directory: Path, key: str) -> bool:
    """The manifest names ``key`` and every file has the recorded sha256 (files are small: ~2 MB)."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        files = manifest["files"]
        return (
            manifest.get("key") == key
            and set(files) == {f"{net}.onnx" for net in NETS}
            and all(sha256_file(directory / name) == digest for name, digest in files.items())
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def mtcnn_onnx_ready() -> bool:
    """Whether the ONNX files of the installed weights are exported and intact (never imports torch)."""
    try:
        key = mtcnn_key()
    except MtcnnOnnxError:
        return False
    return _is_complete(mtcnn_onnx_path(key), key)


def mtcnn_onnx_dir(export: bool = True) -> Path:
    """The directory holding the three ONNX files, exported first when missing or damaged
    (that needs torch and takes a few seconds, once per weights version).

    With ``export=False`` a missing export raises :class:`MtcnnOnnxError`.
    """
    key = mtcnn_key()
    directory = mtcnn_onnx_path(key)
    if _is_complete(directory, key):
        return directory
    if not export:
        raise MtcnnOnnxError(f"the MTCNN ONNX files are not exported yet ({directory}); "
                             "build them with neural.mtcnn_onnx.mtcnn_onnx_dir()")
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        with _export_lock(directory.parent / f".{directory.name}.lock"):
            if _is_complete(directory, key):  # another process exported it while we waited for the lock
                return directory
            tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".tmp"))
            try:
                export_mtcnn(tmp, key)
                _replace_dir(tmp, directory)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        raise MtcnnOnnxError(f"cannot write the MTCNN ONNX files under {directory.parent} "
                             f"({exc.strerror or exc}); point EMOLOGIC_CACHE at a writable directory") from exc
    return directory


@contextlib.contextmanager
def _export_lock(path: Path):
    """An exclusive lock between processes (POSIX ``flock``; elsewhere the atomic rename alone)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _replace_dir(new: Path, target: Path) -> None:
    """Rename ``new`` to ``target``; a damaged ``target`` is first moved aside, then deleted."""
    stale = None
    if target.exists():
        stale = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".stale"))
        os.replace(target, stale / target.name)
    os.replace(new, target)
    if stale is not None:
        shutil.rmtree(stale, ignore_errors=True)


def export_mtcnn(directory: str | os.PathLike, key: str | None = None) -> dict:
    """Export PNet, RNet and ONet into ``directory`` (verified against torch within 1e-4
    by onnxruntime, several batch sizes and, for PNet, image sizes); write the manifest
    last and return it."""
    try:
        import torch
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
    except ImportError as exc:
        raise MtcnnOnnxError(f"exporting MTCNN to ONNX needs torch and facenet-pytorch ({exc})") from exc
    from neural.onnx_export import export_verified

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)

    def images(b: int, h: int, w: int):  # the detector's input range: (pixel - 127.5) / 128
        return torch.rand(b, 3, h, w, generator=gen) * 2 - 1

    pnet_axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
    pnet_axes.update({o: {0: "batch", 2: "map_height", 3: "map_width"} for o in OUTPUT_NAMES["pnet"]})
    jobs = {
        # odd sizes and ceil-mode pooling edges: a size frozen into the graph fails the check
        "pnet": (PNet(), images(2, 31, 45), [(images(1, 12, 12),), (images(3, 57, 40),), (images(1, 129, 97),)],
                 pnet_axes),
    }
    for net, cls in (("rnet", RNet), ("onet", ONet)):
        side = CROP_SIZES[net]
        jobs[net] = (cls(), images(2, side, side), [(images(1, side, side),), (images(7, side, side),)],
                     {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES[net])})
    manifest: dict = {"format": EXPORT_FORMAT, "key": key or mtcnn_key(), "files": {}, "exporters": {},
                      "max_abs_diff": {}}
    for net, (module, example, checks, axes) in jobs.items():
        report = export_verified(module.eval(), directory / f"{net}.onnx", (example,), checks,
                                 [INPUT_NAME], OUTPUT_NAMES[net], axes, tolerance=1e-4)
        manifest["files"][report.path.name] = sha256_file(report.path)
        manifest["exporters"][net] = report.exporter
        manifest["max_abs_diff"][net] = report.max_abs_diff
    atomic_write_bytes(directory / MANIFEST, json.dumps(manifest, indent=1).encode())
    return manifest
