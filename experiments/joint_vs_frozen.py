"""Is it better to train the rule parameters alone on frozen networks, or rules
and networks jointly? Runs the whole comparison and writes a run directory.

    python experiments/joint_vs_frozen.py                       # built-in synthetic benchmark
    python experiments/joint_vs_frozen.py --dataset findingemo --images DIR
    python experiments/joint_vs_frozen.py --resume runs/latest  # continue an interrupted run
    EMOLOGIC_PLUGINS=my_light.py python experiments/joint_vs_frozen.py --program my.pl  # a plug-in predicate
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments.harness import add_arguments, config_from_args, run  # noqa: E402
from experiments.plugins import load_plugins  # noqa: E402
from neural.cluster import add_ray_arguments  # noqa: E402
from neural.compute import flush_denormals  # noqa: E402
from neural.common import UserError  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="experiments/joint_vs_frozen.py",
        description="Compare frozen (logic-only), joint, uniform-rules and late-fusion training.",
        epilog="Example:\n  python experiments/joint_vs_frozen.py --seeds 0 1 2 --epochs 8",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run ('latest' or a path)")
    add_ray_arguments(parser, "the (seed, regime) units (stage 0 is trained once, here)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:  # a plug-in's networks and features, before the program's bindings are checked
        load_plugins()
    except UserError as exc:
        print(f"joint_vs_frozen: error: {exc}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    flush_denormals()  # before torch starts its threads (neural/compute.py)
    try:
        sweep = None
        if args.workers is not None and args.workers < 1:
            raise UserError(f"--workers must be positive, got {args.workers}")
        if args.ray is not None:
            from experiments.harness.sweep import RaySweep
            from neural.cluster import import_ray

            import_ray()  # before the data and stage 0: without Ray, say so at once
            sweep = RaySweep(address=args.ray, workers=args.workers)
        elif args.workers is not None:
            raise UserError("--workers applies to --ray runs; add --ray (a local Ray) or --ray ADDRESS")
        run(config_from_args(args), argv, resume=args.resume, sweep=sweep)
    except UserError as exc:
        print(f"joint_vs_frozen: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
