"""A served copy of a program: what answers ``emologic query`` without torch.

``import torch, torchvision`` alone takes 4.7-6.8 s on a 2-core machine, above
the 3 s a user should wait for a photo's first answer. A *served copy* holds
everything a query needs in a form that onnxruntime (0.3 s to import) and numpy
run:

* the scene backbone as ONNX (image -> features, and its layer3 features where a
  network reads them), kept once per weights under ``<cache>/served/scene/``;
* ``net-<network>.onnx``: each network of the program (the scene head, the face net);
* ``logic/``: the program's answers as numpy tables (:mod:`logic.answer_tables`),
  with the run's learned (or the program's documented) trust;
* ``manifest.json``: what answers (the description, each source's provenance,
  the pipeline config, which tensor each source reads) and how each file was
  exported and verified (onnxruntime against torch).

MTCNN's nets are exported once for every program (:mod:`neural.mtcnn_onnx`).

A copy lives under ``<cache>/served/<key>/``. The key is a sha256 over what
decides the answers, computed without torch: the checkpoint's files (networks,
rules, model.json) or the untrained program's text and weights, the options that
pick them, the code that builds and reads copies and the library versions. So
retraining, another regime or seed, an edited program or new code never reach a
stale copy: they have another key. A copy is written to a temporary directory
and renamed into place complete.

The first query of a model builds its copy (with torch, a few seconds); every
later process answers from it. Programs a copy cannot serve (a V/A source, whose
MC dropout runs in torch; plug-in features, computed by Python plug-ins) are
answered by torch as before (:class:`ServeError` says why).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from neural.common import FACE_SLOTS, UserError, cache_dir

FORMAT = 1
SUBDIR = "served"
MANIFEST = "manifest.json"
SCENE_DIR = "scene"  # the scene backbones, shared by the copies (under served_root())
#: The code that decides what a copy holds and how it is read (repository paths).
CODE = ("experiments/query/bundle.py", "experiments/query/served.py", "experiments/query/results.py",
        "experiments/query/program.py", "experiments/harness/binding.py", "neural/image_input.py",
        "neural/onnx_export.py", "neural/scene.py", "neural/face.py", "neural/fer_weights.py",
        "logic/answer_tables.py", "logic/answer_export.py", "pipelines/context.py")
LIBRARIES = ("torch", "torchvision", "onnx", "onnxruntime", "numpy", "problog", "pysdd", "klaycircuits")
#: The tensors a served pipeline fills: the scene backbone's outputs and the face crops.
SCENE_OUTPUTS = ("scene", "scene_layer3")
SERVED_FEEDS = SCENE_OUTPUTS + FACE_SLOTS


class ServeError(UserError):
    """This program cannot be answered by a served copy (torch answers it)."""


def served_root() -> Path:
    return cache_dir() / SUBDIR


def files_digest(path: str | os.PathLike) -> str:
    """sha256 over a file, or over a directory's files (relative names and bytes, sorted)."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path) if f != path else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def served_key(request: dict) -> str:
    """The key of the copy that answers ``request`` (JSON-able: what picks the model)."""
    root = Path(__file__).resolve().parents[2]
    code = hashlib.sha256()
    for rel in CODE:
        code.update(rel.encode())
        code.update((root / rel).read_bytes())
    payload = {"format": FORMAT, "request": request, "code": code.hexdigest(),
               "libraries": {d: _version(d) for d in LIBRARIES},
               "python": f"{sys.version_info[0]}.{sys.version_info[1]}"}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def find_served(key: str) -> Path | None:
    """The complete copy of ``key``, or None."""
    directory = served_root() / key[:32]
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("key") != key or manifest.get("format") != FORMAT:
        return None
    files = [directory.parent / manifest["scene_file"], *(directory / f for f in manifest["networks"].values())]
    return directory if all(f.is_file() for f in files) else None  # a shared backbone deleted: build again


# --------------------------------------------------------------------------- #
# Building a copy (torch)
# --------------------------------------------------------------------------- #
def servable(tp) -> None:
    """Raise :class:`ServeError` saying why ``tp`` (a TrainedProgram) cannot be served."""
    cfg = tp.stored_pipeline_config
    if tp.binding.uses_va:
        raise ServeError(f"program {tp.program.name} reads a V/A source, whose MC-dropout estimate runs in torch")
    if cfg.features:
        raise ServeError(f"the run computes plug-in features ({', '.join(cfg.features)}) in Python")
    if cfg.va_backbone != "scene":
        raise ServeError(f"the run's V/A backbone is {cfg.va_backbone}")
    feeds = tp.binding.feeds()
    for src, nets in tp.program.tensor_networks.items():
        if feeds[src] not in SERVED_FEEDS or len(nets) != 1:
            raise ServeError(f"source {src} reads {feeds[src]} through {len(nets)} network(s); a copy serves one "
                             f"network on {', '.join(SERVED_FEEDS)}")


def scene_outputs(backbone, layer3: bool):
    """The scene backbone as one module to export: pixels -> scene features (and layer3 features)."""
    from torch import nn

    class SceneOutputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone

        def forward(self, pixels):
            if layer3:
                return self.backbone(pixels), self.backbone.layer3_features(pixels)
            return self.backbone(pixels)

    return SceneOutputs().eval()


def _export(module, path: Path, input_name: str, inputs, output_names: list[str], tolerance: float):
    """``module`` as ONNX with a dynamic batch, checked on ``inputs`` whole and on its first row."""
    from neural.onnx_export import export_verified

    axes = {name: {0: "batch"} for name in [input_name, *output_names]}
    return export_verified(module, path, (inputs[:2],), [(inputs,), (inputs[:1],)], [input_name], output_names,
                           axes, tolerance)


def build_served(tp, key: str, n_check: int = 4) -> Path:
    """Export ``tp`` (a :class:`~experiments.query.program.TrainedProgram`) as the copy of ``key``;
    :class:`ServeError` says why when it cannot be served or built."""
    servable(tp)
    try:
        return _build(tp, key, n_check)
    except (UserError, OSError) as exc:  # an export that fails its check, an unwritable cache: torch answers
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ServeError(f"its served copy could not be built ({first})") from exc


def _build(tp, key: str, n_check: int) -> Path:
    import torch

    from logic.answer_export import answer_tables
    from neural.mtcnn_onnx import mtcnn_onnx_dir

    started = time.perf_counter()
    mtcnn_onnx_dir()  # MTCNN's nets, shared by every copy
    root = served_root()
    root.mkdir(parents=True, exist_ok=True)
    cfg = tp.stored_pipeline_config  # without this query's --max-pixels: the copy serves every later one
    gen = torch.Generator().manual_seed(0)
    # verified on pixels in the range of ImageNet-normalised images, then on the features they give
    pixels = torch.randn(n_check, 3, cfg.scene_size, cfg.scene_size, generator=gen).clamp(-2.2, 2.7)
    crops = torch.rand(n_check, 1, cfg.crop_size, cfg.crop_size, generator=gen) * 2 - 1
    work = Path(tempfile.mkdtemp(dir=root, prefix=f".{key[:12]}-"))
    try:
        exports: dict[str, dict] = {}
        scene_file, scene_names, features = _export_scene(tp, pixels, root, exports)
        networks = _export_networks(tp, {**features, **{slot: crops for slot in FACE_SLOTS}}, work, exports)
        answer_tables(tp.model).save(work / "logic")
        o = tp.origin
        manifest = {
            "format": FORMAT, "key": key, "built_s": round(time.perf_counter() - started, 2),
            "describe": tp.describe(), "model_record": tp.model_record(), "sources": tp.source_records(),
            "origin": {"kind": o.kind, "why": o.why, "run_dir": None if o.run_dir is None else str(o.run_dir),
                       "regime": o.regime, "seed": o.seed},
            "program": tp.program.name, "pipeline": cfg.to_dict(),
            "sources_in": {c: list(tp.program.sources_in(c)) for c in tp.model.interface.contexts},
            "tensor_networks": {s: list(n) for s, n in tp.program.tensor_networks.items()},
            "widths": {s: tp.program.sources[s].width for s in tp.program.tensor_networks},
            "feeds": tp.binding.feeds(), "scene_file": f"{SCENE_DIR}/{scene_file.name}",
            "scene_outputs": scene_names, "networks": networks, "exports": exports,
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        target = root / key[:32]
        if find_served(key) is not None:  # another process finished the same copy meanwhile: keep that one
            return target
        shutil.rmtree(target, ignore_errors=True)  # an incomplete leftover (find_served refused it)
        try:
            os.replace(work, target)
        except OSError:  # another process renamed its complete copy in between
            if find_served(key) is None:
                raise
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _export_scene(tp, pixels, root: Path, exports: dict):
    """The scene backbone's file (exported unless there), its output names, and its outputs on
    ``pixels`` (the examples the networks reading them are verified on).

    One file serves every copy with the same weights (45 MB for ResNet-18): it is keyed by the
    weights' bytes, the outputs and the input size, and (through :func:`served_key`) code and libraries."""
    import torch

    from pipelines.features import parameter_fingerprint

    backbone = tp.pipeline("mtcnn").scene.net
    layer3 = "scene_layer3" in tp.binding.feeds().values()
    names = list(SCENE_OUTPUTS[:2 if layer3 else 1])
    scene_id = served_key({"scene backbone": parameter_fingerprint(backbone), "outputs": names,
                           "size": int(pixels.shape[-1])})[:32]
    path = root / SCENE_DIR / f"{scene_id}.onnx"
    module = scene_outputs(backbone, layer3)
    if not path.is_file():  # export_verified writes it atomically, verified, or not at all
        report = _export(module, path, "pixels", pixels, names, tolerance=1e-3)  # features of magnitude ~10 in float32
        exports[f"{SCENE_DIR}/{path.name}"] = {"exporter": report.exporter, "max_abs_diff": report.max_abs_diff}
    with torch.no_grad():
        outputs = module(pixels.contiguous())
    return path, names, dict(zip(names, outputs if layer3 else (outputs,)))


def _export_networks(tp, examples: dict, work: Path, exports: dict) -> dict[str, str]:
    """Each network of the program as ``net-<name>.onnx``, verified on ``examples[feed]``
    (the tensors its source reads); network -> file name."""
    networks: dict[str, str] = {}
    feeds = tp.binding.feeds()
    for src, (net,) in tp.program.tensor_networks.items():
        if net in networks:  # the face net reads three sources: one file
            continue
        name = f"net-{net}.onnx"
        report = _export(tp.binding.networks[net], work / name, "inputs", examples[feeds[src]],
                         ["outputs"], tolerance=1e-5)  # probabilities
        exports[name] = {"exporter": report.exporter, "max_abs_diff": report.max_abs_diff}
        networks[net] = name
    return networks
