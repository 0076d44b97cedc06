"""Query a trained program on new images: what ``emologic query`` does, as a library.

    tp = TrainedProgram.load("runs/latest")            # default regime and seed, see below
    print(tp.describe())                                # which run, regime and seed
    for r in tp.answer(["photo.jpg", "more_photos/"], top=3, annotate="out/"):
        if isinstance(r, QueryError):
            print(r.input, r.error)
        else:
            print(r.prediction, r.context, r.explanation())

A run directory (``experiments/harness.py``) holds, per seed and regime,
``checkpoints/seed<S>/<regime>/{model.json, networks/, rules.json}``.
:meth:`TrainedProgram.load` rebuilds the networks and the learned program from
it; the default regime is the logic regime (not ``late_fusion``, which has no
program to explain) with the lowest final validation NLL of that seed.

Each image goes through the run's own image pipeline (same scene backbone and
crops), with faces from MTCNN (default) or, for images of the run's synthetic
data set, from its recorded boxes. A bad input never raises: it becomes a
:class:`QueryError` with a one-line reason, and the other inputs are answered.

What a :class:`QueryResult` holds per image: the faces (boxes, detection
probabilities, relative sizes), the context the program used, P(emotion | image),
each source's own top emotion (the scene head's and the face net's outputs), the
learned trust P(source selected | context), and the source posterior
P(source | image, predicted emotion) over the sources that exist in the image.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch

from experiments.runs import atomic_write_bytes, load_state, resolve_run
from neural.errors import UserError
from neural.vocabulary import EMOTIONS, FACE_SLOTS

#: File name endings ``emologic query DIR`` treats as images (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
FACE_SOURCES = ("mtcnn", "annotations")
#: Regimes whose checkpoints hold no program (nothing to explain).
NON_LOGIC_REGIMES = ("late_fusion",)
#: Annotated pictures are upscaled by an integer factor until their short side reaches this.
ANNOTATE_MIN_SIDE = 384


# --------------------------------------------------------------------------- #
# Results
# --------------------------------------------------------------------------- #
@dataclass
class Face:
    slot: str  # face1 (largest) .. face3
    box: tuple[float, float, float, float]  # (x1, y1, x2, y2) pixels of the image as displayed
    prob: float  # detection probability (1.0 for boxes from annotations)
    size: float  # sqrt(box area / image area), what the context's size bucket reads


@dataclass
class QueryResult:
    input: str  # the path as given (or as found in a given directory)
    image_size: tuple[int, int]  # (width, height)
    faces: list[Face]
    context: str  # the program's context key, e.g. n1_large
    probs: dict[str, float]  # P(emotion | image), every emotion in EMOTIONS order
    top: list[tuple[str, float]]  # the top-K emotions, most probable first
    source_probs: dict[str, dict[str, float]]  # existing source -> its own emotion distribution
    trust: dict[str, float]  # learned P(source selected | context)
    posterior: dict[str, float]  # P(source | image, prediction) over the existing sources, largest first
    annotated: str | None = None  # path of the annotated PNG (``annotate=``)
    #: programs with a V/A source: per dimension the MC-dropout estimate ``mean``, its ``std``
    #: and the Gaussian mass per bin the logic reads, ``{"valence": {"mean", "std", "bins"}, "arousal": ...}``
    va: dict | None = None

    @property
    def prediction(self) -> str:
        return self.top[0][0]

    @property
    def sources(self) -> dict[str, tuple[str, float]]:
        """Each existing source's own top emotion and its probability."""
        return {s: max(d.items(), key=lambda kv: kv[1]) for s, d in self.source_probs.items()}

    @property
    def trusted(self) -> str:
        """The source most probably behind the prediction."""
        return next(iter(self.posterior))

    def explanation(self) -> str:
        """The posterior in words, e.g. ``trusted face1 (81%), scene (19%)``."""
        return "trusted " + ", ".join(f"{s} ({p:.0%})" for s, p in self.posterior.items())

    def to_dict(self) -> dict:
        return {
            "input": self.input,
            "image_size": list(self.image_size),
            "faces": [dataclasses.asdict(f) | {"box": list(f.box)} for f in self.faces],
            "context": self.context,
            "prediction": self.prediction,
            "top": [{"emotion": e, "p": p} for e, p in self.top],
            "probs": self.probs,
            "sources": {s: {"emotion": e, "p": p} for s, (e, p) in self.sources.items()},
            "source_probs": self.source_probs,
            "trust": self.trust,
            "posterior": self.posterior,
            "trusted": self.trusted,
            "annotated": self.annotated,
            **({"va": self.va} if self.va is not None else {}),
        }


@dataclass
class QueryError:
    input: str
    error: str  # one line, without the input

    def to_dict(self) -> dict:
        return {"input": self.input, "error": self.error}

    def __str__(self) -> str:
        return f"{self.input}: {self.error}"


# --------------------------------------------------------------------------- #
# Inputs
# --------------------------------------------------------------------------- #
def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[str | QueryError]:
    """Files as given, directories replaced by their image files (sorted, not
    recursive); a missing path or a directory without images becomes a
    :class:`QueryError`. Whether a file really is an image is found out when it is read."""
    out: list[str | QueryError] = []
    for item in inputs:
        text = os.fspath(item)
        p = Path(text)
        if p.is_dir():
            images = sorted(c for c in p.iterdir() if c.is_file() and is_image_name(c))
            if images:
                out += [str(c) for c in images]
            else:
                kinds = ", ".join(IMAGE_EXTENSIONS)
                sub = " (subdirectories are not searched)" if any(c.is_dir() for c in p.iterdir()) else ""
                out.append(QueryError(text, f"directory has no image files ({kinds}){sub}"))
        elif p.exists():
            out.append(text)
        else:
            out.append(QueryError(text, "no such file or directory"))
    return out


# --------------------------------------------------------------------------- #
# Run layout
# --------------------------------------------------------------------------- #
def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} is missing; is this a finished emologic run?") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} cannot be read ({exc})") from None


def _seeds_with_checkpoints(run_dir: Path) -> list[int]:
    found = []
    for d in (run_dir / "checkpoints").glob("seed*"):
        if d.is_dir() and d.name[4:].isdigit():
            found.append(int(d.name[4:]))
    return sorted(found)


def _logic_regimes(seed_dir: Path) -> list[str]:
    """Regimes of a seed with a complete program checkpoint."""
    if not seed_dir.is_dir():
        return []
    return sorted(d.name for d in seed_dir.iterdir() if d.name not in NON_LOGIC_REGIMES
                  and (d / "model.json").is_file() and (d / "rules.json").is_file())


def final_val_nll(run_dir: Path, seed: int) -> dict[str, float]:
    """Regime -> validation NLL after the last epoch, from ``results.json``
    (or, for an unfinished run, from ``state.json``)."""
    per_regime: dict[str, dict] = {}
    results = run_dir / "results.json"
    if results.is_file():
        for regime, r in _read_json(results).get("regimes", {}).items():
            if str(seed) in r.get("per_seed", {}):
                per_regime[regime] = r["per_seed"][str(seed)]
    else:
        for (regime, s), r in load_state(run_dir).units.items():
            if s == seed:
                per_regime[regime] = r
    out = {}
    for regime, r in per_regime.items():
        history = r.get("history") or []
        if history and history[-1].get("val_nll") is not None and math.isfinite(history[-1]["val_nll"]):
            out[regime] = float(history[-1]["val_nll"])
    return out


def choose_regime(run_dir: Path, seed: int, regime: str | None) -> tuple[str, str]:
    """The regime to load and why (for :meth:`TrainedProgram.describe`)."""
    if regime in NON_LOGIC_REGIMES:
        raise UserError(
            f"regime {regime!r} is a purely neural baseline with no program to query or explain; "
            "choose a logic regime (e.g. frozen or joint)"
        )
    seed_dir = run_dir / "checkpoints" / f"seed{seed}"
    available = _logic_regimes(seed_dir)
    if not available:
        raise UserError(f"{run_dir}: no trained program for seed {seed} (is the run finished?)")
    if regime is not None:
        if regime not in available:
            raise UserError(f"{run_dir}: no checkpoint of regime {regime!r} for seed {seed}; "
                            f"available: {', '.join(available)}")
        return regime, "as requested"
    nll = {r: v for r, v in final_val_nll(run_dir, seed).items() if r in available}
    if not nll:
        return available[0], "no validation results recorded; first available"
    best = min(nll, key=nll.get)
    listed = ", ".join(f"{r} {v:.3f}" for r, v in sorted(nll.items()))
    return best, f"lowest final val NLL: {listed}"


def _synthetic_root(cfg: dict) -> Path:
    """Where the run's synthetic data set lives (its data_root, else the harness's default)."""
    if cfg.get("data_root"):
        return Path(cfg["data_root"])
    from experiments.config import HarnessConfig
    from experiments.data import dataset_options
    from pipelines.datasets.synthetic import SyntheticConfig, default_root

    known = {f.name for f in dataclasses.fields(HarnessConfig)}
    options = dataset_options(HarnessConfig(**{k: v for k, v in cfg.items() if k in known}))
    return default_root(SyntheticConfig.from_dict(options))


# --------------------------------------------------------------------------- #
# The trained program
# --------------------------------------------------------------------------- #
class TrainedProgram:
    """A run's networks and learned program for one regime and seed, ready to answer queries."""

    def __init__(self, run_dir: Path, regime: str, seed: int, why: str, config: dict, meta: dict,
                 face_weights: str | None = None):
        from experiments.regimes import Binding
        from experiments.stage0 import load_predicates
        from logic.model import LogicModel
        from logic.program import load_program
        from pipelines.pipeline import PipelineConfig

        self.run_dir, self.regime, self.seed, self.why = run_dir, regime, seed, why
        self.config, self.meta = config, meta
        directory = run_dir / "checkpoints" / f"seed{seed}" / regime
        self.program = load_program(meta["program"], check_bindings=False)
        pred = load_predicates(directory / meta.get("networks", "networks"), meta["face_source"])
        if face_weights:  # another face predicate (emologic train-face) in place of the run's
            from neural.facetrain.backbones import load_face_predicate

            pred.face_net = load_face_predicate(face_weights)
            self.why += f"; face predicate from {face_weights}"
        self.binding = Binding(self.program, pred)
        # The compiled engine evaluates whole batches; both engines share one semantics (tested in logic/).
        self.model = LogicModel(self.program, self.binding.networks, engine="compiled",
                                face_size_threshold=meta["face_size_threshold"])
        self.model.load_rules(directory / (meta.get("rules") or "rules.json"))
        self.model.eval()
        self.pipeline_config = PipelineConfig.from_dict(meta["pipeline"])
        self._pipelines: dict = {}
        self._synthetic: dict[Path, object] | None = None
        self._trust: dict[str, dict[str, float]] = {}

    @classmethod
    def load(cls, run: str | os.PathLike | None = None, regime: str | None = None, seed: int | None = None,
             runs_root: str | os.PathLike = "runs", face_weights: str | None = None) -> "TrainedProgram":
        """Load ``run`` (a run directory, a run name under ``runs_root``, or ``None``/"latest").

        ``seed`` defaults to the run's first seed; ``regime`` to the logic regime with
        the lowest final validation NLL of that seed. ``late_fusion`` is refused.
        """
        run_dir = resolve_run(run, runs_root)
        config = _read_json(run_dir / "config.json")
        cfg = config.get("config", config)
        from experiments.config import modality_of

        if modality_of(cfg.get("dataset", "synthetic")) == "clip":
            raise UserError(f"{run_dir} is a video-clip run ({cfg.get('dataset')}); emologic query answers image "
                            "runs (see its learned rules with: emologic rules " + str(run_dir) + ")")
        seeds = _seeds_with_checkpoints(run_dir)
        if seed is None:
            listed = [s for s in cfg.get("seeds", []) if s in seeds]
            if not (listed or seeds):
                raise UserError(f"{run_dir}: no checkpoints yet (is the run finished?)")
            seed = (listed or seeds)[0]
        elif seed not in seeds:
            raise UserError(f"{run_dir}: no checkpoints for seed {seed}; seeds: "
                            f"{', '.join(map(str, seeds)) or 'none'}")
        regime, why = choose_regime(run_dir, seed, regime)
        meta = _read_json(run_dir / "checkpoints" / f"seed{seed}" / regime / "model.json")
        return cls(run_dir, regime, seed, why, cfg, meta, face_weights=face_weights)

    def describe(self) -> str:
        """Which run, regime and seed answer the queries, in one line."""
        return (f"run {self.run_dir} | regime {self.regime} ({self.why}) | seed {self.seed} | "
                f"program {self.program.name}")

    # -- pieces ---------------------------------------------------------------
    def pipeline(self, face_source: str):
        """The run's image pipeline with faces from ``face_source`` (built once)."""
        from pipelines.pipeline import ImagePipeline

        if face_source not in FACE_SOURCES:
            raise UserError(f"unknown face source {face_source!r}; known: {', '.join(FACE_SOURCES)}")
        if face_source not in self._pipelines:
            cfg = dataclasses.replace(self.pipeline_config, face_source=face_source)
            self._pipelines[face_source] = ImagePipeline(cfg)
        return self._pipelines[face_source]

    def synthetic_samples(self) -> dict[Path, object]:
        """Resolved image path -> sample of the run's synthetic data set (for recorded boxes)."""
        if self._synthetic is None:
            if self.config.get("dataset", "synthetic") != "synthetic":
                raise UserError(f"--face-source annotations needs a run on the synthetic data set; "
                                f"{self.run_dir} used {self.config.get('dataset')!r} (use --face-source mtcnn)")
            from pipelines.datasets.synthetic import load_synthetic_dir, read_synthetic_config

            root = _synthetic_root(self.config)
            if read_synthetic_config(root) is None:
                raise UserError(f"the run's synthetic data set is not at {root} any more; "
                                "--face-source annotations needs its recorded boxes (use --face-source mtcnn)")
            self._synthetic = {Path(s.image_path).resolve(): s for s in load_synthetic_dir(root).samples}
        return self._synthetic

    def trust(self, context: str) -> dict[str, float]:
        """Learned P(source selected | context)."""
        if context not in self._trust:
            self._trust[context] = self.model.source_probabilities_for(context)
        return self._trust[context]

    # -- answering --------------------------------------------------------------
    def answer(self, inputs: Sequence[str | os.PathLike], face_source: str = "mtcnn", top: int = 3,
               annotate: str | os.PathLike | None = None) -> list[QueryResult | QueryError]:
        """One result per image (directories expanded), in input order. See :meth:`iter_answers`."""
        return list(self.iter_answers(inputs, face_source, top, annotate))

    def iter_answers(self, inputs: Sequence[str | os.PathLike], face_source: str = "mtcnn", top: int = 3,
                     annotate: str | os.PathLike | None = None, chunk: int = 32) -> Iterator[QueryResult | QueryError]:
        """Like :meth:`answer`, yielding results chunk by chunk (large directories).

        ``top``: how many emotions ``QueryResult.top`` lists. ``annotate``: a
        directory for one annotated PNG per image. Configuration problems
        (unknown face source, annotations on a non-synthetic run) raise
        :class:`UserError` before any image is read.
        """
        if top < 1:
            raise UserError(f"--top must be at least 1, got {top}")
        pipeline = self.pipeline(face_source)
        known = self.synthetic_samples() if face_source == "annotations" else None
        out_dir = Path(annotate) if annotate is not None else None
        if out_dir is not None:
            if out_dir.exists() and not out_dir.is_dir():
                raise UserError(f"--annotate {out_dir}: exists and is not a directory")
            out_dir.mkdir(parents=True, exist_ok=True)
        taken: set[str] = set()
        items = expand_inputs(inputs)
        for start in range(0, len(items), chunk):
            yield from self._answer_chunk(items[start:start + chunk], pipeline, known, min(top, len(EMOTIONS)),
                                          out_dir, taken)

    def _answer_chunk(self, items, pipeline, known, top, out_dir, taken) -> list[QueryResult | QueryError]:
        from cache.loader import collate
        from pipelines.datasets.base import Sample

        answers: list[QueryResult | QueryError | None] = [None] * len(items)
        samples = []
        for i, item in enumerate(items):
            if isinstance(item, QueryError):
                answers[i] = item
                continue
            annotations = {}
            if known is not None:
                sample = known.get(Path(item).resolve())
                if sample is None:
                    answers[i] = QueryError(item, "not an image of the run's synthetic data set, so it has no "
                                                  "recorded face boxes (use --face-source mtcnn)")
                    continue
                annotations = {"boxes": sample.annotations.get("boxes", [])}
            samples.append(Sample(str(i), Path(item), None, None, annotations))
        processed, skipped = pipeline.process(samples)
        for skip in skipped:
            answers[int(skip.sample_id)] = QueryError(items[int(skip.sample_id)], skip.reason)
        if processed:
            batch = collate(processed, pipeline.cfg)
            for pos, result in zip((int(p.sample_id) for p in processed), self._explain(batch, top)):
                answers[pos] = dataclasses.replace(result, input=items[pos])
                if out_dir is not None:
                    answers[pos].annotated = str(annotate_image(answers[pos], out_dir, taken))
        return answers

    @torch.no_grad()
    def _explain(self, batch, top: int) -> list[QueryResult]:
        with torch.random.fork_rng():
            torch.manual_seed(0)  # the V/A source's MC dropout: the same image gets the same answer
            prepared = self.binding.prepare(batch)
        va = self._va_estimates(prepared)
        out = self.model(prepared, explain=True)
        probs = out.probs.double()  # [B, E]
        own = self._source_outputs(prepared, out)  # source -> [B, E], NaN where absent
        results = []
        for b in range(len(batch)):
            ctx = out.contexts[b]
            existing = self.program.sources_in(ctx)
            pred = int(probs[b].argmax())
            post = {s: float(out.posterior[b, out.sources.index(s), pred]) for s in existing}
            ranked = sorted(range(len(EMOTIONS)), key=lambda e: -float(probs[b, e]))[:top]
            faces = []
            w, h = (int(v) for v in batch.image_size[b])
            for k, slot in enumerate(FACE_SLOTS):
                if batch.face_mask[b, k]:
                    box = tuple(float(v) for v in batch.face_boxes[b, k])
                    size = math.sqrt(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]) / (w * h))
                    faces.append(Face(slot, box, float(batch.face_probs[b, k]), size))
            source_probs = {s: dict(zip(EMOTIONS, own[s][b].tolist())) for s in existing
                            if s in own and not torch.isnan(own[s][b]).any()}
            results.append(QueryResult(
                input=batch.sample_ids[b],
                image_size=(w, h),
                faces=faces,
                context=ctx,
                probs={e: float(probs[b, i]) for i, e in enumerate(EMOTIONS)},
                top=[(EMOTIONS[e], float(probs[b, e])) for e in ranked],
                source_probs=source_probs,
                trust=dict(self.trust(ctx)),
                posterior=dict(sorted(post.items(), key=lambda kv: -kv[1])),
                va=va[b] if va is not None else None,
            ))
        return results

    def _va_estimates(self, prepared) -> list[dict] | None:
        """Per image, the V/A source's estimate with its uncertainty and bin masses (None without one)."""
        if not self.binding.uses_va:
            return None
        x = prepared.tensors["va"]  # [B, 4] = (mean_v, mean_a, var_v, var_a)
        out = []
        for b in range(len(prepared)):
            entry = {}
            for k, (dim, net) in enumerate((("valence", "va_valence"), ("arousal", "va_arousal"))):
                mass = self.binding.networks[net](x[b:b + 1])[0].tolist()
                entry[dim] = {"mean": float(x[b, k]), "std": float(x[b, 2 + k].clamp_min(0).sqrt()),
                              "bins": dict(zip(self.program.domain_of(net), mass))}
            out.append(entry)
        return out

    def _source_outputs(self, prepared, out) -> dict[str, torch.Tensor]:
        """Each source's own emotion distribution, [B, E] (NaN where the source is absent).

        The scene and the faces: their networks' outputs. Any other source of the
        program (e.g. ``va``, whose emotion comes out of rules): recovered from the
        logic output, P_s(e) ∝ P(s selected, s says e) = posterior[s, e] * P(e).
        """
        nets = self.binding.networks
        B = len(prepared)
        own: dict[str, torch.Tensor] = {}
        if "scene2emotion" in nets:
            own["scene"] = nets["scene2emotion"](prepared.tensors["scene"]).double()
        if "face_emotion" in nets:
            for slot in FACE_SLOTS:
                present = prepared.present(slot)
                t = torch.full((B, len(EMOTIONS)), float("nan"), dtype=torch.float64)
                if present.any():
                    t[present] = nets["face_emotion"](prepared.tensors[slot][present]).double()
                own[slot] = t
        for i, s in enumerate(out.sources):
            if s not in own:
                joint = out.posterior[:, i, :].double() * out.probs.double()  # [B, E]
                z = joint.sum(1, keepdim=True)
                own[s] = torch.where(z > 0, joint / z.clamp_min(1e-300), torch.full_like(joint, float("nan")))
        return own


# --------------------------------------------------------------------------- #
# Annotated pictures
# --------------------------------------------------------------------------- #
_SLOT_COLOURS = {"face1": (255, 140, 0), "face2": (0, 200, 255), "face3": (255, 60, 200)}


def annotation_scale(width: int, height: int) -> int:
    """Integer upscaling that makes small images legible once text is drawn on them."""
    return max(1, math.ceil(ANNOTATE_MIN_SIDE / max(1, min(width, height))))


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: scalable default font
    except TypeError:
        return ImageFont.load_default()


def _label(draw, xy, text: str, font, fill, anchor_bottom: bool = False) -> None:
    """``text`` on a dark box at ``xy`` (its top-left, or bottom-left with ``anchor_bottom``)."""
    x, y = xy
    l, t, r, b = draw.textbbox((0, 0), text, font=font)
    pad = max(2, (b - t) // 5)
    w, h = r - l + 2 * pad, b - t + 2 * pad
    if anchor_bottom:
        y -= h
    draw.rectangle([x, y, x + w, y + h], fill=(0, 0, 0))
    draw.text((x + pad - l, y + pad - t), text, font=font, fill=fill)


def annotate_image(result: QueryResult, out_dir: Path, taken: set[str] | None = None) -> Path:
    """Write ``out_dir/<image stem>.png``: the image with its face boxes, each
    source's own top emotion and the final answer drawn on it. Returns the path."""
    from PIL import ImageDraw

    from pipelines.images import load_image

    image = load_image(result.input)  # RGB, EXIF-oriented like the boxes
    scale = annotation_scale(*image.size)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), resample=3)  # bicubic
    draw = ImageDraw.Draw(image)
    font = _font(max(11, min(image.size) // 28))
    line = max(2, min(image.size) // 160)
    for face in result.faces:
        x1, y1, x2, y2 = (v * scale for v in face.box)
        colour = _SLOT_COLOURS.get(face.slot, (255, 255, 0))
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=line)
        emotion, p = result.sources.get(face.slot, ("?", float("nan")))
        _label(draw, (x1, max(0.0, y1)), f"{face.slot} {emotion} {p:.2f}", font, colour, anchor_bottom=y1 > 20)
    if "scene" in result.sources:
        emotion, p = result.sources["scene"]
        _label(draw, (0, 0), f"scene {emotion} {p:.2f}", font, (255, 255, 255))
    answer, p = result.top[0]
    trusted = result.trusted
    _label(draw, (0, image.height), f"{answer} {p:.2f} | trusted {trusted} {result.posterior[trusted]:.0%}",
           font, (120, 255, 120), anchor_bottom=True)

    stem = Path(result.input).stem or "image"
    name, n = f"{stem}.png", 2
    taken = taken if taken is not None else set()
    while name in taken:
        name, n = f"{stem}-{n}.png", n + 1
    taken.add(name)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return atomic_write_bytes(out_dir / name, buf.getvalue())
