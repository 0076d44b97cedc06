"""``emologic query IMAGE_OR_DIR...``: a program's answer for new images.

With ``--run RUN``, or when ``runs/latest`` exists, a trained run answers; with
``--prior``, or before any training, the untrained program does (its documented
trust, FER2013 for faces, no scene knowledge). The work is done by
:mod:`experiments.query.program`; this module parses the options and prints.

Exit codes: 0 every input answered, 1 some input failed (one line each on
stderr, the others still answered), 2 usage error (unknown run, bad option).
"""
from __future__ import annotations

import argparse
import json
import sys

from experiments.cli import UserError, command
from pipelines.images import DEFAULT_MAX_PIXELS


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR",
                   help="image files, or directories (their image files, not recursive)")
    p.add_argument("--run", default=None,
                   help="run directory, run name or 'latest' (default: latest; without runs, the untrained program)")
    p.add_argument("--prior", action="store_true",
                   help="answer with the untrained program: its documented trust t(p), the FER2013 face "
                        "predicate and no scene knowledge (uniform), even when trained runs exist")
    p.add_argument("--program", default=None, metavar="NAME",
                   help="with --prior (or no runs): the image program to use (default: context_selection)")
    p.add_argument("--scene-weights", default=None, metavar="FILE",
                   help="with --prior (or no runs): Places365 ResNet-18 weights for the scene backbone "
                        "(the untrained scene head still outputs the uniform distribution)")
    p.add_argument("--runs-dir", default="runs", help="where runs live (default: runs)")
    p.add_argument("--regime", default=None,
                   help="frozen, joint, uniform_rules... (default: the logic regime with the lowest final "
                        "validation NLL; late_fusion has no program and is refused)")
    p.add_argument("--seed", type=int, default=None, help="seed of the run to use (default: the run's first)")
    p.add_argument("--face-source", choices=("mtcnn", "annotations"), default="mtcnn",
                   help="faces from MTCNN (default) or, for images of the run's synthetic data set, "
                        "from its recorded boxes")
    p.add_argument("--face-weights", default=None, metavar="DIR",
                   help="use this face predicate (emologic train-face output) instead of the run's")
    p.add_argument("--top", type=int, default=3, metavar="K", help="emotions listed per image (default: 3)")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse images with more pixels than this, before decoding them (decompression bombs; "
                        f"default: {DEFAULT_MAX_PIXELS:,})")
    p.add_argument("--runtime", choices=("auto", "onnx", "torch"), default="auto",
                   help="auto (default): answer from the model's served copy (ONNX networks and numpy logic, no "
                        "torch: fast start), built with torch on the model's first query; torch for programs a "
                        "copy cannot serve. onnx: insist on the copy. torch: the torch networks and logic model")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per line per input ({'input', 'error'} for a failed one)")
    p.add_argument("--annotate", default=None, metavar="OUT_DIR",
                   help="write a PNG per image with face boxes, each source's top emotion and the answer")


def format_result(r, min_face_size: int | None = None) -> list[str]:
    """The text block of one :class:`~experiments.query.results.QueryResult`
    (``min_face_size``: the detector's, to say why no face was found)."""
    lines = [r.input]
    if r.faces:
        faces = "; ".join(
            f"{f.slot} ({f.box[0]:.0f},{f.box[1]:.0f})-({f.box[2]:.0f},{f.box[3]:.0f}) "
            f"p={f.prob:.2f} size={f.size:.2f}" for f in r.faces)
        found = r.faces_found if r.faces_found is not None else len(r.faces)
        count = f"{found} found, the {len(r.faces)} largest used" if found > len(r.faces) else str(len(r.faces))
        lines.append(f"  faces    {count}: {faces}")
    else:
        limit = f" of at least {min_face_size} px" if min_face_size else ""
        # the sources the program has without a face (context_selection: the scene alone)
        alone = " and ".join(r.trust) or "no source"
        lines.append(f"  faces    none found (the detector finds faces{limit}): the {alone} alone answer"
                     + ("s" if len(r.trust) == 1 else ""))
    trust = ", ".join(f"{s} {p:.2f}" for s, p in r.trust.items())
    lines.append(f"  context  {r.context} (P(source chosen | context): {trust})")
    if r.decided:
        lines.append("  emotion  " + ", ".join(f"{e} {p:.2f}" for e, p in r.top))
    else:
        lines.append(f"  emotion  none preferred: every emotion {r.top[0][1]:.2f} (uniform)")
    lines.append("  sources  " + "; ".join(f"{s} says {r.says(s)}" for s in r.sources))
    lines.append(f"  answer   {r.prediction if r.decided else 'no emotion preferred'}: {r.explanation()}")
    for dim, est in (r.va or {}).items():
        # the bins that carry the mass (>= 5%), most first
        bins = ", ".join(f"{b} {p:.2f}" for b, p in sorted(est["bins"].items(), key=lambda kv: -kv[1]) if p >= 0.05)
        lines.append(f"  {dim:<8} {est['mean']:+.2f} ± {est['std']:.2f} (bins: {bins})")
    if r.annotated:
        lines.append(f"  picture  {r.annotated}")
    return lines


@command(
    "query",
    help="Answer new images with a program (a trained run, or the untrained prior): emotions, faces, "
         "context, which source it trusted",
    example="emologic query photo.jpg photos/ --top 3 --annotate annotated/",
    configure=_configure,
    numeric_setup=False,  # answers only: no torch threads to set up (a served copy never imports torch)
)
def run(args: argparse.Namespace) -> int:
    from experiments.query.open_program import open_program
    from experiments.query.results import QueryError
    from neural.provenance import describe_sources

    if args.max_pixels is not None and args.max_pixels < 1:
        raise UserError(f"--max-pixels must be positive, got {args.max_pixels}")
    tp = open_program(args.run, prior=args.prior, runs_root=args.runs_dir, regime=args.regime, seed=args.seed,
                      program=args.program, scene_weights=args.scene_weights, face_weights=args.face_weights,
                      max_pixels=args.max_pixels, runtime=args.runtime, face_source=args.face_source)
    tp.pipeline(args.face_source)  # scene weights and detector load (or fail) before the header promises them
    if tp.note:
        print(f"emologic query: {tp.note}", file=sys.stderr, flush=True)
    header = f"{tp.describe()} | faces from {args.face_source}"
    print(header, file=sys.stderr if args.json else sys.stdout, flush=True)
    if not args.json:  # where each source's knowledge came from, once (JSON: the "model" record)
        print("\n".join(f"  knowledge {line}" for line in describe_sources(tp.source_records())), flush=True)
    min_face = tp.pipeline_config.min_face_size if args.face_source == "mtcnn" else None
    failed = 0
    model = None
    for r in tp.iter_answers(args.inputs, face_source=args.face_source, top=args.top, annotate=args.annotate):
        if isinstance(r, QueryError):
            failed += 1
            print(f"emologic query: error: {r}", file=sys.stderr, flush=True)
            if args.json:
                print(json.dumps(r.to_dict()), flush=True)
        elif args.json:
            model = model or tp.model_record()
            print(json.dumps({**r.to_dict(), "run": model["run"], "regime": tp.regime, "seed": tp.seed,
                              "model": model}), flush=True)
        else:
            print("\n".join(format_result(r, min_face)), flush=True)
    if failed:
        print(f"emologic query: {failed} input(s) failed", file=sys.stderr)
    return 1 if failed else 0
