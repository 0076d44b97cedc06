"""Export the face predicate to ONNX and check it against torch with onnxruntime.

The exported graph is the predicate's ``forward``: input ``faces`` float32
[B, 1, 64, 64] in [-1, 1] (batch dimension dynamic), output ``probabilities``
[B, 7] in EMOTIONS order. For timm backbones the resize and channel
replication are part of the graph.

Export tries, in order, the torch.export-based exporter (when ``onnxscript``
is installed) and the TorchScript exporter at opsets 17, 13 and 11, with and
without constant folding (the seed's fallback ladder); the first file that
onnxruntime loads and that matches torch within ``tolerance`` wins. When every
attempt fails, :class:`OnnxExportError` says what the last one reported.
"""
from __future__ import annotations

import importlib.util
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from neural.common import UserError
from neural.face import FACE_SIZE

INPUT_NAME, OUTPUT_NAME = "faces", "probabilities"


class OnnxExportError(UserError):
    """The model could not be exported or does not match torch after export."""


@dataclass
class OnnxReport:
    path: Path
    exporter: str  # "dynamo" or "torchscript opset N"
    max_abs_diff: float
    n_inputs: int
    attempts: list[str] = field(default_factory=list)  # why earlier attempts failed


def _require_onnx():
    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise OnnxExportError(f"ONNX export needs {' and '.join(missing)}: pip install {' '.join(missing)}")


def _attempts(inputs: dict, outputs: list[str]) -> list[tuple[str, dict]]:
    """The exporter ladder, every input's and output's first axis (the batch) dynamic."""
    ladder = []
    if importlib.util.find_spec("onnxscript") is not None:
        batch = torch.export.Dim("batch")
        ladder.append(("dynamo", {"dynamo": True, "dynamic_shapes": tuple({0: batch} for _ in inputs)}))
    axes = {name: {0: "batch"} for name in [*inputs, *outputs]}
    for opset in (17, 13, 11):
        for fold in (True, False):
            ladder.append((
                f"torchscript opset {opset}{'' if fold else ' (no constant folding)'}",
                {"dynamo": False, "opset_version": opset, "do_constant_folding": fold, "dynamic_axes": axes},
            ))
    return ladder


def _as_tuple(out) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def max_abs_difference(model: nn.Module, onnx_path: str | os.PathLike, inputs, relative: bool = False) -> float:
    """max |torch output - onnxruntime output| over every output on ``inputs`` (a
    tensor for the face predicate's ``faces``, or ``{input name: tensor}``);
    ``relative``: divided by max(1, max |torch output|) (features of any scale)."""
    import onnxruntime as ort

    feeds = inputs if isinstance(inputs, dict) else {INPUT_NAME: inputs}
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = [t.cpu().numpy() for t in _as_tuple(model(*feeds.values()))]
    got = session.run(None, {k: v.cpu().numpy().astype(np.float32) for k, v in feeds.items()})
    worst = 0.0
    for g, e in zip(got, expected):
        if g.shape != e.shape:
            raise OnnxExportError(f"ONNX output has shape {g.shape}, torch gives {e.shape}")
        scale = max(1.0, float(np.abs(e).max())) if relative and e.size else 1.0
        worst = max(worst, float(np.abs(g - e).max()) / scale if e.size else 0.0)
    return worst


def export_onnx(
    model: nn.Module,
    out_path: str | os.PathLike,
    n_check: int = 8,
    tolerance: float = 1e-4,
    seed: int = 0,
    input_size: int = FACE_SIZE,
) -> OnnxReport:
    """Export ``model`` (a face predicate) to ``out_path`` and verify it; see the module doc.

    Verification: ``n_check`` random inputs uniform in [-1, 1] (seeded), run as
    one batch of ``n_check`` and one of 1 (the batch axis is dynamic).
    """
    gen = torch.Generator().manual_seed(seed)
    check = torch.rand(n_check, 1, input_size, input_size, generator=gen) * 2 - 1
    return export_module(model, out_path, {INPUT_NAME: check}, [OUTPUT_NAME], tolerance)


def export_module(model: nn.Module, out_path: str | os.PathLike, inputs: dict[str, torch.Tensor],
                  output_names: list[str], tolerance: float = 1e-4, relative: bool = False) -> OnnxReport:
    """Export ``model(*inputs.values())`` to ``out_path`` with the first axis of every
    input and output dynamic, and verify it with onnxruntime on ``inputs`` (whole,
    and its first row alone: another batch size than the example) within
    ``tolerance`` (``relative``: see :func:`max_abs_difference`). The first
    exporter of the ladder whose file passes wins; the file appears atomically."""
    _require_onnx()
    import onnx

    model = model.cpu().eval()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    example = tuple(t[:2].clone() for t in inputs.values())
    n_check = len(next(iter(inputs.values())))
    failures: list[str] = []
    for name, kwargs in _attempts(inputs, output_names):
        fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # tracer/deprecation chatter, not the user's business
                torch.onnx.export(
                    model, example, tmp, input_names=list(inputs), output_names=list(output_names),
                    external_data=False, **kwargs,
                )
            onnx.checker.check_model(onnx.load(tmp))
            diff = max(max_abs_difference(model, tmp, inputs, relative),
                       max_abs_difference(model, tmp, {k: v[:1] for k, v in inputs.items()}, relative))
            if not diff <= tolerance:
                raise OnnxExportError(f"max abs difference {diff:.3g} > tolerance {tolerance:g}")
            os.replace(tmp, out_path)
            return OnnxReport(out_path, name, diff, n_check, failures)
        except Exception as exc:  # every exporter failure is a reason to try the next rung
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            failures.append(f"{name}: {type(exc).__name__}: {first}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise OnnxExportError(f"ONNX export failed after {len(failures)} attempt(s); last: {failures[-1]}")
