"""--device and --ray on the command line: defaults, and one line for what cannot run here."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments.harness.config import HarnessConfig
from neural.cluster import resolve_device
from neural.common import UserError

ROOT = Path(__file__).resolve().parent.parent


def test_default_device_is_cuda_when_available_else_cpu():
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None) == want and resolve_device("auto") == want
    assert HarnessConfig().resolved().device == want
    assert resolve_device("cpu") == "cpu"


def test_a_device_that_is_not_here_is_one_user_error():
    with pytest.raises(UserError, match="not a torch device"):
        resolve_device("tpu7")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            HarnessConfig(device="cuda").validate()


def test_deepproblog_engine_is_refused_off_the_cpu(monkeypatch):
    monkeypatch.setattr("neural.cluster.resolve_device", lambda d: d)  # as if the GPU were there
    with pytest.raises(UserError, match="deepproblog runs on the CPU only"):
        HarnessConfig(device="cuda", engine="deepproblog").validate()


def _script(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "experiments" / "joint_vs_frozen.py"), *args],
                          capture_output=True, text=True, cwd=cwd)


def test_main_script_offers_ray_and_device():
    out = _script("--help", cwd=ROOT)
    assert out.returncode == 0 and "--ray [ADDRESS]" in out.stdout and "--device" in out.stdout


def test_workers_without_ray_is_one_line(tmp_path):
    out = _script("--workers", "2", "--runs-dir", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0 and "add --ray" in out.stderr


def test_cache_build_without_ray_installed_is_one_line(tmp_path):
    # a Python where `import ray` fails: the one line names the extra to install
    code = ("import sys; sys.modules['ray'] = None; from experiments.cli import main; "
            f"sys.exit(main(['cache', 'build', '--dataset', 'synthetic', '--root', {str(tmp_path / 'd')!r}, "
            f"'--set', 'n_images=8', '--cache', {str(tmp_path / 'c')!r}, '--ray', '--no-progress']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2, out.stderr
    assert 'pip install -e ".[distributed]"' in out.stderr and "Traceback" not in out.stderr
