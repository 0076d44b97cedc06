"""The harness configuration, split per track: one dataclass per track, one flag per field.

:class:`SharedConfig` holds what every track reads, :class:`ImageConfig` what only the
image track (scene, faces, V/A) reads, :class:`ClipConfig` what only the clip track
(the multimodal fusion net) reads. :class:`HarnessConfig` is their union: the one
object a run resolves, records in ``config.json`` (a run directory refuses to resume
under a different one) and hands to its track.

Every field is documented once, in its ``metadata``:

    help       the flag's help text (argparse and the docs read it there)
    track      "image" or "clip": the only track the field applies to (absent: shared)
    defaults   a default that depends on the track or data set, ``{"image": 5, "clip": 40}``
               or ``{"synthetic_clips": 8, "meld": 16}``; the field itself defaults to ``None``

Every field is a flag of ``experiments/joint_vs_frozen.py`` (``rule_lr`` ->
``--rule-lr``). A flag of the other track is refused with one line that names it.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from experiments.regimes import regime_names
from neural.common import UserError

#: Which track runs each data set.
TRACK_OF = {"synthetic": "image", "findingemo": "image", "csv": "image", "synthetic_clips": "clip", "meld": "clip"}
DATASETS = tuple(TRACK_OF)
RULE_INITS = ("uniform", "program")
#: Where the V/A regressor's features come from (``pipelines.pipeline.VA_BACKBONES``).
VA_BACKBONES = ("scene", "clip")
#: Where the face predicate starts (``--face-init``): the real FER2013 weights, or a random init.
FACE_INITS = ("fer2013", "scratch")
#: Stage-0 epochs of a face net trained from a random init (fine-tuning FER2013 needs far fewer:
#: on the default benchmark its test macro recall is 0.87 after 1 epoch, 0.90 after 3, 0.91 after 5).
SCRATCH_FACE_EPOCHS = 10
#: Extra spellings of a flag.
_ALIASES = {"data_root": ("--root",)}


def track_of(dataset: str) -> str:
    """``image`` or ``clip``: which track of the harness runs ``dataset``."""
    return TRACK_OF.get(dataset, "image")


def opt(default=None, help: str = "", track: str | None = None, defaults: dict | None = None):  # noqa: A002
    """A config field: its default, help text, track and per-track (or per-data-set) defaults."""
    meta = {"help": help, "track": track, "defaults": defaults or {}}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ClipConfig:
    """What only the clip track reads (the fusion net's pipeline and encoders)."""

    n_clips: int = opt(1000, "synthetic_clips: number of clips", "clip")
    clip_frames: int | None = opt(None, "video frames per clip", "clip", {"synthetic_clips": 8, "meld": 16})
    clip_size: int | None = opt(None, "frame side in pixels", "clip", {"synthetic_clips": 64, "meld": 112})
    clip_seconds: float | None = opt(None, "seconds decoded per clip", "clip", {"synthetic_clips": 2.0, "meld": 10.0})
    text_model: str | None = opt(None, "BERT-family text model, hub name or local directory (default: the packaged "
                                       "MiniLM)", "clip")
    video_weights: str | None = opt(None, "r3d_18 state dict file (Kinetics-400) for the frozen video trunk; none: "
                                          "a seeded random trunk", "clip")


@dataclass
class ImageConfig:
    """What only the image track reads (scene, faces, V/A and the networks trained through the logic)."""

    n_images: int = opt(2000, "synthetic: number of images", "image")
    image_size: int = opt(128, "synthetic: image side in pixels", "image")
    images: str | None = opt(None, "findingemo: directory with the downloaded images", "image")
    annotations: str | None = opt(None, "findingemo: annotation CSV (default: the findingemo-light package's)",
                                  "image")
    csv: str | None = opt(None, "csv: table image_path,label[,split]", "image")
    # left None in the recorded config (runs made before this split record it so and stay resumable);
    # the pipeline picks it by data set (:func:`default_face_source`)
    face_source: str | None = opt(None, "face boxes from 'annotations' or 'mtcnn' (default: annotations for "
                                        "synthetic, whose generator records them; mtcnn for other data sets)",
                                  "image")
    scene_weights: str | None = opt(None, "Places365 ResNet-18 checkpoint (file or URL); none: a seeded random "
                                          "init", "image")
    va_backbone: str = opt("scene", "features of the valence/arousal regressor (programs with a V/A source, e.g. "
                                    "va_selection): scene (the cached scene features) or clip (CLIP image "
                                    "embeddings, cached)", "image")
    clip_model: str = opt("openai/clip-vit-base-patch32", "--va-backbone clip: CLIP model, hub name or local "
                                                          "directory (from_pretrained)", "image")
    face_size_threshold: float = opt(0.3, "relative side of a 'large' face", "image")
    net_lr: float = opt(1e-3, "learning rate of the networks trained through the logic (joint, uniform_rules)",
                        "image")
    baseline_lr: float = opt(1e-2, "learning rate of the late-fusion baseline", "image")
    unfreeze_layer4: bool = opt(False, "joint: also train the scene backbone's last block", "image")
    layer4_lr: float = opt(1e-5, "learning rate of layer4 when unfrozen", "image")
    head_epochs: int = opt(100, "stage-0 epochs of the scene head and VA regressor (cached features, cheap)",
                           "image")
    stage0_lr: float = opt(2e-3, "stage-0 learning rate (scene head, VA regressor, a face net trained from "
                                 "scratch)", "image")
    face_lr: float = opt(3e-4, "stage-0 learning rate when fine-tuning the pretrained (FER2013) face predicate",
                         "image")
    face_weights: str | None = opt(None, "trained face predicate directory (emologic train-face) instead of "
                                         "stage 0", "image")
    face_init: str = opt("fer2013", "where the face predicate starts: fer2013 (mini-XCEPTION's real FER2013 "
                                    "weights; stage 0 fine-tunes them where faces are labelled) or scratch (a "
                                    "random init trained in stage 0 on the data set's labelled faces, "
                                    f"{SCRATCH_FACE_EPOCHS} stage-0 epochs unless told); --face-weights replaces "
                                    "both", "image")


@dataclass
class SharedConfig:
    """What every track reads."""

    # -- data ---------------------------------------------------------------
    dataset: str = opt("synthetic", "synthetic (built-in benchmark), findingemo, csv; clips: synthetic_clips "
                                    "(built-in) or meld")
    data_root: str | None = opt(None, "synthetic / synthetic_clips: directory of the generated set (default "
                                      "data/...-<digest>); meld: the MELD.Raw directory")
    data_seed: int = opt(0, "synthetic generator seed")
    mapping: str | None = opt(None, "findingemo/csv/meld: label mapping file (label,emotion)")
    cache: str | None = opt(None, "tensor cache directory (default .emologic/cache/<dataset>-<digest>)")
    rebuild_cache: bool = opt(False, "rebuild the parts of the cache that are damaged or were built with another "
                                     "pipeline config (default: refuse such a cache)")
    # -- program ------------------------------------------------------------
    program: str | None = opt(None, "program name in logic/programs or a .pl path", None,
                              {"image": "context_selection", "clip": "clip_sentiment"})
    rule_init: str | None = opt(None, "where the rule parameters start: uniform or program (the file's values, "
                                      "e.g. va_selection's circumplex prior)", None,
                                {"image": "uniform", "clip": "program"})
    engine: str = opt("compiled", "compiled (KLay, batched) or deepproblog (reference)")
    # -- regimes ------------------------------------------------------------
    regimes: list[str] | None = opt(None, "regimes to run (default: every regime of the data set's track; images: "
                                          f"{' '.join(regime_names('image'))}; clips: {' '.join(regime_names('clip'))})")
    seeds: list[int] = opt([0, 1, 2], "seeds (each: its own stage 0 and regime runs)")
    epochs: int | None = opt(None, "training epochs per regime", None, {"image": 5, "clip": 40})
    batch_size: int = opt(64, "batch size")
    rule_lr: float = opt(0.05, "learning rate of the rule parameters (compiled: Adam on logits; deepproblog: "
                               "SGD(param_lr))")
    # clips: training runs on cached frozen-encoder features, so an epoch costs milliseconds
    # (more epochs), and MELD is about half neutral (the recipe's class weighting)
    class_weights: bool | None = opt(None, "weight the loss by inverse class frequency", None,
                                     {"image": False, "clip": True})
    # -- stage 0 -------------------------------------------------------------
    stage0_per_seed: bool = opt(True, "train stage 0 for every seed, so ± over seeds includes stage 0's own "
                                      "variation; --no-stage0-per-seed trains it once (first seed) and shares it, "
                                      "which hides that part")
    stage0_epochs: int | None = opt(None, "stage-0 epochs: the face net's (images; fine-tuning FER2013) or the "
                                          "fusion net's (clips)", None, {"image": 2, "clip": 30})
    # -- where and output -----------------------------------------------------
    device: str | None = opt(None, "where the networks run (cache build, stage 0, regimes, clip encoders): cpu, "
                                   "cuda, cuda:N, mps (default: cuda when available, else cpu); the compiled "
                                   "engine's circuit walk stays on the CPU")
    runs_dir: str = opt("runs", "where run directories are created")
    name: str | None = opt(None, "suffix of the run directory name")
    progress: bool = opt(True, "progress bars")


@dataclass
class HarnessConfig(ClipConfig, ImageConfig, SharedConfig):
    """Every track's fields: what a run resolves, records and validates."""

    @property
    def track(self) -> str:
        """``image`` or ``clip``: which track of the harness runs this data set."""
        return track_of(self.dataset)

    modality = track  # the name results.json and older callers use

    def resolved(self) -> HarnessConfig:
        """A copy with every field left ``None`` set to its data set's or track's default
        (the fields' ``defaults`` metadata); what a run records."""
        values = {}
        for f in dataclasses.fields(self):
            per = f.metadata.get("defaults") or {}
            if getattr(self, f.name) is None and f.metadata.get("track") in (None, self.track):
                for key in (self.dataset, self.track):
                    if key in per:
                        values[f.name] = per[key]
                        break
        if self.track == "image" and self.face_init == "scratch" and self.stage0_epochs is None:
            values["stage0_epochs"] = SCRATCH_FACE_EPOCHS
        if self.regimes is None:
            values["regimes"] = list(regime_names(self.track))
        if self.device in (None, "auto"):
            from neural.cluster import resolve_device

            values["device"] = resolve_device(None)
        return dataclasses.replace(self, **values)

    def validate(self) -> None:
        """Check the config as it will run (:meth:`resolved`); one line naming every problem."""
        if self.dataset not in DATASETS:
            raise UserError(f"--dataset must be one of {', '.join(DATASETS)}")
        foreign = not_applicable(self)
        if foreign:
            flags = ", ".join(foreign)
            raise UserError(f"{flags} {'does' if len(foreign) == 1 else 'do'} not apply to {self.track} data sets "
                            f"({self.dataset})")
        from experiments.harness.track import track_class

        cfg = self.resolved()
        problems = _shared_problems(cfg) + track_class(cfg.track).config_problems(cfg)
        if cfg.device != "cpu":
            from neural.cluster import resolve_device

            resolve_device(cfg.device)  # one line when that device is not here
            from logic.engines import ENGINES, batched_engines

            engine = ENGINES.get(cfg.engine)
            if engine is not None and engine.cpu_only:
                problems.append(f"--engine {cfg.engine} runs on the CPU only ({engine.placement}); "
                                f"use --device cpu or --engine {batched_engines()}")
        if problems:
            raise UserError("; ".join(problems))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def default_face_source(dataset: str) -> str:
    """Where face boxes come from unless ``--face-source`` says: the synthetic set records them."""
    return "annotations" if dataset == "synthetic" else "mtcnn"


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def not_applicable(cfg: HarnessConfig) -> list[str]:
    """The flags set (away from their default) that belong to another track than ``cfg``'s."""
    out = []
    for f in dataclasses.fields(cfg):
        track = f.metadata.get("track")
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if track not in (None, cfg.track) and getattr(cfg, f.name) != default:
            out.append(flag(f.name))
    return out


def _shared_problems(cfg: HarnessConfig) -> list[str]:
    from logic.engines import ENGINES

    problems = []
    known = regime_names(cfg.track)
    unknown = [r for r in cfg.regimes if r not in known]
    if unknown:
        problems.append(f"unknown regime(s) {', '.join(unknown)} for {cfg.track} data sets; known: {', '.join(known)}")
    if cfg.engine not in ENGINES:
        problems.append(f"--engine must be one of {', '.join(ENGINES)}")
    if cfg.rule_init not in RULE_INITS:
        problems.append(f"--rule-init must be one of {', '.join(RULE_INITS)}")
    if not cfg.seeds:
        problems.append("--seeds needs at least one seed")
    duplicates = sorted({s for s in cfg.seeds if cfg.seeds.count(s) > 1})
    if duplicates:
        problems.append(f"--seeds lists {', '.join(map(str, duplicates))} more than once (a seed runs once)")
    rates = [f.name for f in dataclasses.fields(cfg) if f.name.endswith("_lr")]
    negative = [f"{flag(k)} {getattr(cfg, k)}" for k in rates if not getattr(cfg, k) >= 0]
    if negative:  # a negative rate ascends the loss (and NaN is no rate); 0 freezes what it trains
        problems.append(f"learning rates must be >= 0, got {', '.join(negative)}")
    if cfg.epochs < 1 or cfg.stage0_epochs < 0 or cfg.head_epochs < 0 or cfg.batch_size < 1:
        problems.append("--epochs and --batch-size must be positive, --stage0-epochs and --head-epochs >= 0")
    return problems


def check_path(value: str | None, name: str) -> list[str]:
    """A problem when the file or directory given to ``name`` does not exist."""
    if value and not Path(value).expanduser().exists():
        return [f"{flag(name)} {value}: no such file or directory"]
    return []


def _help(f: dataclasses.Field) -> str:
    text = f.metadata.get("help", "")
    track = f.metadata.get("track")
    if track:
        text = f"{track}s: {text}"
    per = f.metadata.get("defaults") or {}
    if per:
        text += " (default: " + ", ".join(f"{k} {v}" for k, v in per.items()) + ")"
    elif f.default is not None and f.default is not dataclasses.MISSING:
        text += f" (default: {f.default})"
    elif f.default_factory is not dataclasses.MISSING:
        text += f" (default: {' '.join(map(str, f.default_factory()))})"
    return text


def _field_kind(f: dataclasses.Field) -> str:
    """``bool``, ``int``, ``float``, ``str``, ``list[int]`` or ``list[str]``, from the annotation
    (``"int | None"`` -> ``int``)."""
    return str(f.type).split("|")[0].strip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`HarnessConfig` field, grouped per track, defaults and help from the fields."""
    groups = {None: parser.add_argument_group("every data set"),
              "image": parser.add_argument_group("image data sets (synthetic, findingemo, csv)"),
              "clip": parser.add_argument_group("clip data sets (synthetic_clips, meld)")}
    kinds = {"int": int, "float": float, "str": str}
    defaults = HarnessConfig()
    for f in dataclasses.fields(HarnessConfig):
        g = groups[f.metadata.get("track")]
        flags = [flag(f.name), *_ALIASES.get(f.name, ())]
        default = getattr(defaults, f.name)
        kind = _field_kind(f)
        if kind == "bool":
            g.add_argument(*flags, action=argparse.BooleanOptionalAction, default=default, help=_help(f))
        elif kind.startswith("list["):
            g.add_argument(*flags, nargs="+", type=int if kind == "list[int]" else str, default=default,
                           help=_help(f))
        else:
            g.add_argument(*flags, type=kinds.get(kind, str), default=default, help=_help(f))


def config_from_args(args: argparse.Namespace) -> HarnessConfig:
    cfg = HarnessConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(HarnessConfig)})
    cfg.validate()
    return cfg
