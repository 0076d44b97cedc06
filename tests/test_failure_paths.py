"""User errors are one line and a non-zero exit; runs and workers clean up after failures."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from experiments.harness import loop as harness
from experiments.harness.image_track import ImageTrack
from experiments.cli import main as emologic
from experiments.harness.config import HarnessConfig
from experiments.joint_vs_frozen import main as joint_vs_frozen
from experiments.runs import RunState, RunStateError, list_runs, mark_latest, new_run_dir, save_state, write_resolved_config
from logic.program import ProgramError, load_program, resolve_program_path
from neural.registry import get_network
from tests.test_cache_truth import write_csv_set

ROOT = Path(__file__).resolve().parent.parent


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def six_emotion_program(tmp_path) -> Path:
    text = resolve_program_path("context_selection").read_text()
    bad = text.replace("nn(face_emotion, [X], E, [angry, disgust, fear, happy, sad, surprise, neutral])",
                       "nn(face_emotion, [X], E, [angry, disgust, fear, happy, sad, surprise])")
    assert bad != text
    path = tmp_path / "six.pl"
    path.write_text(bad)
    return path


def test_nn_with_fewer_values_than_outputs_is_refused_before_training(tmp_path, capsys):
    path = six_emotion_program(tmp_path)
    with pytest.raises(ProgramError, match="lists 6 values .* outputs 7"):
        load_program(path)
    runs = tmp_path / "runs"
    rc = joint_vs_frozen(["--program", str(path), "--n-images", "24", "--runs-dir", str(runs),
                          "--data-root", str(tmp_path / "data"), "--no-progress"])
    assert rc == 2 and "outputs 7" in one_line_error(capsys)
    assert list_runs(runs) == []  # the failed run left no directory behind


def test_bind_refuses_a_network_of_another_width():
    program = load_program("context_selection")
    nets = {"scene2emotion": get_network("scene2emotion", n_classes=6), "face_emotion": get_network("face_emotion")}
    with pytest.raises(ProgramError, match="scene2emotion.*outputs 6"):
        program.bind(nets)


@pytest.mark.parametrize("argv, words", [
    (["--rule-lr", "-1"], "--rule-lr -1"),
    (["--net-lr", "-0.1"], "--net-lr -0.1"),
    (["--face-weights", "/nonexistent"], "/nonexistent"),
    (["--seeds", "0", "0"], "--seeds"),
])
def test_bad_options_are_refused_at_validation(argv, words, tmp_path, capsys):
    assert joint_vs_frozen([*argv, "--runs-dir", str(tmp_path / "runs")]) == 2
    assert words in one_line_error(capsys)
    assert not (tmp_path / "runs").exists()  # refused before anything was created


def test_rules_on_a_truncated_results_file(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints" / "seed0" / "frozen").mkdir(parents=True)
    (run / "checkpoints" / "seed0" / "frozen" / "rules.json").write_text("{}")
    (run / "config.json").write_text(json.dumps({"config": {"seeds": [0]}}))
    (run / "results.json").write_text('{"dataset": "synthetic", "regimes": {"fro')
    assert emologic(["rules", str(run)]) == 2
    assert "results.json" in one_line_error(capsys)


@pytest.mark.parametrize("mangle", [lambda m: {**m, "samples": {"a": 1}}, lambda m: [m]])
def test_verify_a_malformed_manifest(tmp_path, synthetic_small, mangle, capsys):
    cache = tmp_path / "cache"
    assert emologic(["cache", "build", "--dataset", "synthetic", "--root", synthetic_small.source,
                     "--cache", str(cache), "--split", "val", "--no-progress"]) == 0
    manifest = cache / "val" / "manifest.json"
    manifest.write_text(json.dumps(mangle(json.loads(manifest.read_text()))))
    capsys.readouterr()
    assert emologic(["cache", "verify", str(cache)]) == 1
    out = capsys.readouterr()
    assert "malformed manifest" in out.out and "Traceback" not in out.err
    assert emologic(["cache", "info", str(cache)]) == 2
    assert "malformed manifest" in one_line_error(capsys)


def test_resume_refusal_names_the_options_and_the_command(tmp_path):
    runs = tmp_path / "runs"
    first = HarnessConfig(n_images=24, epochs=1, runs_dir=str(runs))
    run_dir = new_run_dir(runs)
    argv = ["--n-images", "24", "--epochs", "1", "--runs-dir", str(runs)]
    write_resolved_config(run_dir, first.resolved().to_dict(), argv)
    save_state(run_dir, RunState())
    with pytest.raises(RunStateError) as exc:
        harness.open_run(HarnessConfig(runs_dir=str(runs)).resolved(), ["--resume", str(run_dir)], str(run_dir))
    msg = str(exc.value)
    assert "--n-images: run 24, now 2000" in msg and "--epochs: run 1, now 5" in msg
    assert f"python experiments/joint_vs_frozen.py --n-images 24 --epochs 1 --runs-dir {runs} --resume {run_dir}" in msg
    # the same options, and only --no-progress changed: resumes
    harness.open_run(HarnessConfig(n_images=24, epochs=1, runs_dir=str(runs), progress=False).resolved(),
                     argv, str(run_dir))


def test_latest_moves_only_when_a_run_finishes(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    done = new_run_dir(runs)
    mark_latest(done)
    cfg = HarnessConfig(n_images=24, seeds=[0], epochs=1, stage0_epochs=1, head_epochs=1, progress=False,
                        regimes=["frozen", "late_fusion"], runs_dir=str(runs), cache=str(tmp_path / "cache"),
                        data_root=str(tmp_path / "data"))
    real = ImageTrack.run_regime

    def failing(self, regime, *a, **k):
        if regime.name == "late_fusion":
            raise RuntimeError("late_fusion exploded")
        return real(self, regime, *a, **k)

    monkeypatch.setattr(ImageTrack, "run_regime", failing)
    with pytest.raises(RuntimeError):
        harness.run(cfg, argv=[])
    failed = [runs / n for n in list_runs(runs) if runs / n != done]
    assert len(failed) == 1 and (failed[0] / "FAILED").is_file()  # frozen finished: kept, marked
    assert (runs / "latest").resolve() == done.resolve()
    assert (runs / "latest.txt").read_text().strip() == done.name

    monkeypatch.setattr(ImageTrack, "run_regime", real)
    finished = harness.run(cfg, argv=[], resume=str(failed[0]))
    assert finished == failed[0] and not (finished / "FAILED").exists()
    assert (runs / "latest").resolve() == finished.resolve()


def _children(pid: int) -> list[int]:
    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def test_generator_workers_die_with_their_parent(tmp_path):
    code = ("from pipelines.datasets.synthetic import generate_synthetic\n"
            "from pipelines.datasets.synthetic_config import SyntheticConfig\n"
            f"generate_synthetic({str(tmp_path / 'set')!r}, SyntheticConfig(n_images=4000), workers=2)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)
    try:
        deadline = time.time() + 120
        while len(workers := _children(parent.pid)) < 2 and time.time() < deadline:
            time.sleep(0.2)
        assert len(workers) >= 2, "the generator started no workers"
        time.sleep(1.0)  # past the initializer
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.time() + 15
    while (alive := [p for p in workers if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]) \
            and time.time() < deadline:
        time.sleep(0.2)
    for p in alive:  # clean up before failing
        os.kill(p, signal.SIGKILL)
    assert not alive, "workers outlived their killed parent"


def test_python_dash_m_cli_registers_the_commands():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "experiments.cli", "--help"], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0 and "cache" in out.stdout and "rules" in out.stdout, out.stdout + out.stderr


def test_cache_build_takes_a_csv_file_as_root(tmp_path, capsys):
    path, _ = write_csv_set(tmp_path / "set", n_per_split=1)
    assert emologic(["cache", "build", "--dataset", "csv", "--root", str(path), "--cache", str(tmp_path / "c"),
                     "--no-progress"]) == 0
    assert "4/4 cached" not in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "c").iterdir() if p.is_dir()) == ["pretrain", "test", "train", "val"]
