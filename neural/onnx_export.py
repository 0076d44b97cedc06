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


def _attempts() -> list[tuple[str, dict]]:
    ladder = []
    if importlib.util.find_spec("onnxscript") is not None:
        ladder.append(("dynamo", {"dynamo": True, "dynamic_shapes": ({0: torch.export.Dim("batch")},)}))
    for opset in (17, 13, 11):
        for fold in (True, False):
            ladder.append((
                f"torchscript opset {opset}{'' if fold else ' (no constant folding)'}",
                {"dynamo": False, "opset_version": opset, "do_constant_folding": fold,
                 "dynamic_axes": {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}},
            ))
    return ladder


def max_abs_difference(model: nn.Module, onnx_path: str | os.PathLike, inputs: torch.Tensor) -> float:
    """max |torch probabilities - onnxruntime probabilities| on ``inputs`` [N, 1, 64, 64]."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(inputs).cpu().numpy()
    got = session.run([OUTPUT_NAME], {INPUT_NAME: inputs.cpu().numpy().astype(np.float32)})[0]
    if got.shape != expected.shape:
        raise OnnxExportError(f"ONNX output has shape {got.shape}, torch gives {expected.shape}")
    return float(np.abs(got - expected).max())


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
    _require_onnx()
    import onnx

    model = model.cpu().eval()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    check = torch.rand(n_check, 1, input_size, input_size, generator=gen) * 2 - 1
    example = check[:2].clone()
    failures: list[str] = []
    for name, kwargs in _attempts():
        fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # tracer/deprecation chatter, not the user's business
                torch.onnx.export(
                    model, (example,), tmp, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                    external_data=False, **kwargs,
                )
            onnx.checker.check_model(onnx.load(tmp))
            diff = max(max_abs_difference(model, tmp, check), max_abs_difference(model, tmp, check[:1]))
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
