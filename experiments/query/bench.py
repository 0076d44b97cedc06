"""``emologic bench query``: how long a user waits for ``emologic query``.

Two figures (DESIGN.md's targets: first answer within 3 s, folders at >= 5 images/s):

* **first answer, cold**: a fresh ``python`` process runs ``emologic query
  PHOTO`` (the untrained program, or ``--run RUN``); the time from starting it
  to its first answer line on stdout, imports and model construction
  included. Repeated, because the machine may be shared: every time is listed
  with the minimum and median, and the CPU seconds of each process, which
  depend little on the other load (what an idle machine's wall time would be). Disk caches (the
  model's served copy, compiled programs, FER2013 weights) are whatever earlier runs left; the
  first time is also reported apart (with ``--runtime auto`` on a new model it builds the served
  copy, :mod:`experiments.query.bundle`, which later processes answer from without torch).
* **folder throughput**: in this process, after building the program and
  answering one image (construction is not throughput), the images of a folder
  answered in one call; images per second and per CPU second, best of two passes.

The default folder holds scikit-image's photos (astronaut, camera, chelsea,
coffee, rocket) and synthetic benchmark images, repeated to about 20 files.
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from neural.common import UserError

SKIMAGE_PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket")
ANSWER_PREFIX = "  answer   "


def write_default_images(directory: Path, n_images: int = 20, seed: int = 0) -> list[Path]:
    """scikit-image photos + synthetic images in ``directory``, copied round-robin to ``n_images`` files."""
    from PIL import Image
    from skimage import data

    from pipelines.datasets import get_dataset

    directory.mkdir(parents=True, exist_ok=True)
    sources = []
    for name in SKIMAGE_PHOTOS:
        path = directory / f"src-{name}.jpg"
        Image.fromarray(getattr(data, name)()).save(path, quality=95)
        sources.append(path)
    synthetic = get_dataset("synthetic", root=directory / "synthetic", n_images=5, seed=seed)
    sources += [Path(s.image_path) for s in synthetic.samples[:5]]
    out = []
    for i in range(n_images):
        src = sources[i % len(sources)]
        dst = directory / "images" / f"{i:03d}-{src.stem}{src.suffix}"
        dst.parent.mkdir(exist_ok=True)
        shutil.copyfile(src, dst)
        out.append(dst)
    return out


def _query_argv(images: list[str], run: str | None, runtime: str = "auto") -> list[str]:
    return ["query", *images, *(["--run", run] if run else ["--prior"]), "--runtime", runtime]


def first_answer_seconds(photo: Path, run: str | None, timeout: float = 300.0,
                         runtime: str = "auto") -> tuple[float, float]:
    """Wall seconds from starting a fresh ``emologic query PHOTO`` to its first
    answer line, and the CPU seconds (user + system) the whole process used.

    The CPU figure barely depends on what else the machine runs: on a shared
    host it says what the wall time would be on an idle one (the query runs
    mostly on one core)."""
    code = "import sys; from experiments.cli import main; sys.exit(main())"
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *_query_argv([str(photo)], run, runtime)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seconds = None
    try:
        for line in proc.stdout:
            if line.startswith(ANSWER_PREFIX) and seconds is None:
                seconds = time.perf_counter() - start
            if time.perf_counter() - start > timeout:
                break
    finally:
        proc.stdout.close()
        err = proc.stderr.read()
        proc.stderr.close()
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own resource usage
        proc.returncode = os.waitstatus_to_exitcode(status)
    if seconds is None:
        last = (err.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"bench query: `emologic query {photo}` gave no answer (exit {proc.returncode}): {last}")
    return seconds, usage.ru_utime + usage.ru_stime


def folder_images_per_s(images: list[Path], run: str | None, passes: int = 2, runtime: str = "auto") -> dict:
    from experiments.query.open_program import open_program
    from experiments.query.results import QueryError

    tp = open_program(run, prior=run is None, runtime=runtime)
    tp.answer([images[0]])  # construction and first calls are not throughput
    best, cpu, answered = None, None, 0
    for _ in range(passes):
        start, start_cpu = time.perf_counter(), time.process_time()
        results = tp.answer(images)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
        answered = sum(not isinstance(r, QueryError) for r in results)
        if best is None or seconds < best:
            best, cpu = seconds, cpu_seconds
    return {"model": tp.describe(), "runtime": runtime_of(tp), "images": len(images), "answered": answered,
            "seconds": round(best, 3),
            "images_per_s": round(len(images) / best, 2), "cpu_s": round(cpu, 3),
            "images_per_cpu_s": round(len(images) / cpu, 2)}


def runtime_of(tp) -> str:
    """What answered: a served copy (onnxruntime + numpy) or torch."""
    from experiments.query.served import ServedProgram

    return "served copy (onnxruntime + numpy)" if isinstance(tp, ServedProgram) else "torch"


def bench_query(images_dir: str | None = None, run: str | None = None, cold_runs: int = 5,
                n_images: int = 20, seed: int = 0, runtime: str = "auto") -> dict:
    """Both figures (see module doc); ``images_dir``: a folder of your own (its first image is the cold photo)."""
    from experiments.query.results import expand_inputs

    if cold_runs < 1:
        raise UserError(f"--cold-runs must be at least 1, got {cold_runs}")
    with tempfile.TemporaryDirectory(prefix="emologic-bench-query-") as tmp:
        if images_dir is None:
            images = write_default_images(Path(tmp), n_images, seed)
        else:
            images = [Path(p) for p in expand_inputs([images_dir]) if isinstance(p, str)]
            if not images:
                raise UserError(f"--images {images_dir}: no image files there")
        photo = images[0]
        cold, cold_cpu = zip(*(first_answer_seconds(photo, run, runtime=runtime) for _ in range(cold_runs)))
        folder = folder_images_per_s(images, run, runtime=runtime)
    return {
        "cpu_cores": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "first_answer_cold": {
            "photo": photo.name, "runs": cold_runs, "first_s": round(cold[0], 2),
            "min_s": round(min(cold), 2), "median_s": round(statistics.median(cold), 2),
            "max_s": round(max(cold), 2), "all_s": [round(c, 2) for c in cold],
            "cpu_median_s": round(statistics.median(cold_cpu), 2), "cpu_all_s": [round(c, 2) for c in cold_cpu],
        },
        "folder": folder,
    }
