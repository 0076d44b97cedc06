"""A served copy of a program answering queries, without torch.

:class:`ServedProgram` reads a copy built by :mod:`experiments.query.bundle` and
answers like the :class:`~experiments.query.program.TrainedProgram` it was built
from (tested to agree): the same image pipeline (loading, MTCNN's boxes, face
crops) with MTCNN on onnxruntime and the scene backbone as ONNX, the program's
networks as ONNX on the tensors each source reads, the logic as numpy tables,
and the same result assembly (:func:`experiments.query.results.assemble_results`).
Importing this module, and answering, imports neither torch nor torchvision.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from experiments.query.base import AnsweringProgram
from experiments.query.bundle import MANIFEST
from experiments.query.results import BatchAnswers, assemble_results
from neural.common import EMOTIONS, FACE_SLOTS, MAX_FACES, UserError


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # a query is a handful of small batches: up to 4 threads (more cores add start-up, not speed)
    options.intra_op_num_threads = min(4, os.cpu_count() or 1)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxSceneFeatures:
    """The scene backbone of a copy as the image pipeline's scene extractor:
    ``images -> {"scene": [B, 512], "scene_layer3": [B, 256, h, w] (when exported)}`` (numpy)."""

    def __init__(self, path: Path, size: int, outputs: list[str]):
        self.session, self.size, self.outputs = _session(path), int(size), list(outputs)

    def __call__(self, images) -> dict[str, np.ndarray]:
        from neural.image_input import scene_pixels

        pixels = np.stack([scene_pixels(im, self.size) for im in images])
        return dict(zip(self.outputs, self.session.run(None, {"pixels": pixels})))


class ServedProgram(AnsweringProgram):
    """A program answered from its served copy (see module doc)."""

    def __init__(self, directory: str | os.PathLike, max_pixels: int | None = None, note: str | None = None):
        from logic.answer_tables import AnswerTables
        from pipelines.config import PipelineConfig

        self.directory = Path(directory)
        self.manifest = json.loads((self.directory / MANIFEST).read_text(encoding="utf-8"))
        self.tables = AnswerTables.load(self.directory / "logic")
        cfg = PipelineConfig.from_dict(self.manifest["pipeline"])
        self.pipeline_config = cfg if max_pixels is None else dataclasses.replace(cfg, max_pixels=max_pixels)
        origin = self.manifest["origin"]
        self.regime, self.seed, self.why = origin["regime"], origin["seed"], origin["why"]
        self.run_dir = None if origin["run_dir"] is None else Path(origin["run_dir"])
        self.note = note  # said once by the command: e.g. that this copy was built just now
        self._pipeline = None
        self._sessions: dict[str, object] = {}

    # -- what answers -----------------------------------------------------------
    def describe(self) -> str:
        return self.manifest["describe"]

    def source_records(self) -> dict[str, dict]:
        return self.manifest["sources"]

    def model_record(self) -> dict:
        return self.manifest["model_record"]

    def trust(self, context: str) -> dict[str, float]:
        return self.tables.trust[context]

    # -- pieces -----------------------------------------------------------------
    def pipeline(self, face_source: str):
        """The image pipeline, MTCNN on onnxruntime and the scene backbone as ONNX (built once)."""
        if face_source != "mtcnn":
            raise UserError(f"a served copy finds faces with MTCNN; --face-source {face_source} needs "
                            "--runtime torch")
        if self._pipeline is None:
            from pipelines.pipeline import ImagePipeline

            cfg = dataclasses.replace(self.pipeline_config, face_source="mtcnn")  # a run's own may be its annotations
            scene = OnnxSceneFeatures(self.directory.parent / self.manifest["scene_file"], cfg.scene_size,
                                      self.manifest["scene_outputs"])
            self._pipeline = ImagePipeline(cfg, scene=scene, detector_runtime="onnx")
        return self._pipeline

    def synthetic_samples(self):
        raise UserError("--face-source annotations reads a synthetic data set's recorded boxes: use --runtime torch")

    def _run(self, network: str, x: np.ndarray) -> np.ndarray:
        if network not in self._sessions:
            self._sessions[network] = _session(self.directory / self.manifest["networks"][network])
        return self._sessions[network].run(None, {"inputs": np.ascontiguousarray(x, np.float32)})[0]

    # -- answering --------------------------------------------------------------
    def explain_processed(self, processed, pipeline, top: int):
        from neural.image_input import face_pixels
        from pipelines.context import context_codes

        n = len(processed)
        size = pipeline.cfg.crop_size
        mask = np.zeros((n, MAX_FACES), bool)
        boxes = np.full((n, MAX_FACES, 4), np.nan)
        probs = np.full((n, MAX_FACES), np.nan)
        crops = np.full((n, MAX_FACES, 1, size, size), np.nan, np.float32)
        for b, p in enumerate(processed):
            k = p.n_faces
            mask[b, :k], boxes[b, :k], probs[b, :k] = True, p.boxes, p.probs
            crops[b, :k] = face_pixels(p.faces)
        tensors = {name: np.stack([p.features[name] for p in processed]) for name in self.manifest["scene_outputs"]}
        tensors.update({slot: crops[:, k] for k, slot in enumerate(FACE_SLOTS)})
        present = {slot: mask[:, k] for k, slot in enumerate(FACE_SLOTS)}
        sizes = np.array([p.image_size for p in processed], np.float64)
        codes = context_codes(boxes, mask, sizes, self.tables.face_size_threshold)
        # every source's network on the images that have the source, as the torch path does (its own answer)
        outputs, own = {}, {}
        for src, (net,) in self.manifest["tensor_networks"].items():
            rows = present.get(src, np.ones(n, bool))
            out = np.full((n, self.manifest["widths"][src]), np.nan)
            if rows.any():
                out[rows] = self._run(net, tensors[self.manifest["feeds"][src]][rows])
            outputs[(net, src)] = own[src] = out
        t = self.tables.answer(outputs, codes)
        answers = BatchAnswers(contexts=list(t.contexts), sources=tuple(t.sources), probs=t.probs,
                               posterior=t.posterior, own=own)
        sources_in = self.manifest["sources_in"]
        results = assemble_results(answers, sizes, mask, boxes, probs, emotions=EMOTIONS,
                                   sources_in=lambda c: sources_in[c], trust=self.trust,
                                   provenance=self.source_records(), top=top)
        for p, r in zip(processed, results):
            r.input = p.sample_id
        return results
