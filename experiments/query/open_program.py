"""Which program answers ``emologic query``, and in which runtime.

    tp = open_program()                  # runs/latest if there is one, else the untrained program
    tp = open_program("runs/latest", regime="joint", runtime="torch")

``runtime``: ``"auto"`` (default) answers from the model's served copy
(:mod:`experiments.query.bundle`: ONNX and numpy, no torch), building it with
torch on the first query of that model; a program no copy can serve is answered
by torch. ``"onnx"`` insists on the copy (one line saying why it cannot be);
``"torch"`` always answers with the torch networks and logic model.
"""
from __future__ import annotations

import os
from pathlib import Path

from experiments.query.bundle import ServeError, build_served, files_digest, find_served, served_key
from experiments.query.checkpoints import locate_checkpoint
from experiments.query.program import DEFAULT_PROGRAM, TrainedProgram
from neural.common import UserError

RUNTIMES = ("auto", "onnx", "torch")


def _digest(path) -> str | None:
    """What a weights option names: a file's (or directory's) digest; a URL or missing path as given."""
    if path is None:
        return None
    p = Path(path).expanduser()
    return files_digest(p) if p.exists() else str(path)


def _program_digest(name_or_path: str) -> str:
    """The digest of a program's text: a ``.pl`` path, or a built-in program's file (torch- and
    ProbLog-free: :func:`logic.program.resolve_program_path` refuses unknown names later)."""
    p = Path(name_or_path)
    if p.suffix != ".pl" and p.parent == Path("."):
        p = Path(__file__).resolve().parents[2] / "logic" / "programs" / f"{p}.pl"
    return _digest(p) or str(name_or_path)


def _served_or_trained(request: dict, load, runtime: str, max_pixels: int | None):
    if runtime != "torch":
        from experiments.query.served import ServedProgram

        key = served_key(request)
        found = find_served(key)
        if found is not None:
            return ServedProgram(found, max_pixels)
    tp = load()
    if runtime == "torch":
        return tp
    try:
        directory = build_served(tp, key)
    except ServeError as exc:
        if runtime == "onnx":
            raise UserError(f"--runtime onnx: {exc}; use --runtime torch (or auto)") from None
        tp.note = f"answered with torch: {exc}"
        return tp
    served = ServedProgram(directory, max_pixels)
    served.note = (f"built the served copy of this model in {served.manifest['built_s']:.1f} s ({directory}); "
                   "later queries of it start without torch")
    return served


def open_program(run: str | os.PathLike | None = None, *, prior: bool = False, runs_root: str | os.PathLike = "runs",
                 regime: str | None = None, seed: int | None = None, program: str | None = None,
                 scene_weights: str | None = None, face_weights: str | None = None,
                 max_pixels: int | None = None, runtime: str = "auto", face_source: str = "mtcnn"):
    """What ``emologic query`` answers with: ``run`` when given; else the latest
    run under ``runs_root``; the untrained program (:meth:`TrainedProgram.prior`)
    with ``prior=True`` or when there is no latest run. Options that only mean
    something for the other kind are refused by name. ``runtime``: see the module doc; a copy
    finds faces with MTCNN, so ``auto`` answers another ``face_source`` with torch.
    Returns a :class:`TrainedProgram` or a :class:`~experiments.query.served.ServedProgram`."""
    if runtime not in RUNTIMES:
        raise UserError(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    if face_source != "mtcnn" and runtime == "auto":
        runtime = "torch"
    if prior and run is not None:
        raise UserError("--prior answers with the untrained program and --run with a trained one; give one of them")
    why = "--prior" if prior else None
    if not prior and run is None:
        from experiments.runs import RunNotFoundError, resolve_run

        try:
            run = resolve_run(None, runs_root)
        except RunNotFoundError:
            why = f"no {Path(runs_root) / 'latest'}"
    if why is None:
        prior_only = [flag for flag, v in (("--program", program), ("--scene-weights", scene_weights)) if v]
        if prior_only:
            verb = "set" if len(prior_only) > 1 else "sets"
            raise UserError(f"{' and '.join(prior_only)} {verb} up the untrained program (--prior); a trained run "
                            "answers with its own program and scene backbone")
        ck = locate_checkpoint(run, regime, seed, runs_root)
        # the run as named (the header and --json say it so) and where it is
        request = {"kind": "run", "run_dir": str(ck.run_dir), "path": str(ck.run_dir.resolve()), "seed": ck.seed,
                   "regime": ck.regime, "why": ck.why, "checkpoint": files_digest(ck.directory),
                   "program": _program_digest(ck.meta["program"]), "face_weights": _digest(face_weights),
                   "scene_weights": _digest((ck.meta.get("pipeline") or {}).get("scene_weights"))}
        return _served_or_trained(request, lambda: TrainedProgram.from_checkpoint(ck, face_weights, max_pixels),
                                  runtime, max_pixels)
    run_only = [flag for flag, v in (("--regime", regime), ("--seed", seed)) if v is not None]
    if run_only:
        verb = "choose" if len(run_only) > 1 else "chooses"
        raise UserError(f"{' and '.join(run_only)} {verb} within a trained run, and none is used ({why}); "
                        "pass --run RUN")
    program = program or DEFAULT_PROGRAM
    request = {"kind": "prior", "program": str(program), "text": _program_digest(program), "why": why,
               "scene_weights": _digest(scene_weights), "face_weights": _digest(face_weights),
               "fer_hdf5": _digest(os.environ.get("EMOLOGIC_FER_HDF5") or None)}
    return _served_or_trained(request, lambda: TrainedProgram.prior(program, scene_weights=scene_weights,
                                                                    face_weights=face_weights, why=why,
                                                                    max_pixels=max_pixels), runtime, max_pixels)
