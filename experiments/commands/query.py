"""``emologic query IMAGE_OR_DIR...``: a trained program's answer for new images.

The work is done by :mod:`experiments.query`; this module parses the options and
prints. Exit codes: 0 every input answered, 1 some input failed (one line each on
stderr, the others still answered), 2 usage error (unknown run, bad option).
"""
from __future__ import annotations

import argparse
import json
import sys

from experiments.cli import command


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR",
                   help="image files, or directories (their image files, not recursive)")
    p.add_argument("--run", default=None, help="run directory, run name or 'latest' (default: latest)")
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
    p.add_argument("--json", action="store_true",
                   help="one JSON object per line per input ({'input', 'error'} for a failed one)")
    p.add_argument("--annotate", default=None, metavar="OUT_DIR",
                   help="write a PNG per image with face boxes, each source's top emotion and the answer")


def format_result(r) -> list[str]:
    """The text block of one :class:`~experiments.query.QueryResult`."""
    lines = [r.input]
    if r.faces:
        faces = "; ".join(
            f"{f.slot} ({f.box[0]:.0f},{f.box[1]:.0f})-({f.box[2]:.0f},{f.box[3]:.0f}) "
            f"p={f.prob:.2f} size={f.size:.2f}" for f in r.faces)
        lines.append(f"  faces    {len(r.faces)}: {faces}")
    else:
        lines.append("  faces    none found")
    trust = ", ".join(f"{s} {p:.2f}" for s, p in r.trust.items())
    lines.append(f"  context  {r.context} (P(source chosen | context): {trust})")
    lines.append("  emotion  " + ", ".join(f"{e} {p:.2f}" for e, p in r.top))
    lines.append("  sources  " + "; ".join(f"{s} says {e} ({p:.2f})" for s, (e, p) in r.sources.items()))
    lines.append(f"  answer   {r.prediction}: {r.explanation()}")
    for dim, est in (r.va or {}).items():
        # the bins that carry the mass (>= 5%), most first
        bins = ", ".join(f"{b} {p:.2f}" for b, p in sorted(est["bins"].items(), key=lambda kv: -kv[1]) if p >= 0.05)
        lines.append(f"  {dim:<8} {est['mean']:+.2f} ± {est['std']:.2f} (bins: {bins})")
    if r.annotated:
        lines.append(f"  picture  {r.annotated}")
    return lines


@command(
    "query",
    help="Answer new images with a trained program: emotions, faces, context, which source it trusted",
    example="emologic query photos/ --run runs/latest --top 3 --annotate annotated/",
    configure=_configure,
)
def run(args: argparse.Namespace) -> int:
    from experiments.query import QueryError, TrainedProgram

    tp = TrainedProgram.load(args.run, regime=args.regime, seed=args.seed, runs_root=args.runs_dir,
                             face_weights=args.face_weights)
    header = f"{tp.describe()} | faces from {args.face_source}"
    print(header, file=sys.stderr if args.json else sys.stdout, flush=True)
    failed = 0
    for r in tp.iter_answers(args.inputs, face_source=args.face_source, top=args.top, annotate=args.annotate):
        if isinstance(r, QueryError):
            failed += 1
            print(f"emologic query: error: {r}", file=sys.stderr, flush=True)
            if args.json:
                print(json.dumps(r.to_dict()), flush=True)
        elif args.json:
            print(json.dumps({**r.to_dict(), "run": str(tp.run_dir), "regime": tp.regime, "seed": tp.seed}),
                  flush=True)
        else:
            print("\n".join(format_result(r)), flush=True)
    if failed:
        print(f"emologic query: {failed} input(s) failed", file=sys.stderr)
    return 1 if failed else 0
