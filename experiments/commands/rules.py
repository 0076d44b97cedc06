"""``emologic rules RUN_DIR``: the learned rule parameters of a finished run.

An image program's are shown per annotated disjunction with P(source selected |
context); a clip program's (``clip_sentiment``) as its polarity table P(sentiment
| emotion), an emotion x sentiment table beside the generator's and the observed
one, and its sentiment sources as one row.
"""
from __future__ import annotations

import argparse
import json
import sys

from experiments.cli import command
from neural.common import UserError
from neural.provenance import describe_sources


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", default=None, help="run directory, run name or 'latest' (default: latest)")
    p.add_argument("--runs-dir", default="runs", help="where runs live (default: runs)")
    p.add_argument("--regime", default=None, help="only this regime (default: every regime with rules)")
    p.add_argument("--seed", type=int, default=None, help="seed (default: the run's first seed)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--pl", action="store_true",
                   help="print the program with the learned probabilities written in (default regime: frozen)")


def read_json(path, what: str):
    """The JSON at ``path``; a damaged file (a run killed mid-write, edited by hand) is one clear error."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found (is the run finished?)") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: damaged {what} ({exc}); rerun the run or --resume it") from None


def load_rules(run_dir, regime: str, seed: int):
    from logic.given import Given
    from logic.program import load_program

    meta = _model_meta(run_dir, regime, seed)
    directory = run_dir / "checkpoints" / f"seed{seed}" / regime
    program = load_program(meta["program"], check_bindings=False)
    # the networks are not evaluated here: rules and source selection need none
    networks = {n: Given() for n in program.networks}
    from logic.model import LogicModel

    model = LogicModel(program, networks, engine="compiled", face_size_threshold=meta.get("face_size_threshold"))
    model.load_rules(directory / "rules.json")
    return program, model


def _model_meta(run_dir, regime: str, seed: int) -> dict:
    return read_json(run_dir / "checkpoints" / f"seed{seed}" / regime / "model.json", "model description")


def _learned(program, model) -> dict:
    """What a run learned, for --json: clip programs say it as a polarity table and sources."""
    if program.kind == "clip":
        return {"polarity_table": model.polarity_table(), "sentiment_sources": model.sentiment_sources()}
    return {"source_probabilities": model.source_probabilities()}


def _print_clip(program, model, results: dict) -> None:
    from logic.inspect import render_polarity, render_row

    references = {"generator": results.get("truth_polarity_table"),
                  "train clips": (results.get("empirical_polarity_table") or {}).get("train")}
    print("polarity table P(sentiment | emotion)"
          + (" (right: the generator's table and the one observed in the training clips)"
             if any(references.values()) else "") + ":")
    print("\n".join(render_polarity(model.polarity_table(), references)))
    print("\nP(sentiment source):")
    print("\n".join(render_row(model.sentiment_sources())))


@command(
    "rules",
    help="Show the learned rule probabilities of a run (table, JSON, or a ProbLog program)",
    example="emologic rules runs/latest --regime frozen --pl > learned.pl",
    configure=_configure,
)
def run(args: argparse.Namespace) -> int:
    from experiments.plugins import missing_plugins
    from experiments.runs import resolve_run
    from logic.inspect import render_sources, render_tables

    run_dir = resolve_run(args.run, args.runs_dir)
    config = read_json(run_dir / "config.json", "run config")
    cfg = config.get("config", config)
    missing = missing_plugins(config.get("plugins"))
    if missing:  # the rules need no network, so they are shown; a query of this run would be refused
        print(f"emologic rules: note: {run_dir} was made with {'; '.join(missing)}, which is not loaded",
              file=sys.stderr)
    seed = args.seed if args.seed is not None else cfg["seeds"][0]
    seed_dir = run_dir / "checkpoints" / f"seed{seed}"
    available = sorted(p.name for p in seed_dir.glob("*") if (p / "rules.json").is_file()) if seed_dir.is_dir() else []
    if not available:
        raise UserError(f"{run_dir}: no learned rules for seed {seed} (is the run finished? try --seed)")
    if args.pl:
        regime = args.regime or ("frozen" if "frozen" in available else available[0])
        regimes = [regime]
    else:
        regimes = [args.regime] if args.regime else available
    for r in regimes:
        if r not in available:
            raise UserError(f"{run_dir}: no rules for regime {r!r}; available: {', '.join(available)}")
    results_path = run_dir / "results.json"
    results = read_json(results_path, "results file") if results_path.is_file() else {}
    truth = results.get("truth_source_table")

    loaded = {r: load_rules(run_dir, r, seed) for r in regimes}
    provenance = {r: _model_meta(run_dir, r, seed).get("provenance") for r in regimes}
    if args.pl:
        program, model = loaded[regimes[0]]
        print(f"% learned by regime {regimes[0]} (seed {seed}) in {run_dir}")
        print("% neural predicates' knowledge, per source:")
        print("".join(f"%   {line}\n" for line in describe_sources(provenance[regimes[0]])), end="")
        print(program.with_probabilities(model.rule_probabilities()), end="")
        return 0
    if args.json:
        print(json.dumps({r: {"program": p.name, "seed": seed, "rules": m.rule_table(), **_learned(p, m),
                              "provenance": provenance[r]}
                          for r, (p, m) in loaded.items()}, indent=1))
        return 0
    print(f"run {run_dir} (seed {seed})")
    for r, (program, model) in loaded.items():
        print(f"\n== {r}: program {program.name}\n")
        if program.kind == "clip":
            _print_clip(program, model, results)
        else:
            print("\n".join(render_tables(model.rule_table(), program)))
            print("P(source selected | context):")
            print("\n".join(render_sources(model.source_probabilities(), truth)))
        print("\nwhere each source's knowledge came from:")
        print("\n".join(describe_sources(provenance[r])))
    return 0
