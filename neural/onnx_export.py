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

``export_verified`` is that ladder for any module: example inputs, named inputs
and outputs, dynamic axes, and the input tuples it must reproduce (used for
MTCNN's three networks by ``neural.mtcnn_onnx``).
"""
from __future__ import annotations

import importlib.util
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

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
    n_inputs: int  # export_onnx: random faces checked; export_verified: input tuples checked
    attempts: list[str] = field(default_factory=list)  # why earlier attempts failed


def _require_onnx():
    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise OnnxExportError(f"ONNX export needs {' and '.join(missing)}: pip install {' '.join(missing)}")


def _attempts(input_names: Sequence[str], dynamic_axes: Mapping[str, Mapping[int, str]]) -> list[tuple[str, dict]]:
    ladder = []
    if importlib.util.find_spec("onnxscript") is not None:
        # torch.export names each dynamic dimension once; equal names are one symbol (e.g. the batch)
        dims: dict[str, object] = {}
        shapes = tuple(
            {axis: dims.setdefault(name, torch.export.Dim(name)) for axis, name in dynamic_axes.get(inp, {}).items()}
            for inp in input_names
        )
        ladder.append(("dynamo", {"dynamo": True, "dynamic_shapes": shapes}))
    for opset in (17, 13, 11):
        for fold in (True, False):
            ladder.append((
                f"torchscript opset {opset}{'' if fold else ' (no constant folding)'}",
                {"dynamo": False, "opset_version": opset, "do_constant_folding": fold,
                 "dynamic_axes": {k: dict(v) for k, v in dynamic_axes.items()}},
            ))
    return ladder


def _as_tuple(outputs) -> tuple:
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


def max_output_difference(
    model: nn.Module, onnx_path: str | os.PathLike, inputs: Sequence[torch.Tensor],
    input_names: Sequence[str], output_names: Sequence[str],
) -> float:
    """max |torch - onnxruntime| over every output of ``model(*inputs)``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = [t.cpu().numpy() for t in _as_tuple(model(*inputs))]
    feed = {name: t.cpu().numpy().astype(np.float32) for name, t in zip(input_names, inputs)}
    got = session.run(list(output_names), feed)
    diff = 0.0
    for name, g, e in zip(output_names, got, expected):
        if g.shape != e.shape:
            raise OnnxExportError(f"ONNX output {name!r} has shape {g.shape}, torch gives {e.shape}")
        diff = max(diff, float(np.abs(g - e).max()) if e.size else 0.0)
    return diff


def max_abs_difference(model: nn.Module, onnx_path: str | os.PathLike, inputs: torch.Tensor) -> float:
    """max |torch probabilities - onnxruntime probabilities| on ``inputs`` [N, 1, 64, 64]."""
    return max_output_difference(model, onnx_path, (inputs,), [INPUT_NAME], [OUTPUT_NAME])


def export_verified(
    model: nn.Module,
    out_path: str | os.PathLike,
    example: Sequence[torch.Tensor],
    checks: Sequence[Sequence[torch.Tensor]],
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    tolerance: float = 1e-4,
) -> OnnxReport:
    """Export ``model(*example)`` to ``out_path`` with the exporter ladder of the module doc.

    ``dynamic_axes`` maps an input or output name to ``{axis: symbol}``. A file wins
    when onnxruntime loads it and reproduces torch within ``tolerance`` on every
    input tuple of ``checks`` (give them other sizes than ``example`` along the
    dynamic axes, so a size frozen into the graph is caught). The file appears
    atomically or not at all.
    """
    _require_onnx()
    import onnx

    model = model.cpu().eval()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    for name, kwargs in _attempts(input_names, dynamic_axes):
        fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # tracer/deprecation chatter, not the user's business
                torch.onnx.export(
                    model, tuple(example), tmp, input_names=list(input_names), output_names=list(output_names),
                    external_data=False, **kwargs,
                )
            onnx.checker.check_model(onnx.load(tmp))
            diff = max(max_output_difference(model, tmp, c, input_names, output_names) for c in checks)
            if not diff <= tolerance:
                raise OnnxExportError(f"max abs difference {diff:.3g} > tolerance {tolerance:g}")
            os.replace(tmp, out_path)
            return OnnxReport(out_path, name, diff, len(checks), failures)
        except Exception as exc:  # every exporter failure is a reason to try the next rung
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            failures.append(f"{name}: {type(exc).__name__}: {first}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise OnnxExportError(f"ONNX export failed after {len(failures)} attempt(s); last: {failures[-1]}")


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
    report = export_verified(
        model, out_path, (check[:2].clone(),), [(check,), (check[:1],)], [INPUT_NAME], [OUTPUT_NAME],
        {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, tolerance,
    )
    report.n_inputs = n_check
    return report
