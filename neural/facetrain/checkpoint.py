"""The face-training checkpoint: ``out_dir/checkpoint/`` (the network as the registry
saves it, plus ``checkpoint.json``: epoch, monitored metric, config, history),
replaced atomically so a crash never leaves half a checkpoint."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from torch import nn

from neural.registry import save_network


def atomic_json(path: Path, payload: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=2)
    os.replace(tmp, path)


def json_history(history: dict) -> dict:
    return {k: list(v) for k, v in history.items()}


def save_checkpoint(model: nn.Module, out_dir: Path, payload: dict) -> Path:
    """Write ``out_dir/checkpoint`` (network + ``checkpoint.json``) via a temporary directory."""
    final = out_dir / "checkpoint"
    tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=".checkpoint."))
    try:
        save_network(model, tmp)
        atomic_json(tmp / "checkpoint.json", payload)
        old = None
        if final.exists():
            old = out_dir / f".checkpoint.old.{os.getpid()}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_checkpoint_info(path: str | os.PathLike) -> dict:
    """``checkpoint.json`` of a ``train-face`` output directory or its ``checkpoint/``."""
    from neural.facetrain.backbones import checkpoint_dir

    info = checkpoint_dir(path) / "checkpoint.json"
    return json.loads(info.read_text()) if info.is_file() else {}
