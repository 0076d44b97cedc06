"""Answer new images with a program and torch: what ``emologic query`` does, as a library.

    tp = open_program()                   # (experiments.query.open_program) runs/latest, else the untrained
                                          # program; from its served copy (no torch) where it has one
    tp = TrainedProgram.load("runs/latest", regime="joint")       # a trained run, with torch
    tp = TrainedProgram.prior("context_selection")                # the untrained program
    print(tp.describe())                  # what answers: run, regime and seed, or the prior
    for r in tp.answer(["photo.jpg", "more_photos/"], top=3, annotate="out/"):
        if isinstance(r, QueryError):
            print(r.input, r.error)
        else:
            print(r.prediction, r.context, r.explanation())

Two ways to get a program's parameters, one way to answer:

* :meth:`TrainedProgram.load`: a run's networks and learned rules for one seed
  and regime (:mod:`experiments.query.checkpoints` says which);
* :meth:`TrainedProgram.prior`: the untrained program, so that a fresh install
  answers photos. Faces from MTCNN, the FER2013 face predicate, the trust the
  program documents (its ``t(p)::`` values), and a scene head that knows
  nothing and says so: it outputs the uniform distribution
  (:func:`neural.scene.uniform_scene_head`), so the random scene backbone
  injects no noise and a photo with a face is answered by FER2013 in
  proportion to the face's trust.

Each image goes through the program's image pipeline (scene backbone and face
crops), with faces from MTCNN (default) or, for images of a run's synthetic
data set, from its recorded boxes (:mod:`experiments.query.answer`). A bad input never raises: it
becomes a :class:`QueryError` with a one-line reason, and the other inputs are answered. A
:class:`TrainedProgram` is also what a served copy is exported from (:mod:`experiments.query.bundle`).

What a :class:`QueryResult` holds per image: the faces (boxes, detection
probabilities, relative sizes; how many were found when more than three were),
the context the program used, P(emotion | image), each source's own emotion
distribution (the scene head's and the face net's outputs), the trust
P(source selected | context), the source posterior P(source | image, predicted
emotion) over the sources that exist in the image, and where each source's
networks came from (``provenance``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from experiments.query.base import AnsweringProgram
from experiments.query.checkpoints import locate_checkpoint, synthetic_root
from neural.common import UserError

FACE_SOURCES = ("mtcnn", "annotations")
DEFAULT_PROGRAM = "context_selection"


# --------------------------------------------------------------------------- #
# The program that answers
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Origin:
    """Where a program's parameters came from."""

    kind: str  # "run": a trained run's checkpoint | "prior": the untrained program
    why: str  # run: why this regime; prior: why no trained run answers
    run_dir: Path | None = None
    regime: str | None = None
    seed: int | None = None


def _face_predicate(face_weights: str):
    from neural.facetrain.backbones import load_face_predicate

    return load_face_predicate(face_weights)


@contextlib.contextmanager
def _quiet_random_scene_backbone():
    """Silence the scene backbone's no-weights warning (both its forms): the
    untrained program's description already says the scene has no knowledge."""
    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("SceneBackbone: NO PLACES365")

    logger = logging.getLogger("neural.scene")
    logger.addFilter(keep)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="SceneBackbone: NO PLACES365")
            yield
    finally:
        logger.removeFilter(keep)


class TrainedProgram(AnsweringProgram):
    """A program bound to its networks and trust, ready to answer queries: a
    trained run's (:meth:`load`) or the untrained program (:meth:`prior`)."""

    def __init__(self, program, pred, pipeline_config, origin: Origin, face_size_threshold: float | None = None,
                 rules: Path | None = None, config: dict | None = None, max_pixels: int | None = None):
        """``program``: a :class:`logic.program.Program`; ``pred``: its
        :class:`experiments.harness.image_stage0.Predicates`; ``rules``: a saved ``rules.json``,
        or None for the program's own ``t(p)`` values; ``config``: the run's
        harness config (``--face-source annotations`` finds its data set there)."""
        from experiments.harness.binding import Binding
        from logic.model import LogicModel
        from pipelines.context import DEFAULT_LARGE_FACE

        self.program, self.pred, self.origin, self.config = program, pred, origin, dict(config or {})
        self.binding = Binding(program, pred)
        # The compiled engine evaluates whole batches; both engines share one semantics (tested in logic/).
        # Answers need no gradients: KLay's circuit, no numba start-up (see CompiledEngine._answers).
        self.model = LogicModel(program, self.binding.networks, engine="compiled", evaluator="circuit",
                                face_size_threshold=DEFAULT_LARGE_FACE if face_size_threshold is None
                                else face_size_threshold)
        if rules is None:
            self.model.reset_rules("program")  # the trust the program documents
        else:
            self.model.load_rules(rules)
        self.model.eval()
        self.stored_pipeline_config = pipeline_config  # the run's (or the prior's), what a served copy keeps
        if max_pixels is not None:
            pipeline_config = dataclasses.replace(pipeline_config, max_pixels=max_pixels)
        self.pipeline_config = pipeline_config
        self._pipelines: dict = {}
        self._synthetic: dict[Path, object] | None = None
        self._trust: dict[str, dict[str, float]] = {}
        self._records: dict[str, dict] | None = None

    run_dir = property(lambda self: self.origin.run_dir)
    regime = property(lambda self: self.origin.regime)
    seed = property(lambda self: self.origin.seed)
    why = property(lambda self: self.origin.why)

    @classmethod
    def load(cls, run: str | os.PathLike | None = None, regime: str | None = None, seed: int | None = None,
             runs_root: str | os.PathLike = "runs", face_weights: str | None = None,
             max_pixels: int | None = None) -> "TrainedProgram":
        """Load ``run`` (a run directory, a run name under ``runs_root``, or ``None``/"latest").

        ``seed`` defaults to the run's first seed; ``regime`` to the logic regime with
        the lowest final validation NLL of that seed. ``late_fusion`` is refused.
        ``face_weights``: another face predicate (``emologic train-face`` output) in place of the run's.
        """
        return cls.from_checkpoint(locate_checkpoint(run, regime, seed, runs_root), face_weights, max_pixels)

    @classmethod
    def from_checkpoint(cls, ck, face_weights: str | None = None, max_pixels: int | None = None) -> "TrainedProgram":
        """The program of ``ck`` (:func:`experiments.query.checkpoints.locate_checkpoint`); options as :meth:`load`."""
        from experiments.harness.image_stage0 import load_predicates
        from logic.program import load_program
        from pipelines.config import PipelineConfig

        meta = ck.meta
        program = load_program(meta["program"], check_bindings=False)
        from experiments.harness.image_stage0 import feature_networks

        pred = load_predicates(ck.directory / meta.get("networks", "networks"), meta["face_source"],
                               feature_networks(program))  # the program says which networks it has on features
        why = ck.why
        if face_weights:
            pred.face_net = _face_predicate(face_weights)
            why += f"; face predicate from {face_weights}"
        return cls(program, pred, PipelineConfig.from_dict(meta["pipeline"]),
                   Origin("run", why, ck.run_dir, ck.regime, ck.seed), meta["face_size_threshold"],
                   rules=ck.directory / (meta.get("rules") or "rules.json"), config=ck.config, max_pixels=max_pixels)

    @classmethod
    def prior(cls, program: str = DEFAULT_PROGRAM, scene_weights: str | None = None, face_weights: str | None = None,
              why: str = "--prior", max_pixels: int | None = None) -> "TrainedProgram":
        """The untrained ``program`` (a name or a ``.pl`` path of an image
        program): its documented trust, FER2013 (or ``face_weights``) for faces,
        a uniform scene head over a random (or ``scene_weights``) backbone, MTCNN."""
        from experiments.harness.image_stage0 import Predicates
        from logic.program import load_program
        from neural.scene import uniform_scene_head
        from pipelines.pipeline import PipelineConfig

        prog = load_program(program, check_bindings=False)
        if prog.kind != "image":
            raise UserError(f"program {prog.name} is a {prog.kind} program; emologic query answers images")
        # the untrained program has the predicates stage 0 would bind, before any training
        prior_networks = list(Predicates(scene_head=None, face_net=None).bound())
        missing = [n for n in prog.networks if n not in prior_networks]
        if missing:
            raise UserError(f"program {prog.name} reads {', '.join(missing)}, which only a trained run has; "
                            f"query a run of it (--run RUN) or an untrained program of {', '.join(prior_networks)}")
        if face_weights:
            face = _face_predicate(face_weights)
        else:
            from neural.fer_weights import pretrained_face_net

            face = pretrained_face_net()
        pred = Predicates(scene_head=uniform_scene_head(), face_net=face.eval(), face_source=face_weights or "fer2013")
        # Real photos: the harness's scene resolution for photo data sets (224, Places365's).
        cfg = PipelineConfig(face_source="mtcnn", scene_weights=scene_weights, scene_size=224)
        return cls(prog, pred, cfg, Origin("prior", why), max_pixels=max_pixels)

    # -- what answers -----------------------------------------------------------
    def describe(self) -> str:
        """What answers the queries, in one line."""
        o = self.origin
        if o.kind == "run":
            return f"run {o.run_dir} | regime {o.regime} ({o.why}) | seed {o.seed} | program {self.program.name}"
        from neural.provenance import provenance_of

        scene = "no scene knowledge (uniform)"
        if self.pipeline_config.scene_weights:
            scene += f" over a backbone from {self.pipeline_config.scene_weights}"
        return (f"no trained run ({o.why}): program {self.program.name} with its documented prior trust; "
                f"face predicate {provenance_of(self.pred.face_net).summary()}; scene: {scene}")

    def source_records(self) -> dict[str, dict]:
        """Per source of the program: where its networks' knowledge came from
        (:func:`neural.provenance.source_provenance`; the scene backbone's from
        the pipeline config, the networks' from their checkpoints)."""
        if self._records is None:
            from pipelines.pipeline import feature_provenance

            self._records = self.binding.provenance(feature_provenance(self.pipeline_config))
        return self._records

    def model_record(self) -> dict:
        """What answers, for ``--json``: origin, program, trust and network provenance."""
        o = self.origin
        return {"kind": o.kind, "program": self.program.name, "why": o.why,
                "trust": "learned" if o.kind == "run" else "the program's documented t(p) values",
                "run": None if o.run_dir is None else str(o.run_dir), "regime": o.regime, "seed": o.seed,
                "sources": self.source_records()}

    # -- pieces -----------------------------------------------------------------
    def pipeline(self, face_source: str):
        """The image pipeline with faces from ``face_source`` (built once)."""
        from pipelines.pipeline import ImagePipeline

        if face_source not in FACE_SOURCES:
            raise UserError(f"unknown face source {face_source!r}; known: {', '.join(FACE_SOURCES)}")
        if face_source not in self._pipelines:
            cfg = dataclasses.replace(self.pipeline_config, face_source=face_source)
            quiet = self.origin.kind == "prior" and not cfg.scene_weights
            with _quiet_random_scene_backbone() if quiet else contextlib.nullcontext():
                self._pipelines[face_source] = ImagePipeline(cfg)
        return self._pipelines[face_source]

    def synthetic_samples(self) -> dict[Path, object]:
        """Resolved image path -> sample of the run's synthetic data set (for recorded boxes)."""
        if self._synthetic is None:
            if self.origin.kind != "run":
                raise UserError("--face-source annotations reads the recorded boxes of a trained run's synthetic "
                                "data set; the untrained program finds faces with MTCNN (--face-source mtcnn)")
            if self.config.get("dataset", "synthetic") != "synthetic":
                raise UserError(f"--face-source annotations needs a run on the synthetic data set; "
                                f"{self.run_dir} used {self.config.get('dataset')!r} (use --face-source mtcnn)")
            from pipelines.datasets.synthetic import load_synthetic_dir, read_synthetic_config

            root = synthetic_root(self.config)
            if read_synthetic_config(root) is None:
                raise UserError(f"the run's synthetic data set is not at {root} any more; "
                                "--face-source annotations needs its recorded boxes (use --face-source mtcnn)")
            self._synthetic = {Path(s.image_path).resolve(): s for s in load_synthetic_dir(root).samples}
        return self._synthetic

    def trust(self, context: str) -> dict[str, float]:
        """P(source selected | context): learned, or the program's prior."""
        if context not in self._trust:
            self._trust[context] = self.model.source_probabilities_for(context)
        return self._trust[context]

    def explain_processed(self, processed, pipeline, top: int):
        """Results for the pipeline's output (:func:`experiments.query.answer.answer_chunk`), with torch."""
        from cache.loader import collate
        from experiments.query.explain import explain

        return explain(self, collate(processed, pipeline.cfg), top)
