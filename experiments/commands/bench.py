"""``emologic bench WHAT``: throughput benchmarks (not timed tests).

``BENCHES`` maps a name to ``fn(args) -> dict`` of results; ``--json`` prints the dict.

``bench engines`` (see ``logic/bench.py``): queries per second, forward +
backward at batch 512 on the CPU, of the compiled engine and of DeepProbLog's
exact engine on the same program and inputs, and their largest output difference.

``bench query`` (see ``experiments/query_bench.py``): seconds from starting a
fresh ``emologic query PHOTO`` to its first answer, and images per second over
a folder (``--images DIR``; default scikit-image photos + synthetic images).

``bench cache`` builds caches in a temporary directory and reports images per
second (loading + hashing + faces + crops + scene backbone + shard writes; model
construction excluded) and bytes per image:

* synthetic 128 px images, faces from the annotations;
* 640 px images through MTCNN: upscaled synthetic scenes with 0-3 real faces
  (matplotlib's ``grace_hopper.jpg`` sample photo) pasted at random sizes.

``bench faces`` loads (generating and caching if needed, exactly as the harness
does) the synthetic benchmark of ``--n-images`` images and reports how well the
real FER2013 recogniser, unchanged, reads the face crops of one split:
per-class recall, macro average, accuracy (``experiments/face_zero_shot.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

from experiments.cli import command
from pipelines.splits import DEFAULT_SPLIT_FRACTIONS  # light: the harness's splits, without torch
from neural.errors import UserError


def _bytes_of(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def _time_build(samples, cache_dir: Path, cfg, progress: bool) -> dict:
    from cache.build import build_cache
    from pipelines.pipeline import ImagePipeline

    pipeline = ImagePipeline(cfg)  # model construction is not part of the throughput
    start = time.perf_counter()
    report = build_cache(samples, cache_dir, cfg, split="bench", progress=progress, pipeline=pipeline)
    seconds = time.perf_counter() - start
    n = report.n_cached
    faces = sum(e["n_faces"] for e in json.loads((cache_dir / "bench" / "manifest.json").read_text())["samples"])
    return {
        "images": len(samples),
        "cached": n,
        "skipped": len(report.skipped),
        "faces": faces,
        "seconds": round(seconds, 3),
        "images_per_s": round(len(samples) / seconds, 2),
        "bytes_per_image": round(_bytes_of(cache_dir / "bench") / max(n, 1)),
    }


def _mtcnn_images(samples, out: Path, size: int, seed: int) -> list:
    """``size`` px copies of synthetic scenes with 0-3 pasted photo faces."""
    import numpy as np
    from matplotlib import cbook
    from PIL import Image

    from pipelines.datasets import Sample

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        face = im.convert("RGB").crop((110, 60, 420, 420))  # head and shoulders
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for i, s in enumerate(samples):
        with Image.open(s.image_path) as src:
            canvas = src.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        for _ in range(int(rng.integers(0, 4))):
            side = int(rng.integers(size // 8, size // 3))
            x, y = (int(v) for v in rng.integers(0, size - side, 2))
            canvas.paste(face.resize((side, int(side * 1.16))), (x, y))
        path = out / f"{s.sample_id}.jpg"
        canvas.save(path, quality=90)
        made.append(Sample(s.sample_id, path, s.label, None, {}))
    return made


def bench_cache(args: argparse.Namespace) -> dict:
    from pipelines.datasets import get_dataset
    from pipelines.pipeline import PipelineConfig

    progress = not args.json
    with tempfile.TemporaryDirectory(prefix="emologic-bench-") as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="SceneBackbone")
        tmp = Path(tmp)
        n = max(args.n_small, args.n_large)
        ds = get_dataset("synthetic", root=tmp / "synthetic", n_images=n, seed=args.seed)
        small = ds.samples[: args.n_small]
        large = _mtcnn_images(ds.samples[: args.n_large], tmp / "mtcnn640", 640, args.seed)
        results = {
            "cpu_threads": __import__("torch").get_num_threads(),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "synthetic_128px_annotations": _time_build(
                small, tmp / "cache128", PipelineConfig(face_source="annotations"), progress
            ),
            "photo_faces_640px_mtcnn": _time_build(
                large, tmp / "cache640", PipelineConfig(face_source="mtcnn"), progress
            ),
        }
    return results


def bench_faces(args: argparse.Namespace) -> dict:
    from experiments.config import HarnessConfig
    from experiments.data import load_data
    from experiments.face_zero_shot import fer_zero_shot

    cfg = HarnessConfig(n_images=args.n_images, data_seed=args.seed, progress=not args.json)
    cfg.validate()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="SceneBackbone")  # the scene backbone is irrelevant here
        data = load_data(cfg)
    return {"dataset": str(data.dataset.source), "split": args.split, **fer_zero_shot(data.split(args.split))}


def _faces_table(results: dict) -> None:
    from experiments.face_zero_shot import format_recall

    print(format_recall(results, f"FER2013 zero-shot on {results['split']} faces of {results['dataset']}"))


def bench_engines(args: argparse.Namespace) -> dict:
    from logic.bench import bench_engines as run_bench

    return run_bench(program=args.program, batch_size=args.batch_size, dpl_samples=args.dpl_samples,
                     repeats=args.repeats, seed=args.seed)


def bench_query(args: argparse.Namespace) -> dict:
    from experiments.query_bench import bench_query as run_bench

    return run_bench(images_dir=args.images, run=args.run, cold_runs=args.cold_runs, seed=args.seed)


#: name -> benchmark function(args) -> results dict. Extend with more benchmarks.
BENCHES: dict[str, Callable[[argparse.Namespace], dict]] = {
    "cache": bench_cache, "engines": bench_engines, "faces": bench_faces, "query": bench_query,
}
#: name -> text printer of its results, where the generic key: value listing does not fit.
TABLES: dict[str, Callable[[dict], None]] = {"faces": _faces_table}


def _print_table(name: str, results: dict) -> None:
    print(f"bench {name}:")
    for key, value in results.items():
        if isinstance(value, dict):
            print(f"  {key}: " + ", ".join(f"{k}={v}" for k, v in value.items()))
        else:
            print(f"  {key}: {value}")


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=sorted(BENCHES), help="what to benchmark")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--n-small", type=int, default=400, help="cache: number of 128 px images (default: 400)")
    p.add_argument("--n-large", type=int, default=40, help="cache: number of 640 px MTCNN images (default: 40)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated images / inputs")
    p.add_argument("--program", default="context_selection", help="engines: program to evaluate")
    p.add_argument("--batch-size", type=int, default=512, help="engines: batch size (default: 512)")
    p.add_argument("--dpl-samples", type=int, default=64,
                   help="engines: samples DeepProbLog is timed on, one query at a time (default: 64)")
    p.add_argument("--repeats", type=int, default=100, help="engines: timed compiled steps (default: 100)")
    p.add_argument("--n-images", type=int, default=2000,
                   help="faces: images of the synthetic benchmark, as the harness's --n-images (default: 2000)")
    p.add_argument("--split", choices=list(DEFAULT_SPLIT_FRACTIONS), default="test",
                   help="faces: the split whose crops are read (default: test)")
    p.add_argument("--images", default=None, metavar="DIR",
                   help="query: folder of images (default: scikit-image photos + synthetic images, ~20 files)")
    p.add_argument("--run", default=None, help="query: answer with this run (default: the untrained program)")
    p.add_argument("--cold-runs", type=int, default=5,
                   help="query: fresh processes timed to their first answer (default: 5)")


@command(
    "bench",
    help="Benchmarks: engines (compiled vs DeepProbLog queries/s), cache (images/s, bytes/image), "
         "faces (FER2013's zero-shot recall on the synthetic faces), query (first answer of a fresh process, "
         "images/s)",
    example="emologic bench engines --json",
    configure=_configure,
)
def run(args: argparse.Namespace) -> int:
    if args.what not in BENCHES:
        raise UserError(f"unknown benchmark {args.what!r}; known: {', '.join(sorted(BENCHES))}")
    results = BENCHES[args.what](args)
    if args.json:
        print(json.dumps({args.what: results}, indent=1))
    elif args.what in TABLES:
        TABLES[args.what](results)
    else:
        _print_table(args.what, results)
    return 0
