"""Resuming a run under its own options: which options differ, and the command that resumes it.

    check_resumable(run_dir, state, cfg.to_dict())   # refuses naming each differing option
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from experiments.runs import CONFIG_FILE, RunState, RunStateError, config_fingerprint, format_command


#: Options that change how a run is carried out, not what it computes: a resume may change them.
RUN_CONTROL_KEYS = ("progress", "rebuild_cache")


def config_differences(saved: dict, now: dict, ignore: Sequence[str] = RUN_CONTROL_KEYS) -> list[str]:
    """``--option: run X, now Y`` for every option (config key) that differs."""
    keys = sorted((set(saved) | set(now)) - set(ignore))
    return [f"--{k.replace('_', '-')}: run {saved.get(k, '<absent>')!r}, now {now.get(k, '<absent>')!r}"
            for k in keys if saved.get(k) != now.get(k)]


def _resume_command(run_dir: Path, argv: Sequence[str], script: str) -> str:
    """The command that resumes ``run_dir``: its own options (any old --resume dropped), then --resume."""
    args, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--resume":
            skip = True
        elif not a.startswith("--resume="):
            args.append(a)
    return format_command([script, *args, "--resume", str(run_dir)])


def check_resumable(run_dir: str | os.PathLike, state: RunState, config: dict,
                    script: str = "experiments/joint_vs_frozen.py") -> None:
    """Refuse to resume ``run_dir`` under options other than its own, naming each one and
    printing the command that resumes it; otherwise adopt ``config``'s fingerprint."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not path.is_file():  # a run from before config.json: the fingerprint decides
        state.ensure_config(config_fingerprint(config))
        return
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        saved_config, argv = saved["config"], saved.get("argv", [])
    except (ValueError, KeyError, TypeError) as e:
        raise RunStateError(f"{path} is damaged ({e}); start a new run") from None
    diffs = config_differences(saved_config, config)
    if diffs:
        raise RunStateError(
            f"cannot resume {run_dir}: it was started with other options ({'; '.join(diffs)}); "
            f"resume it with its own: {_resume_command(run_dir, argv, script)}"
        )
    state.fingerprint = config_fingerprint(config)
