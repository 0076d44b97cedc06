"""Run directories, atomic writes, resume state and the TensorBoard wrapper."""
import json
import os
import warnings

import numpy as np
import pytest
import torch

import experiments.runs as runs
import experiments.tensorboard as tensorboard
from experiments.runs import (
    RunState,
    RunStateError,
    atomic_write_json,
    atomic_write_text,
    config_fingerprint,
    format_command,
    list_runs,
    load_state,
    new_run_dir,
    resolve_run,
    save_state,
    write_resolved_config,
)
from experiments.tensorboard import TBLogger
from neural.common import UserError


def test_new_run_dirs_are_unique_and_latest_follows(tmp_path):
    root = tmp_path / "runs"
    a = new_run_dir(root, name="smoke")
    b = new_run_dir(root, name="smoke")  # same second: gets a suffix
    assert a != b and a.is_dir() and b.is_dir()
    assert a.name.endswith("-smoke") and a.parent == root
    assert (root / "latest.txt").read_text().strip() == b.name
    if (root / "latest").is_symlink():
        assert os.readlink(root / "latest") == b.name  # relative: the root can move
    assert resolve_run(None, root) == b
    assert resolve_run("latest", root) == b
    assert resolve_run(root / "latest", root) == b
    assert resolve_run(a.name, root) == a
    assert resolve_run(str(a), root="elsewhere") == a
    assert list_runs(root) == sorted([a.name, b.name])
    assert not list(root.glob(".*tmp"))


def test_latest_without_symlink(tmp_path):
    root = tmp_path / "runs"
    run = new_run_dir(root)
    if (root / "latest").is_symlink():
        (root / "latest").unlink()  # as on a system without symlinks
    assert resolve_run(root / "latest", root) == run
    assert resolve_run("latest", root) == run


def test_resolve_unknown_lists_runs(tmp_path):
    root = tmp_path / "runs"
    with pytest.raises(UserError, match="no runs"):
        resolve_run(None, root)
    run = new_run_dir(root, name="x")
    with pytest.raises(UserError, match=f"available runs.*{run.name}"):
        resolve_run("nope", root)


def test_bad_run_name(tmp_path):
    with pytest.raises(UserError, match="invalid run name"):
        new_run_dir(tmp_path, name="../escape")


def test_atomic_writes(tmp_path):
    p = atomic_write_text(tmp_path / "sub" / "a.txt", "héllo\n")
    assert p.read_text(encoding="utf-8") == "héllo\n"
    atomic_write_text(p, "second")
    assert p.read_text() == "second"
    obj = {"t": torch.tensor([1.5, 2.0]), "n": np.float32(0.25), "i": np.int64(3),
           "path": tmp_path, "s": {2, 1}, "nan": float("nan")}
    j = atomic_write_json(tmp_path / "r.json", obj)
    back = json.loads(j.read_text())
    assert back["t"] == [1.5, 2.0] and back["n"] == 0.25 and back["i"] == 3
    assert back["path"] == str(tmp_path) and back["s"] == [1, 2]
    assert sorted(os.listdir(tmp_path)) == ["r.json", "sub"]  # no temp files left


def test_atomic_write_failure_keeps_old_file(tmp_path):
    p = atomic_write_text(tmp_path / "a.json", "old")
    with pytest.raises(TypeError):
        atomic_write_json(p, {"x": object()})
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.json"]


def test_write_resolved_config(tmp_path):
    cfg = {"epochs": 3, "seeds": [0, 1], "lr": 0.1}
    p = write_resolved_config(tmp_path, cfg, ["experiments/joint_vs_frozen.py", "--seeds", "0 1"])
    doc = json.loads(p.read_text())
    assert p.name == "config.json"
    assert doc["config"] == cfg
    assert doc["command"] == "python experiments/joint_vs_frozen.py --seeds '0 1'"
    assert doc["fingerprint"] == config_fingerprint({"lr": 0.1, "seeds": [0, 1], "epochs": 3})
    assert doc["fingerprint"] != config_fingerprint({**cfg, "epochs": 4})
    assert "torch" in doc["versions"] and "klaycircuits" in doc["versions"]
    # what moves float results besides the config: thread count and CPU kernel level
    import torch

    assert doc["compute"]["torch_threads"] == torch.get_num_threads()
    assert doc["compute"]["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert format_command(["emologic", "rules", "runs/latest"]) == "emologic rules runs/latest"


def test_state_roundtrip_and_resume(tmp_path):
    assert load_state(tmp_path).completed() == []
    state = RunState()
    state.ensure_config("abc")
    state.mark_done("frozen", 0, {"metrics": {"accuracy": 0.5}})
    state.mark_done("joint", 1, {"metrics": {"accuracy": 0.6}})
    save_state(tmp_path, state)
    back = load_state(tmp_path)
    assert back.completed() == [("frozen", 0), ("joint", 1)]
    assert back.is_done("joint", 1) and not back.is_done("joint", 0)
    assert back.result("frozen", 0) == {"metrics": {"accuracy": 0.5}}
    back.ensure_config("abc")
    with pytest.raises(RunStateError, match="another config"):
        back.ensure_config("def")


def test_damaged_state(tmp_path):
    (tmp_path / "state.json").write_text("{ not json")
    with pytest.raises(UserError, match="damaged"):
        load_state(tmp_path)


def test_tb_logger_writes_events(tmp_path):
    with TBLogger(tmp_path / "tb") as tb:
        assert tb.enabled
        tb.add_scalar("frozen/loss", 1.0, 0)
        tb.add_dict("frozen/val", {"accuracy": 0.5, "mae": None}, 1)
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_tb_logger_without_tensorboard(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(tensorboard, "_TB_WARNED", False)
    with pytest.warns(RuntimeWarning, match="pip install tensorboard"):
        tb = TBLogger(tmp_path / "tb")
    assert not tb.enabled
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the warning is given once only
        tb2 = TBLogger(tmp_path / "tb2")
    tb.add_scalar("x", 1.0, 0)
    tb2.close()
    tb.close()
    assert not (tmp_path / "tb").exists()
