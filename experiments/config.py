"""The harness configuration: one dataclass, one command-line flag per field.

Every field is a flag of ``experiments/joint_vs_frozen.py`` (``rule_lr`` ->
``--rule-lr``); the resolved config is written next to the results, and a run
directory refuses to resume under a different one.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from neural.errors import UserError

REGIMES = ("frozen", "joint", "uniform_rules", "late_fusion")
#: The regimes of a clip data set (the fusion net's two heads under clip_sentiment.pl).
CLIP_REGIMES = ("frozen", "joint")
#: What each data set holds: images (the scene/face track) or video clips (the clip track).
MODALITY = {"synthetic": "image", "findingemo": "image", "csv": "image", "synthetic_clips": "clip", "meld": "clip"}
DATASETS = tuple(MODALITY)
RULE_INITS = ("uniform", "program")
#: Where the V/A regressor's features come from (``pipelines.pipeline.VA_BACKBONES``).
VA_BACKBONES = ("scene", "clip")
#: Where the face predicate starts (``--face-init``): the real FER2013 weights, or a random init.
FACE_INITS = ("fer2013", "scratch")
#: Every learning-rate field (all must be >= 0; 0 freezes what it trains).
LEARNING_RATES = ("rule_lr", "net_lr", "baseline_lr", "layer4_lr", "stage0_lr", "face_lr")

#: Defaults of the fields left ``None``, per modality (``HarnessConfig.resolved``).
MODALITY_DEFAULTS: dict[str, dict] = {
    "image": {"program": "context_selection", "regimes": list(REGIMES), "epochs": 5, "stage0_epochs": 2,
              "rule_init": "uniform", "class_weights": False},
    # clips: training runs on cached frozen-encoder features and the logic's
    # circuit is tiny, so an epoch costs milliseconds: more epochs, and the
    # recipe's class weighting (MELD is about half neutral)
    "clip": {"program": "clip_sentiment", "regimes": list(CLIP_REGIMES), "epochs": 40, "stage0_epochs": 30,
             "rule_init": "program", "class_weights": True},
}
#: Stage-0 epochs of a face net trained from a random init (fine-tuning FER2013 needs far fewer:
#: on the default benchmark its test macro recall is 0.87 after 1 epoch, 0.90 after 3, 0.91 after 5).
SCRATCH_FACE_EPOCHS = 10
#: Clip pipeline defaults per clip data set: (frames, frame side, seconds decoded).
CLIP_DEFAULTS = {"synthetic_clips": (8, 64, 2.0), "meld": (16, 112, 10.0)}


def modality_of(dataset: str) -> str:
    return MODALITY.get(dataset, "image")


@dataclass
class HarnessConfig:
    # -- data ---------------------------------------------------------------
    dataset: str = "synthetic"
    data_root: str | None = None  # synthetic(_clips): where the set lives (default data/...-<digest>); meld: MELD.Raw
    n_images: int = 2000  # synthetic
    n_clips: int = 1000  # synthetic_clips
    image_size: int = 128  # synthetic
    data_seed: int = 0  # synthetic generator seed
    images: str | None = None  # findingemo: directory of downloaded images
    annotations: str | None = None  # findingemo: annotation CSV (default: the findingemo-light package's)
    csv: str | None = None  # csv: the image_path,label[,split] table
    mapping: str | None = None  # findingemo/csv/meld: label mapping file
    cache: str | None = None  # tensor cache directory (default .emologic/cache/<dataset>-<digest>)
    rebuild_cache: bool = False  # rebuild damaged or otherwise-built parts of the cache instead of refusing
    face_source: str | None = None  # annotations | mtcnn (default: annotations for synthetic, else mtcnn)
    scene_weights: str | None = None  # Places365 checkpoint (file or URL); none: seeded random init
    va_backbone: str = "scene"  # features of the V/A regressor: scene (the cached scene features) | clip
    clip_model: str = "openai/clip-vit-base-patch32"  # --va-backbone clip: hub name or local directory
    clip_frames: int | None = None  # clips: video frames per clip (synthetic_clips 8, meld 16)
    clip_size: int | None = None  # clips: frame side in pixels (synthetic_clips 64, meld 112)
    clip_seconds: float | None = None  # clips: seconds decoded per clip (synthetic_clips 2, meld 10)
    text_model: str | None = None  # clips: BERT-family text model (default: the packaged MiniLM)
    video_weights: str | None = None  # clips: r3d_18 state dict (Kinetics-400); none: seeded random trunk
    # -- program ------------------------------------------------------------
    program: str | None = None  # default: context_selection (images), clip_sentiment (clips)
    rule_init: str | None = None  # uniform | program (default: uniform for images, program for clips)
    engine: str = "compiled"
    face_size_threshold: float = 0.3
    # -- regimes ------------------------------------------------------------
    regimes: list[str] | None = None  # default: all four (images), frozen and joint (clips)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    epochs: int | None = None  # training epochs of every regime (default 5 images, 40 clips)
    batch_size: int = 64
    rule_lr: float = 0.05  # compiled: Adam on logits; deepproblog: SGD(param_lr)
    net_lr: float = 1e-3  # joint / uniform_rules: scene head and face net
    baseline_lr: float = 1e-2  # late_fusion: the small MLP on the networks' outputs
    class_weights: bool | None = None  # weight the loss by inverse class frequency (default: off images, on clips)
    unfreeze_layer4: bool = False  # joint: also train the scene backbone's last block
    layer4_lr: float = 1e-5
    # -- stage 0 -------------------------------------------------------------
    stage0_per_seed: bool = True  # stage 0 for every seed, so the spread over seeds includes stage 0's
    stage0_epochs: int | None = None  # the face net's epochs (default 2 fine-tuning FER2013, 10 from scratch); clips: the fusion net's (30)
    head_epochs: int = 100  # the scene head's and VA regressor's epochs (cheap: cached features)
    stage0_lr: float = 2e-3
    face_lr: float = 3e-4  # stage 0: fine-tuning learning rate of the pretrained face predicate
    face_weights: str | None = None  # a trained face predicate (emologic train-face) instead of stage 0
    face_init: str = "fer2013"  # where the face predicate starts: fer2013 (real weights) | scratch
    # -- where ---------------------------------------------------------------
    device: str | None = None  # cpu | cuda | cuda:N | mps (default: cuda when available, else cpu)
    # -- output -------------------------------------------------------------
    runs_dir: str = "runs"
    name: str | None = None
    progress: bool = True

    @property
    def modality(self) -> str:
        """``image`` or ``clip``: which track of the harness runs this data set."""
        return modality_of(self.dataset)

    def resolved(self) -> HarnessConfig:
        """A copy with every field left ``None`` set to its modality's default
        (:data:`MODALITY_DEFAULTS`, :data:`CLIP_DEFAULTS`); what a run records."""
        values = {k: v for k, v in MODALITY_DEFAULTS[self.modality].items() if getattr(self, k) is None}
        if self.modality == "image" and self.face_init == "scratch" and self.stage0_epochs is None:
            values["stage0_epochs"] = SCRATCH_FACE_EPOCHS
        if self.modality == "clip":
            frames, size, seconds = CLIP_DEFAULTS.get(self.dataset, CLIP_DEFAULTS["meld"])
            for key, default in (("clip_frames", frames), ("clip_size", size), ("clip_seconds", seconds)):
                if getattr(self, key) is None:
                    values[key] = default
        if self.device in (None, "auto"):
            from neural.cluster import resolve_device

            values["device"] = resolve_device(None)
        return dataclasses.replace(self, **values)

    def validate(self) -> None:
        """Check the config as it will run (:meth:`resolved`); one line naming every problem."""
        cfg = self.resolved()
        problems = []
        if cfg.dataset not in DATASETS:
            problems.append(f"--dataset must be one of {', '.join(DATASETS)}")
        if cfg.dataset == "findingemo" and not cfg.images:
            problems.append("--dataset findingemo needs --images DIR (the downloaded FindingEmo images)")
        if cfg.dataset == "csv" and not cfg.csv:
            problems.append("--dataset csv needs --csv FILE")
        if cfg.dataset == "meld" and not cfg.data_root:
            problems.append("--dataset meld needs --root DIR (MELD.Raw: the CSVs and the extracted clip folders)")
        known = CLIP_REGIMES if cfg.modality == "clip" else REGIMES
        unknown = [r for r in cfg.regimes if r not in known]
        if unknown:
            problems.append(f"unknown regime(s) {', '.join(unknown)} for {cfg.modality} data sets; "
                            f"known: {', '.join(known)}")
        from logic.engines import ENGINES

        engine = ENGINES.get(cfg.engine)
        if engine is None:
            problems.append(f"--engine must be one of {', '.join(ENGINES)}")
        batched = ", ".join(n for n, e in ENGINES.items() if e.batched)
        if cfg.rule_init not in RULE_INITS:
            problems.append(f"--rule-init must be one of {', '.join(RULE_INITS)}")
        if not cfg.seeds:
            problems.append("--seeds needs at least one seed")
        duplicates = sorted({s for s in cfg.seeds if cfg.seeds.count(s) > 1})
        if duplicates:
            problems.append(f"--seeds lists {', '.join(map(str, duplicates))} more than once (a seed runs once)")
        negative = [f"--{k.replace('_', '-')} {getattr(cfg, k)}" for k in LEARNING_RATES if not getattr(cfg, k) >= 0]
        if negative:  # a negative rate ascends the loss (and NaN is no rate)
            problems.append(f"learning rates must be >= 0, got {', '.join(negative)}")
        if cfg.face_weights and not Path(cfg.face_weights).expanduser().exists():
            problems.append(f"--face-weights {cfg.face_weights}: no such file or directory")
        if cfg.epochs < 1 or cfg.stage0_epochs < 0 or cfg.head_epochs < 0 or cfg.batch_size < 1:
            problems.append("--epochs and --batch-size must be positive, --stage0-epochs and --head-epochs >= 0")
        if cfg.modality == "clip":
            if cfg.stage0_epochs < 1:
                problems.append("--stage0-epochs must be >= 1 for clips (the fusion net's stage 0)")
            if cfg.batch_size < 2:
                problems.append("--batch-size must be >= 2 for clips (the fusion layer has BatchNorm)")
            if engine is not None and not engine.batched and "joint" in cfg.regimes:
                problems.append(f"the joint regime on clips needs --engine {batched}: the {cfg.engine} engine runs "
                                "the fusion net one clip at a time, and its BatchNorm cannot train on one clip "
                                f"(--engine {cfg.engine} --regimes frozen works)")
            if cfg.clip_frames < 1 or cfg.clip_seconds <= 0:
                problems.append("--clip-frames and --clip-seconds must be positive")
            if cfg.dataset == "synthetic_clips" and (cfg.clip_size < 32 or cfg.clip_size % 2 or cfg.n_clips < 1):
                problems.append("synthetic_clips needs an even --clip-size >= 32 and a positive --n-clips")
        if cfg.va_backbone not in VA_BACKBONES:
            problems.append(f"--va-backbone must be one of {', '.join(VA_BACKBONES)}")
        elif cfg.modality == "clip" and cfg.va_backbone != "scene":
            problems.append("--va-backbone applies to image data sets (clip data sets have no V/A source)")
        if cfg.device != "cpu":
            from neural.cluster import resolve_device

            resolve_device(cfg.device)  # one line when that device is not here
            if engine is not None and engine.cpu_only:
                problems.append(f"--engine {cfg.engine} runs on the CPU only ({engine.placement}); "
                                f"use --device cpu or --engine {batched}")
        if cfg.face_init not in FACE_INITS:
            problems.append(f"--face-init must be one of {', '.join(FACE_INITS)}")
        if problems:
            raise UserError("; ".join(problems))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_HELP = {
    "dataset": "synthetic (built-in benchmark), findingemo, csv; clips: synthetic_clips (built-in) or meld",
    "data_root": "synthetic / synthetic_clips: directory of the generated set; meld: the MELD.Raw directory",
    "n_images": "synthetic: number of images",
    "n_clips": "synthetic_clips: number of clips",
    "image_size": "synthetic: image side in pixels",
    "data_seed": "synthetic: generator seed",
    "images": "findingemo: directory with the downloaded images",
    "annotations": "findingemo: annotation CSV (default: the findingemo-light package's)",
    "csv": "csv: table image_path,label[,split]",
    "mapping": "findingemo/csv/meld: label mapping file (label,emotion)",
    "cache": "tensor cache directory",
    "rebuild_cache": "rebuild the parts of the cache that are damaged or were built with another pipeline "
                     "config (default: refuse such a cache)",
    "face_source": "face boxes from 'annotations' or 'mtcnn'",
    "scene_weights": "Places365 ResNet-18 checkpoint (file or URL)",
    "va_backbone": "features of the valence/arousal regressor (programs with a V/A source, e.g. va_selection): "
                   "scene (the cached scene features) or clip (CLIP image embeddings, cached)",
    "clip_model": "--va-backbone clip: CLIP model, hub name or local directory (from_pretrained)",
    "clip_frames": "clips: video frames per clip (default: synthetic_clips 8, meld 16)",
    "clip_size": "clips: frame side in pixels (default: synthetic_clips 64, meld 112)",
    "clip_seconds": "clips: seconds decoded per clip (default: synthetic_clips 2, meld 10)",
    "text_model": "clips: BERT-family text model, hub name or local directory (default: the packaged MiniLM)",
    "video_weights": "clips: r3d_18 state dict file (Kinetics-400) for the frozen video trunk",
    "program": "program name in logic/programs or a .pl path (default: context_selection; clips: clip_sentiment)",
    "rule_init": "where the rule parameters start: uniform or program (the file's values, e.g. "
                 "va_selection's circumplex prior); "
                 "default uniform for images, program for clips",
    "engine": "compiled (KLay, batched) or deepproblog (reference)",
    "face_size_threshold": "relative side of a 'large' face",
    "regimes": "regimes to run (default: all four; clips: frozen joint)",
    "seeds": "seeds (each: its own stage 0 and regime runs)",
    "epochs": "training epochs per regime (default: 5; clips: 40)",
    "batch_size": "batch size",
    "rule_lr": "learning rate of the rule parameters",
    "net_lr": "learning rate of the networks trained through the logic",
    "baseline_lr": "learning rate of the late-fusion baseline",
    "class_weights": "weight the loss by inverse class frequency (default: off; clips: on)",
    "unfreeze_layer4": "joint: also train the scene backbone's last block",
    "layer4_lr": "learning rate of layer4 when unfrozen",
    "stage0_per_seed": "train stage 0 for every seed, so ± over seeds includes stage 0's own variation; "
                       "--no-stage0-per-seed trains it once (first seed) and shares it, which hides that part",
    "stage0_epochs": "stage-0 epochs of the face net (default: 2 fine-tuning FER2013, 10 with --face-init scratch; "
                     "clips: the fusion net's, 30)",
    "head_epochs": "stage-0 epochs of the scene head and VA regressor (cached features, cheap)",
    "stage0_lr": "stage-0 learning rate (scene head, VA regressor, a face net trained from scratch)",
    "face_lr": "stage-0 learning rate when fine-tuning the pretrained (FER2013) face predicate",
    "face_weights": "trained face predicate directory (emologic train-face)",
    "face_init": "where the face predicate starts: fer2013 (mini-XCEPTION's real FER2013 weights; stage 0 "
                 "fine-tunes them where faces are labelled) or scratch (a random init trained in stage 0 on the "
                 "data set's labelled faces); --face-weights replaces both",
    "device": "where the networks run (cache build, stage 0, regimes, clip encoders): cpu, cuda, cuda:N, mps "
              "(default: cuda when available, else cpu); the compiled engine's circuit walk stays on the CPU",
    "runs_dir": "where run directories are created",
    "name": "suffix of the run directory name",
    "progress": "progress bars",
}


#: Extra spellings of a flag.
_ALIASES = {"data_root": ("--root",)}


def _field_kind(f: dataclasses.Field, default) -> str:
    """``bool``, ``int``, ``float``, ``str``, ``list[int]`` or ``list[str]``, from the default
    or, for a default of ``None``, from the annotation (``"int | None"`` -> ``int``)."""
    if default is not None:
        if isinstance(default, list):
            return "list[int]" if f.name == "seeds" else "list[str]"
        return type(default).__name__
    return str(f.type).split("|")[0].strip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`HarnessConfig` field, defaults from the dataclass
    (``None``: the modality's default, see :meth:`HarnessConfig.resolved`)."""
    defaults = HarnessConfig()
    kinds = {"int": int, "float": float, "str": str}
    for f in dataclasses.fields(HarnessConfig):
        flags = ["--" + f.name.replace("_", "-"), *_ALIASES.get(f.name, ())]
        default = getattr(defaults, f.name)
        help_text = _HELP.get(f.name, "") + ("" if default is None else f" (default: {default})")
        kind = _field_kind(f, default)
        if kind == "bool":
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif kind.startswith("list["):
            parser.add_argument(*flags, nargs="+", type=int if kind == "list[int]" else str, default=default,
                                help=help_text)
        else:
            parser.add_argument(*flags, type=kinds.get(kind, str), default=default, help=help_text)


def config_from_args(args: argparse.Namespace) -> HarnessConfig:
    cfg = HarnessConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(HarnessConfig)})
    cfg.validate()
    return cfg
