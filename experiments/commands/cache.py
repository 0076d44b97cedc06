"""``emologic cache build|verify|info``: the verified tensor cache from the command line.

Images and video clips (``--dataset meld``) share the commands; the pipeline
options of both kinds are listed, and an option of the other kind than the data
set's is refused (never silently ignored).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

from experiments.cli import command
from neural.cluster import add_device_argument, add_ray_arguments, resolve_device
from neural.common import UserError

#: Options of ``cache build`` that are pipeline config fields (help text per field).
_PIPELINE_HELP = {
    "face_source": "where face boxes come from: annotations (the data set's boxes) or mtcnn",
    "max_faces": "keep at most this many faces per image, largest first",
    "min_face_size": "mtcnn: smallest face side in pixels",
    "face_prob_threshold": "mtcnn: keep faces detected with at least this probability",
    "mtcnn_thresholds": "mtcnn: P-, R- and O-net stage thresholds",
    "mtcnn_max_side": "mtcnn: search photos with a longer side at this size (boxes scaled back)",
    "crop_margin": "face crop side = max(box width, height) * (1 + margin)",
    "crop_size": "side of the grayscale face crops in pixels",
    "scene_size": "input resolution of the scene backbone",
    "scene_weights": "Places365 ResNet-18 checkpoint (file or URL); default: seeded random init",
    "scene_seed": "seed of the random init when no scene weights are given",
    "store_scene_layer3": "also cache the backbone's layer3 maps (for fine-tuning layer4)",
    "features": "registered cached features to compute besides the built-in ones (a plug-in's: EMOLOGIC_PLUGINS)",
    "va_backbone": "valence/arousal features: scene (reuse scene features) or clip",
    "clip_model": "va_backbone=clip: hub name or local directory of a CLIP model",
    "max_pixels": "refuse images with more pixels than this (decompression bombs)",
    "batch_size": "samples per batch (images per backbone/detector batch; clips per tokenizer batch)",
}
#: The cache kinds whose pipeline options ``cache build`` offers, in help order.
_KINDS = ("image", "clip")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _pipeline_fields() -> dict[str, list[dataclasses.Field]]:
    from cache.kinds import get_cache_kind

    return {kind: list(dataclasses.fields(get_cache_kind(kind).config_cls)) for kind in _KINDS}


def _pipeline_args(p: argparse.ArgumentParser) -> None:
    kinds_fields = _pipeline_fields()
    defaults: dict[str, dict[str, object]] = {}  # field -> {kind: default}
    for kind, fields in kinds_fields.items():
        for f in fields:
            defaults.setdefault(f.name, {})[kind] = f.default
    added: set[str] = set()
    for kind, fields in kinds_fields.items():
        g = p.add_argument_group(f"{kind} pipeline" + (" (--dataset meld)" if kind == "clip" else ""))
        for f in fields:
            if f.name in added:  # shared by both kinds (batch_size)
                continue
            added.add(f.name)
            default = f.default
            shown = (", ".join(f"{v} for {k}s" for k, v in defaults[f.name].items())
                     if len(defaults[f.name]) > 1 else default)
            if f.name == "face_source":  # chosen per data set (experiments.harness.config.default_face_source)
                shown = "annotations for synthetic, mtcnn for other data sets"
            helptext = f"{_PIPELINE_HELP.get(f.name) or f.metadata.get('help', '')} (default: {shown})"
            if isinstance(default, bool):
                g.add_argument(_flag(f.name), action="store_true", dest=f.name, help=helptext)
            elif isinstance(default, tuple) and not default:  # names (features): as many as given
                g.add_argument(_flag(f.name), nargs="+", dest=f.name, metavar="NAME", help=helptext)
            elif isinstance(default, tuple):
                g.add_argument(_flag(f.name), type=float, nargs=len(default), dest=f.name, metavar="T", help=helptext)
            else:
                kind_type = f.metadata.get("type") or (type(default) if default is not None else str)
                g.add_argument(_flag(f.name), type=kind_type, dest=f.name, help=helptext)


def pipeline_config_from_args(args: argparse.Namespace, kind: str = "image"):
    """The ``kind`` pipeline config from the options given; options of another kind raise."""
    from cache.kinds import get_cache_kind

    every = {f.name for fields in _pipeline_fields().values() for f in fields}
    given = {name: getattr(args, name) for name in every if getattr(args, name, None) not in (None, False)}
    config_cls = get_cache_kind(kind).config_cls
    own = {f.name for f in dataclasses.fields(config_cls)}
    foreign = sorted(set(given) - own)
    if foreign:
        raise UserError(
            f"option(s) {', '.join(map(_flag, foreign))} do not apply to {kind} data sets "
            f"({config_cls.__name__}); its options: {', '.join(_flag(n) for n in sorted(own))}"
        )
    return config_cls(**given)


def _parse_option(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise UserError(f"--set expects KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value


def _build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="data set name (synthetic, findingemo, csv, ...)")
    p.add_argument("--root", help="the data set's directory, or its file (csv: the table); passed as its "
                                  "path option when it is a file and the data set takes one, else as root/images")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="other data set option, e.g. --set n_images=240 (repeatable)")
    p.add_argument("--cache", required=True, help="cache directory (one sub-directory per split)")
    p.add_argument("--split", action="append", help="cache only this split (repeatable); default: every split")
    p.add_argument("--shard-size", type=int, default=256, help="samples per shard file (default: 256)")
    p.add_argument("--force", action="store_true",
                   help="delete the cached splits first and rebuild them (not needed to repair damage: a build "
                        "rebuilds what `cache verify` reports, and a split built with another config needs it)")
    p.add_argument("--no-wait", action="store_true",
                   help="exit at once when another process is writing this cache (default: wait for it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_device_argument(p)
    add_ray_arguments(p, "the samples (one task per shard)")
    _pipeline_args(p)


def _verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("cache_dir", help="cache directory (or one split's directory)")
    p.add_argument("--split", help="check only this split")
    p.add_argument("--config", help="JSON file with the pipeline config the cache must have")
    p.add_argument("--no-images", action="store_true", help="do not re-hash the source images")


def _info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("cache_dir", help="cache directory (or one split's directory)")
    p.add_argument("--json", action="store_true", help="print JSON")


def _configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    _build_args(sub.add_parser("build", help="compute and store the tensors of a data set (resumes)"))
    _verify_args(sub.add_parser("verify", help="check every cached entry; exit 1 on any problem"))
    _info_args(sub.add_parser("info", help="counts, bytes per image and config of a cache"))


def _dataset(args):
    from pipelines.datasets import dataset_options, get_dataset

    options = dict(_parse_option(s) for s in args.set)
    if args.root is not None:
        accepted = dataset_options(args.dataset)
        # a file is the data set's table (csv: path=t.csv); a directory is where it lives
        order = ("path", "root", "images") if Path(args.root).is_file() else ("root", "images", "path")
        key = next((k for k in order if k in accepted), None)
        if key is None:
            raise UserError(f"data set {args.dataset!r} takes no directory; its options: {', '.join(accepted)}")
        options[key] = args.root
    return get_dataset(args.dataset, **options)


def _build(args) -> int:
    from cache.build import build_cache, group_by_split
    from cache.kinds import kind_of_dataset
    from cache.store import cache_lock, split_dir

    dataset = _dataset(args)
    kind = kind_of_dataset(dataset).name
    if kind == "image" and getattr(args, "face_source", None) is None:
        from experiments.harness.config import default_face_source

        args.face_source = default_face_source(args.dataset)
    cfg = pipeline_config_from_args(args, kind)
    device = resolve_device(args.device)
    ray_build = None
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be positive, got {args.workers}")
    if args.ray is not None:
        from cache.distributed import RayBuild
        from neural.cluster import import_ray

        import_ray()  # before any network is loaded: without Ray, say so at once
        ray_build = RayBuild(address=args.ray, workers=args.workers, device=device)
    elif args.workers is not None:
        raise UserError("--workers applies to --ray builds; add --ray (a local Ray) or --ray ADDRESS")
    splits = args.split or [None]
    # one lock from --force's deletion to the end of the build: no other writer in between
    with cache_lock(args.cache, wait=not args.no_wait):
        if args.force:
            for split in splits:
                for name in group_by_split(dataset, split):
                    target = split_dir(args.cache, name)
                    if target.is_dir():
                        shutil.rmtree(target)
        reports = [
            build_cache(dataset, args.cache, cfg, split=split, progress=not args.no_progress,
                        shard_size=args.shard_size, wait=not args.no_wait, ray=ray_build, device=device)
            for split in splits
        ]
    if getattr(dataset, "skipped", None):  # left out by the data set itself (e.g. images not downloaded)
        print(dataset.skip_report())
    for report in reports:
        print(report.summary())
    return 0


def _verify(args) -> int:
    from cache.verify import verify_cache

    expected = None  # a dict: read as the config of the cache's own kind (image or clip)
    if args.config:
        path = Path(args.config)
        try:
            expected = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: not a pipeline config JSON file ({exc})") from None
        if not isinstance(expected, dict):
            raise UserError(f"{path}: not a pipeline config JSON file (expected an object, got {type(expected).__name__})")
    report = verify_cache(args.cache_dir, expected_cfg=expected, split=args.split, check_images=not args.no_images)
    print(report.summary())
    return 0 if report.ok else 1


def _info(args) -> int:
    from cache.store import cache_info

    info = cache_info(args.cache_dir)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    for s in info:
        per_image = f"{s['bytes_per_image']:,.0f}" if s["bytes_per_image"] else "-"
        print(f"{s['split']}: {s['samples']} {s['kind']} samples, {s['skipped']} skipped, {s['shards']} shards, "
              f"{s['bytes']:,} bytes ({per_image} per {s['kind']})" + ("" if s["complete"] else ", INCOMPLETE build"))
        if s["faces_per_image"]:
            print("  " + ", ".join(f"{k} faces: {v}" for k, v in s["faces_per_image"].items()))
        if "without_audio" in s:
            print(f"  without audio: {s['without_audio']}")
    first = info[0]
    print("config: " + ", ".join(f"{k}={v}" for k, v in first["config"].items()))
    print("identity: " + ", ".join(f"{k}={v}" for k, v in first["identity"].items()))
    print("versions: " + ", ".join(f"{k} {v}" for k, v in first["versions"].items()))
    return 0


_ACTIONS = {"build": _build, "verify": _verify, "info": _info}


@command(
    "cache",
    help="Build, verify or describe the tensor cache",
    example="emologic cache build --dataset synthetic --root data/synth --cache cache/synth\n"
            "  emologic cache build --dataset meld --root ~/MELD.Raw --cache cache/meld --frames 16\n"
            "  emologic cache verify cache/synth\n  emologic cache info cache/synth",
    configure=_configure,
)
def run(args: argparse.Namespace) -> int:
    return _ACTIONS[args.action](args)
