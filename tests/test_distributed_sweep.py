"""The main job's units (and stage 0) on a local Ray (2 CPUs, started here): the same
run directory and results.json figures as a serial run, a worker that dies is
retried, and --resume finishes a run interrupted serially or on Ray."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from experiments.harness import loop as harness
from experiments.harness.config import HarnessConfig
from experiments.harness import run
from experiments.runs import load_state
from tests.run_helpers import interrupt_at

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.filterwarnings("ignore:SceneBackbone")

REGIMES = ["frozen", "joint"]
SEEDS = [0, 1]
TIMING_KEYS = {"wall_time_s", "timings"}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """The data and cache of every run here (so stage 0 is trained once, then reused from the cache)."""
    return tmp_path_factory.mktemp("sweep")


def tiny(shared, runs) -> HarnessConfig:
    return HarnessConfig(n_images=60, seeds=SEEDS, regimes=REGIMES, epochs=1, stage0_epochs=1, head_epochs=2,
                         progress=False, runs_dir=str(runs), cache=str(shared / "cache"),
                         data_root=str(shared / "data"))


def figures(obj):
    """results.json without what depends on the clock."""
    if isinstance(obj, dict):
        return {k: figures(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [figures(v) for v in obj]
    return obj


def without_wall_time(results: dict) -> dict:
    out = figures(results)
    for r in out["regimes"].values():  # means and stds over seeds of the wall time
        r["summary"] = {k: v for k, v in r["summary"].items() if not k.startswith("wall_time")}
    return out


@pytest.fixture(scope="module")
def serial(shared):
    run_dir = run(tiny(shared, shared / "serial"), argv=[])
    return json.loads((run_dir / "results.json").read_text())


def die_once(marker: str):
    """A unit hook: the first unit to finish kills its worker process before returning its result."""
    def hook(regime: str, seed: int) -> None:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(1)
    return hook


def test_distributed_run_equals_serial_and_survives_a_dead_worker(shared, serial, tmp_path):
    from experiments.harness.sweep import RaySweep

    marker = tmp_path / "killed"
    shutil.rmtree(shared / "cache" / "stage0")  # so stage 0 is trained on Ray workers, not reused
    run_dir = run(tiny(shared, tmp_path / "runs"), argv=[], sweep=RaySweep(workers=2, hook=die_once(str(marker))))
    assert marker.exists()  # a worker did die, and its unit was run again
    results = json.loads((run_dir / "results.json").read_text())
    assert without_wall_time(results) == without_wall_time(serial)
    state = load_state(run_dir)
    assert sorted(state.completed()) == sorted((r, s) for r in REGIMES for s in SEEDS)  # each unit once
    for seed in SEEDS:
        for regime in REGIMES:
            unit = run_dir / "checkpoints" / f"seed{seed}" / regime
            assert (unit / "model.json").is_file() and (unit / "rules.json").is_file()
            assert (unit / "networks" / "face_emotion" / "config.json").is_file()
    for seed in SEEDS:  # stage 0 per seed, trained on a worker and saved by the driver
        assert (run_dir / "checkpoints" / f"stage0-seed{seed}" / "stage0.json").is_file()
    assert list((shared / "cache" / "stage0").iterdir())  # and kept for the next run, as a serial run does
    assert list((run_dir / "tb").iterdir())  # the workers' TensorBoard events came back
    assert (run_dir / "report.md").is_file() and (run_dir / "plots" / "confusions.png").is_file()


def test_serial_interruption_resumed_on_ray(shared, serial, tmp_path, monkeypatch):
    from experiments.harness.image_track import ImageTrack
    from experiments.harness.sweep import RaySweep

    cfg = tiny(shared, tmp_path / "runs")
    real = interrupt_at(monkeypatch, "joint")
    with pytest.raises(KeyboardInterrupt):
        run(cfg, argv=[])
    monkeypatch.setattr(ImageTrack, "run_regime", real)
    run_dir = next((tmp_path / "runs").glob("2*"))
    assert load_state(run_dir).completed() == [("frozen", 0)]
    run(cfg, argv=[], resume=str(run_dir), sweep=RaySweep(workers=2))
    assert without_wall_time(json.loads((run_dir / "results.json").read_text())) == without_wall_time(serial)


def test_ray_interruption_resumed_serially(shared, serial, tmp_path, monkeypatch):
    from experiments.harness.sweep import RaySweep

    cfg = tiny(shared, tmp_path / "runs")
    real = harness.save_state
    calls = []

    def save_then_interrupt(run_dir, state):
        real(run_dir, state)
        calls.append(len(state.completed()))
        if len(state.completed()) == 1:  # the first unit arrived and is saved: Ctrl-C
            raise KeyboardInterrupt

    monkeypatch.setattr(harness, "save_state", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, argv=[], sweep=RaySweep(workers=2))
    monkeypatch.setattr(harness, "save_state", real)
    run_dir = next((tmp_path / "runs").glob("2*"))
    assert len(load_state(run_dir).completed()) == 1 and not (run_dir / "results.json").exists()
    run(cfg, argv=[], resume=str(run_dir))
    results = json.loads((run_dir / "results.json").read_text())
    assert without_wall_time(results) == without_wall_time(serial)
