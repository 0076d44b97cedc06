"""``emologic export-onnx``: the face predicate as ONNX, checked against torch with onnxruntime."""
from __future__ import annotations

import argparse

from experiments.cli import command


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a train-face output directory (or its checkpoint/, or any face_emotion network directory)")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--n-check", type=int, default=8, help="random inputs compared with torch (default 8)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest admissible |probability difference| (default 1e-4)")


@command(
    "export-onnx",
    help="Export a trained face net to ONNX and verify it with onnxruntime",
    example="emologic export-onnx runs/face --out face.onnx",
    configure=_args,
)
def run(args: argparse.Namespace) -> int:
    from neural.facetrain.backbones import load_face_predicate
    from neural.onnx_export import export_onnx

    report = export_onnx(load_face_predicate(args.checkpoint), args.out, n_check=args.n_check, tolerance=args.tolerance)
    for failure in report.attempts:
        print(f"(exporter attempt failed: {failure})")
    print(f"wrote {report.path} ({report.exporter}); onnxruntime vs torch on {report.n_inputs} random inputs: "
          f"max abs difference of probabilities {report.max_abs_diff:.3g} (tolerance {args.tolerance:g})")
    return 0
