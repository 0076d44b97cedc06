"""The harness configuration: one dataclass, one command-line flag per field.

Every field is a flag of ``experiments/joint_vs_frozen.py`` (``rule_lr`` ->
``--rule-lr``); the resolved config is written next to the results, and a run
directory refuses to resume under a different one.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

from neural.errors import UserError

REGIMES = ("frozen", "joint", "uniform_rules", "late_fusion")
DATASETS = ("synthetic", "findingemo", "csv")


@dataclass
class HarnessConfig:
    # -- data ---------------------------------------------------------------
    dataset: str = "synthetic"
    data_root: str | None = None  # synthetic: where the benchmark lives (default data/synthetic-<digest>)
    n_images: int = 2000  # synthetic
    image_size: int = 128  # synthetic
    data_seed: int = 0  # synthetic generator seed
    images: str | None = None  # findingemo: directory of downloaded images
    annotations: str | None = None  # findingemo: annotation CSV (default: the findingemo-light package's)
    csv: str | None = None  # csv: the image_path,label[,split] table
    mapping: str | None = None  # findingemo/csv: label mapping file
    cache: str | None = None  # tensor cache directory (default .emologic/cache/<dataset>-<digest>)
    face_source: str | None = None  # annotations | mtcnn (default: annotations for synthetic, else mtcnn)
    scene_weights: str | None = None  # Places365 checkpoint (file or URL); none: seeded random init
    # -- program ------------------------------------------------------------
    program: str = "context_selection"
    engine: str = "compiled"
    face_size_threshold: float = 0.3
    # -- regimes ------------------------------------------------------------
    regimes: list[str] = field(default_factory=lambda: list(REGIMES))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    epochs: int = 5  # training epochs of every regime
    batch_size: int = 64
    rule_lr: float = 0.05  # compiled: Adam on logits; deepproblog: SGD(param_lr)
    net_lr: float = 1e-3  # joint / uniform_rules: scene head and face net
    baseline_lr: float = 1e-2  # late_fusion: the small MLP on the networks' outputs
    class_weights: bool = False  # weight the loss by inverse class frequency (train split)
    unfreeze_layer4: bool = False  # joint: also train the scene backbone's last block
    layer4_lr: float = 1e-5
    # -- stage 0 -------------------------------------------------------------
    stage0_per_seed: bool = False  # retrain stage 0 for every seed (default: once, from the first seed)
    stage0_epochs: int = 10  # the face net's epochs (the expensive one)
    head_epochs: int = 100  # the scene head's and VA regressor's epochs (cheap: cached features)
    stage0_lr: float = 2e-3
    face_weights: str | None = None  # a trained face predicate (emologic train-face) instead of stage 0
    fer_weights: bool = False  # use mini-XCEPTION's real FER2013 weights for the face predicate
    # -- output -------------------------------------------------------------
    runs_dir: str = "runs"
    name: str | None = None
    progress: bool = True

    def validate(self) -> None:
        problems = []
        if self.dataset not in DATASETS:
            problems.append(f"--dataset must be one of {', '.join(DATASETS)}")
        if self.dataset == "findingemo" and not self.images:
            problems.append("--dataset findingemo needs --images DIR (the downloaded FindingEmo images)")
        if self.dataset == "csv" and not self.csv:
            problems.append("--dataset csv needs --csv FILE")
        unknown = [r for r in self.regimes if r not in REGIMES]
        if unknown:
            problems.append(f"unknown regime(s) {', '.join(unknown)}; known: {', '.join(REGIMES)}")
        if self.engine not in ("compiled", "deepproblog"):
            problems.append("--engine must be compiled or deepproblog")
        if not self.seeds:
            problems.append("--seeds needs at least one seed")
        if self.epochs < 1 or self.stage0_epochs < 0 or self.head_epochs < 0 or self.batch_size < 1:
            problems.append("--epochs and --batch-size must be positive, --stage0-epochs and --head-epochs >= 0")
        if self.face_weights and self.fer_weights:
            problems.append("--face-weights and --fer-weights are exclusive")
        if problems:
            raise UserError("; ".join(problems))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_HELP = {
    "dataset": "synthetic (built-in benchmark), findingemo or csv",
    "data_root": "synthetic: directory of the generated benchmark",
    "n_images": "synthetic: number of images",
    "image_size": "synthetic: image side in pixels",
    "data_seed": "synthetic: generator seed",
    "images": "findingemo: directory with the downloaded images",
    "annotations": "findingemo: annotation CSV (default: the findingemo-light package's)",
    "csv": "csv: table image_path,label[,split]",
    "mapping": "findingemo/csv: label mapping file (label,emotion)",
    "cache": "tensor cache directory",
    "face_source": "face boxes from 'annotations' or 'mtcnn'",
    "scene_weights": "Places365 ResNet-18 checkpoint (file or URL)",
    "program": "program name in logic/programs or a .pl path",
    "engine": "compiled (KLay, batched) or deepproblog (reference)",
    "face_size_threshold": "relative side of a 'large' face",
    "regimes": "regimes to run",
    "seeds": "seeds (each: its own stage 0 and regime runs)",
    "epochs": "training epochs per regime",
    "batch_size": "batch size",
    "rule_lr": "learning rate of the rule parameters",
    "net_lr": "learning rate of the networks trained through the logic",
    "baseline_lr": "learning rate of the late-fusion baseline",
    "class_weights": "weight the loss by inverse class frequency",
    "unfreeze_layer4": "joint: also train the scene backbone's last block",
    "layer4_lr": "learning rate of layer4 when unfrozen",
    "stage0_per_seed": "retrain stage 0 for every seed (default: once, shared by all seeds and regimes)",
    "stage0_epochs": "epochs of stage-0 training of each network",
    "head_epochs": "stage-0 epochs of the scene head and VA regressor (cached features, cheap)",
    "stage0_lr": "stage-0 learning rate",
    "face_weights": "trained face predicate directory (emologic train-face)",
    "fer_weights": "use the real FER2013 mini-XCEPTION weights for the face predicate",
    "runs_dir": "where run directories are created",
    "name": "suffix of the run directory name",
    "progress": "progress bars",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`HarnessConfig` field, defaults from the dataclass."""
    defaults = HarnessConfig()
    for f in dataclasses.fields(HarnessConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = f"{_HELP.get(f.name, '')} (default: {default})"
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif isinstance(default, list):
            kind = int if f.name == "seeds" else str
            parser.add_argument(flag, nargs="+", type=kind, default=default, help=help_text)
        else:
            kind = type(default) if default is not None else str
            parser.add_argument(flag, type=kind, default=default, help=help_text)


def config_from_args(args: argparse.Namespace) -> HarnessConfig:
    cfg = HarnessConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(HarnessConfig)})
    cfg.validate()
    return cfg
