"""``emologic bench WHAT``: throughput benchmarks (not timed tests).

``BENCHES`` maps a name to ``fn(args) -> dict`` of results; ``--json`` prints the dict.

``bench engines`` (see ``logic/bench.py``): queries per second, forward +
backward at batch 512 on the CPU, of the compiled engine and of DeepProbLog's
exact engine on the same program and inputs, and their largest output difference.

``bench query`` (see ``experiments/query/bench.py``): seconds from starting a
fresh ``emologic query PHOTO`` to its first answer, and images per second over
a folder (``--images DIR``; default scikit-image photos + synthetic images).

``bench cache`` builds caches in a temporary directory and reports images per
second (loading + hashing + faces + crops + scene backbone + shard writes; model
construction excluded) and bytes per image:

* synthetic 128 px images, faces from the annotations;
* 640 px images through MTCNN: upscaled synthetic scenes with 0-3 real faces
  (matplotlib's ``grace_hopper.jpg`` sample photo) pasted at random sizes.

With ``--workers N`` the same builds also run on Ray with 1 and with N workers
(``--ray ADDRESS``: on a cluster; else a local Ray), each worker with the serial
build's torch thread count, and report their speed-up over the serial build.

``bench sweep --workers N`` times the main job's (seed, regime) units on a small
synthetic run: serially, then on Ray with 1 and N workers (units per hour, and
whether the figures equal the serial run's).

``bench faces`` loads (generating and caching if needed, exactly as the harness
does) the synthetic benchmark of ``--n-images`` images and reports how well the
real FER2013 recogniser, unchanged, reads the face crops of one split:
per-class recall, macro average, accuracy (``experiments/harness/face_zero_shot.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Callable

from experiments.cli import command
from neural.cluster import add_device_argument, add_ray_arguments, connect_ray, resolve_device
from pipelines.splits import DEFAULT_SPLIT_FRACTIONS  # light: the harness's splits, without torch
from neural.common import UserError


def _bytes_of(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def _time_build(samples, cache_dir: Path, cfg, progress: bool, device: str, ray=None) -> dict:
    from cache.build import build_cache
    from pipelines.pipeline import ImagePipeline

    if ray is None:
        pipeline = ImagePipeline(cfg, device=device)  # model construction is not part of the throughput
    else:
        pipeline = ImagePipeline(cfg)  # the driver's only needs the weights' ids
        # every worker builds its pipeline once, on a few images: not part of the throughput either
        warm = [s for s in samples[: 2 * (ray.workers or 1)]]
        build_cache(warm, cache_dir.with_name(cache_dir.name + "-warmup"), cfg, split="bench", progress=False,
                    pipeline=pipeline, ray=ray, shard_size=1)
    start = time.perf_counter()
    report = build_cache(samples, cache_dir, cfg, split="bench", progress=progress, pipeline=pipeline, ray=ray,
                         device=device, shard_size=_shard_size(len(samples), ray, cfg))
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


def _shard_size(n: int, ray, cfg) -> int:
    """Serial: the default. Ray: a few chunks per worker (a multiple of the batch size), so all of them work."""
    from cache.build import DEFAULT_SHARD_SIZE

    if ray is None:
        return DEFAULT_SHARD_SIZE
    per_chunk = -(-n // (4 * (ray.workers or 1)))  # ceil: about 4 chunks per worker
    return max(cfg.batch_size, -(-per_chunk // cfg.batch_size) * cfg.batch_size)


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
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="emologic-bench-") as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="SceneBackbone")
        tmp = Path(tmp)
        n = max(args.n_small, args.n_large)
        ds = get_dataset("synthetic", root=tmp / "synthetic", n_images=n, seed=args.seed)
        small = ds.samples[: args.n_small]
        large = _mtcnn_images(ds.samples[: args.n_large], tmp / "mtcnn640", 640, args.seed)
        sets = {"synthetic_128px_annotations": (small, PipelineConfig(face_source="annotations")),
                "photo_faces_640px_mtcnn": (large, PipelineConfig(face_source="mtcnn"))}
        results = {
            "device": device,
            "cpu_threads": __import__("torch").get_num_threads(),
            "load_average_1min": round(os.getloadavg()[0], 2),
        }
        for name, (samples, cfg) in sets.items():
            results[name] = _time_build(samples, tmp / name, cfg, progress, device)
        for workers in _worker_counts(args):
            from cache.distributed import RayBuild

            connect_ray(args.ray, num_cpus=max(_worker_counts(args)) if args.ray is None else None)
            # each worker: the serial build's thread count, so the numbers compare like for like
            ray = RayBuild(address=args.ray, workers=workers, device=device,
                           threads=results["cpu_threads"], cpus_per_worker=1)
            for name, (samples, cfg) in sets.items():
                timed = _time_build(samples, tmp / f"{name}-ray{workers}", cfg, progress, device, ray)
                timed["speedup_vs_serial"] = round(timed["images_per_s"] / results[name]["images_per_s"], 2)
                results[f"{name}_ray_{workers}_worker{'s' if workers > 1 else ''}"] = timed
    return results


def _worker_counts(args) -> list[int]:
    """``--workers N``: Ray with 1 worker and with N (the serial build is always measured)."""
    if args.workers is None:
        if args.ray is not None:
            raise UserError("bench: --ray needs --workers N (Ray with 1 and with N workers, against serial)")
        return []
    if args.workers < 1:
        raise UserError(f"--workers must be positive, got {args.workers}")
    return sorted({1, args.workers})


def bench_sweep(args: argparse.Namespace) -> dict:
    """Units per hour of the main job's (seed, regime) units: serially, then on Ray with 1 and N workers.

    One small synthetic run (``--sweep-images``, seeds 0 1, frozen and joint, 1 epoch); the data, cache and
    stage 0 come from the first run and are reused by the others, so what is timed is the units alone."""
    import json as _json

    from experiments.harness.config import HarnessConfig
    from experiments.harness import run
    from experiments.harness.sweep import RaySweep

    if not _worker_counts(args):
        raise UserError("bench sweep needs --workers N (units on Ray with 1 and N workers, against serial)")
    with tempfile.TemporaryDirectory(prefix="emologic-bench-") as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="SceneBackbone")
        tmp = Path(tmp)
        cfg = HarnessConfig(n_images=args.sweep_images, seeds=[0, 1], regimes=["frozen", "joint"], epochs=1,
                            progress=False, cache=str(tmp / "cache"), data_root=str(tmp / "data"))

        def timed(name: str, sweep=None) -> tuple[dict, dict]:
            start = time.perf_counter()
            run_dir = run(replace(cfg, runs_dir=str(tmp / name)), argv=[], sweep=sweep)
            seconds = time.perf_counter() - start
            results = _json.loads((run_dir / "results.json").read_text())
            t = results["timings"]
            units_s = seconds - t["data_and_cache"] - t.get("stage0", 0.0) - t.get("report", 0.0)
            n = sum(len(r["per_seed"]) for r in results["regimes"].values())
            return {"units": n, "seconds": round(units_s, 2), "units_per_hour": round(3600 * n / units_s, 1)}, results

        run(replace(cfg, runs_dir=str(tmp / "warmup"), regimes=["frozen"], seeds=[0]), argv=[])  # data, cache, stage 0
        out = {"cpu_threads": __import__("torch").get_num_threads(),
               "load_average_1min": round(os.getloadavg()[0], 2)}
        out["serial"], serial = timed("serial")
        for workers in _worker_counts(args):
            connect_ray(args.ray, num_cpus=max(_worker_counts(args)) if args.ray is None else None)
            name = f"ray_{workers}_worker{'s' if workers > 1 else ''}"
            out[name], results = timed(name, RaySweep(address=args.ray, workers=workers, device=resolve_device(args.device)))
            out[name]["speedup_vs_serial"] = round(out[name]["units_per_hour"] / out["serial"]["units_per_hour"], 2)
            out[name]["same_figures_as_serial"] = _figures(results) == _figures(serial)
    return out


def _figures(results: dict) -> dict:
    """Per regime and seed, the test metrics and learned source probabilities (what must not change)."""
    return {r: {s: (v["metrics"], v.get("source_probs")) for s, v in reg["per_seed"].items()}
            for r, reg in results["regimes"].items()}

def bench_faces(args: argparse.Namespace) -> dict:
    from experiments.harness.config import HarnessConfig
    from experiments.harness.image_data import load_data
    from experiments.harness.face_zero_shot import fer_zero_shot

    cfg = HarnessConfig(n_images=args.n_images, data_seed=args.seed, progress=not args.json)
    cfg.validate()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="SceneBackbone")  # the scene backbone is irrelevant here
        data = load_data(cfg)
    return {"dataset": str(data.dataset.source), "split": args.split, **fer_zero_shot(data.split(args.split))}


def _faces_table(results: dict) -> None:
    from experiments.harness.face_zero_shot import format_recall

    print(format_recall(results, f"FER2013 zero-shot on {results['split']} faces of {results['dataset']}"))


def bench_engines(args: argparse.Namespace) -> dict:
    from logic.bench import bench_engines as run_bench

    return run_bench(program=args.program, batch_size=args.batch_size, dpl_samples=args.dpl_samples,
                     repeats=args.repeats, seed=args.seed)


def bench_query(args: argparse.Namespace) -> dict:
    from experiments.query.bench import bench_query as run_bench

    return run_bench(images_dir=args.images, run=args.run, cold_runs=args.cold_runs, seed=args.seed,
                     runtime=args.runtime)


#: name -> benchmark function(args) -> results dict. Extend with more benchmarks.
BENCHES: dict[str, Callable[[argparse.Namespace], dict]] = {
    "cache": bench_cache, "engines": bench_engines, "faces": bench_faces, "query": bench_query, "sweep": bench_sweep,
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
    p.add_argument("--sweep-images", type=int, default=200, help="sweep: synthetic images of the timed run (default: 200)")
    add_device_argument(p)
    add_ray_arguments(p, "cache: the build; sweep: the (seed, regime) units")
    p.add_argument("--n-images", type=int, default=2000,
                   help="faces: images of the synthetic benchmark, as the harness's --n-images (default: 2000)")
    p.add_argument("--split", choices=list(DEFAULT_SPLIT_FRACTIONS), default="test",
                   help="faces: the split whose crops are read (default: test)")
    p.add_argument("--images", default=None, metavar="DIR",
                   help="query: folder of images (default: scikit-image photos + synthetic images, ~20 files)")
    p.add_argument("--run", default=None, help="query: answer with this run (default: the untrained program)")
    p.add_argument("--cold-runs", type=int, default=5,
                   help="query: fresh processes timed to their first answer (default: 5)")
    p.add_argument("--runtime", choices=("auto", "onnx", "torch"), default="auto",
                   help="query: as emologic query's --runtime (default: auto, the served copy where there is one)")


@command(
    "bench",
    help="Benchmarks: engines (compiled vs DeepProbLog queries/s), cache (images/s, bytes/image; "
         "--workers N: also on Ray), faces (FER2013's zero-shot recall on the synthetic faces), query (first "
         "answer of a fresh process, images/s) and sweep (the main job's units/hour, serial and on Ray)",
    example="emologic bench engines --json\n  emologic bench cache --workers 2\n  emologic bench sweep --workers 2",
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
