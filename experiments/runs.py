"""Run directories: creation, lookup, atomic writes, resume state (TensorBoard: ``experiments.tensorboard``).

A run directory looks like::

    runs/
      20250101-120000-smoke/      one run (timestamp, optional name)
        config.json               resolved config + exact command (write_resolved_config)
        state.json                completed (regime, seed) units, for --resume (save_state)
        results.json, report.md, *.png, checkpoints ...   (written by the harness)
        tb/                       TensorBoard event files (experiments.tensorboard.TBLogger)
      latest.txt                  name of the newest run (always written)
      latest -> 20250101-...      symlink to it, where the OS allows symlinks

Every file is written atomically (temp file in the same directory, fsync,
``os.replace``), so an interrupted run (Ctrl-C, crash, power loss) leaves each
file either old or new, never half-written.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from neural.common import UserError, atomic_write_bytes  # noqa: F401  (re-exported)

LATEST = "latest"
LATEST_FILE = "latest.txt"
CONFIG_FILE = "config.json"
STATE_FILE = "state.json"
STATE_VERSION = 1


class RunNotFoundError(UserError, FileNotFoundError):
    """A run name or path that does not resolve to a run directory."""


class RunStateError(UserError):
    """A damaged or incompatible ``state.json``."""


# --------------------------------------------------------------------------- #
# Atomic writes
# --------------------------------------------------------------------------- #

def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    """JSON for the types results and configs contain besides the built-ins."""
    if hasattr(obj, "detach"):  # torch.Tensor
        obj = obj.detach().cpu().numpy()
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def to_json(obj: Any) -> str:
    """The JSON text :func:`atomic_write_json` writes (indented, trailing newline).

    Tensors, numpy values, paths, dataclasses and sets are converted. NaN and
    infinity are written as ``NaN``/``Infinity`` (Python's json reads them back).
    """
    return json.dumps(obj, indent=2, default=_json_default) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically; returns the path."""
    return atomic_write_text(path, to_json(obj))


# --------------------------------------------------------------------------- #
# Run directories
# --------------------------------------------------------------------------- #
def _update_latest(root: Path, run_dir: Path) -> None:
    atomic_write_text(root / LATEST_FILE, run_dir.name + "\n")
    link = root / LATEST
    if link.exists() and not link.is_symlink():
        return  # a real file or directory called "latest": leave it alone
    tmp = root / f".{LATEST}.{os.getpid()}.tmp"
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(run_dir.name, tmp, target_is_directory=True)
        os.replace(tmp, link)
    except (OSError, NotImplementedError):  # no symlinks here (e.g. Windows without privilege)
        try:
            tmp.unlink()
        except OSError:
            pass


def mark_latest(run_dir: str | os.PathLike) -> None:
    """Point ``latest`` (and ``latest.txt``) of the runs root at ``run_dir``."""
    run_dir = Path(run_dir)
    _update_latest(run_dir.parent, run_dir)


def new_run_dir(root: str | os.PathLike = "runs", name: str | None = None, latest: bool = True) -> Path:
    """Create a fresh run directory ``root/YYYYmmdd-HHMMSS[-name]`` and, with ``latest``, point
    ``latest`` at it (the harness points it only when the run finishes: :func:`mark_latest`).

    The name is made unique with ``-2``, ``-3``... when the directory exists
    (creation is race-free: ``mkdir`` without ``exist_ok``). ``name`` may only
    contain letters, digits, ``-``, ``_`` and ``.``.
    """
    root = Path(root)
    if name is not None:
        bad = sorted({c for c in name if not (c.isalnum() or c in "-_.")})
        if not name or bad or name.startswith("."):
            raise UserError(f"invalid run name {name!r}: use letters, digits, '-', '_' and '.'")
    root.mkdir(parents=True, exist_ok=True)
    base = datetime.now().strftime("%Y%m%d-%H%M%S") + (f"-{name}" if name else "")
    for i in range(1, 10_000):
        run_dir = root / (base if i == 1 else f"{base}-{i}")
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        if latest:
            _update_latest(root, run_dir)
        return run_dir
    raise RuntimeError(f"could not create a unique run directory under {root}")


def list_runs(root: str | os.PathLike = "runs") -> list[str]:
    """Names of the run directories under ``root``, oldest first (by name)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
    )


def _read_latest(root: Path) -> Path | None:
    pointer = root / LATEST_FILE
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        if name and (root / name).is_dir():
            return root / name
    link = root / LATEST
    if link.is_symlink() and link.is_dir():
        return root / os.readlink(link)
    return None


def resolve_run(path_or_name: str | os.PathLike | None, root: str | os.PathLike = "runs") -> Path:
    """The run directory meant by ``path_or_name``.

    Accepts ``None`` or ``"latest"`` (the newest run under ``root``), a path to a
    run directory (also ``some/root/latest``, even where symlinks are
    unavailable), or the name of a run under ``root``. Raises
    :class:`RunNotFoundError` (a ``UserError``) listing the available runs.
    """
    root = Path(root)
    target = LATEST if path_or_name is None else os.fspath(path_or_name)
    p = Path(target)
    found = None
    if target == LATEST:
        found = _read_latest(root)
    elif p.name == LATEST and (p.is_symlink() or not p.exists()):
        found = _read_latest(p.parent)  # "runs/latest", with or without symlinks
    if found is not None:
        return found
    if target != LATEST:
        if p.is_dir():
            return p
        if (root / target).is_dir():
            return root / target

    runs = list_runs(root)
    where = f"under {root}/"
    if runs:
        shown = runs[-10:]
        more = f" (and {len(runs) - len(shown)} older)" if len(runs) > len(shown) else ""
        hint = f"available runs {where}: {', '.join(shown)}{more}"
    else:
        hint = f"there are no runs {where} yet; run `python experiments/joint_vs_frozen.py` first"
    raise RunNotFoundError(f"run {target!r} not found; {hint}")


# --------------------------------------------------------------------------- #
# Config
# --------------------------------------------------------------------------- #
def format_command(argv: Sequence[str]) -> str:
    """A shell command that repeats ``argv`` (``python`` prefixed for a ``.py`` script)."""
    argv = [os.fspath(a) for a in argv]
    cmd = shlex.join(argv)
    return f"python {cmd}" if argv and argv[0].endswith(".py") else cmd


def config_fingerprint(config: Any) -> str:
    """Short sha256 of the config's canonical JSON, to detect a changed config on resume."""
    canon = json.dumps(config, sort_keys=True, default=_json_default)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]


def write_resolved_config(run_dir: str | os.PathLike, config_dict: Any, argv: Sequence[str]) -> Path:
    """Write ``run_dir/config.json``: the resolved config and how it was produced.

    Contents: ``command`` (see :func:`format_command`), ``argv``, ``config``,
    ``fingerprint`` (:func:`config_fingerprint`), ``created`` (ISO time) and the
    ``environment`` (:func:`environment`). Returns the path.
    """
    doc = {
        "command": format_command(argv),
        "argv": [os.fspath(a) for a in argv],
        "config": config_dict,
        "fingerprint": config_fingerprint(config_dict),
        "created": datetime.now().isoformat(timespec="seconds"),
        **environment(),
    }
    return atomic_write_json(Path(run_dir) / CONFIG_FILE, doc)


#: Libraries whose version can move a run's numbers (kernels, summation order, compilation).
_NUMERIC_LIBRARIES = ("torch", "torchvision", "numpy", "numba", "klaycircuits", "pysdd", "problog", "deepproblog",
                      "facenet-pytorch", "transformers", "scikit-learn")


def environment() -> dict:
    """What moves a run's floating-point results besides its config: library
    versions, torch's thread count and CPU kernel level, BLAS threading.

    Training sums in float32; a different thread count or kernel (AVX2 vs
    AVX-512) changes the summation order, and a network trained for several
    epochs then ends a little elsewhere. Two runs agree bit for bit only when all
    of this agrees. Also which plug-ins were loaded: a run that read a plug-in's
    networks and features needs it loaded again to be queried."""
    from importlib import metadata

    import torch

    from experiments.plugins import loaded_plugins
    from neural.compute import denormals_flushed

    versions = {"python": platform.python_version()}
    for name in _NUMERIC_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    blas = []
    try:
        from threadpoolctl import threadpool_info

        blas = [{k: i.get(k) for k in ("internal_api", "num_threads", "architecture")} for i in threadpool_info()]
    except ImportError:  # threadpoolctl comes with scikit-learn; without it BLAS goes unrecorded
        pass
    return {
        "versions": versions,
        "compute": {
            "torch_threads": torch.get_num_threads(),
            "flush_denormals": denormals_flushed(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "processor": platform.processor() or None,
            "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                    "OPENBLAS_CORETYPE", "ATEN_CPU_CAPABILITY")},
            "blas": blas,
        },
        # the plug-ins (experiments.plugins) this process imported and what each registered
        "plugins": loaded_plugins(),
    }


# --------------------------------------------------------------------------- #
# Resume state
# --------------------------------------------------------------------------- #
@dataclass
class RunState:
    """Which ``(regime, seed)`` units of a run are complete, with their results.

    ``fingerprint`` is the config fingerprint the run was started with; a resume
    under another config is refused by :meth:`ensure_config`.
    """

    fingerprint: str | None = None
    units: dict[tuple[str, int], dict] = field(default_factory=dict)

    def is_done(self, regime: str, seed: int) -> bool:
        return (regime, int(seed)) in self.units

    def mark_done(self, regime: str, seed: int, result: dict) -> None:
        self.units[(regime, int(seed))] = result

    def result(self, regime: str, seed: int) -> dict:
        return self.units[(regime, int(seed))]

    def seed_results(self, regime: str, seeds) -> dict[str, dict]:
        """``{str(seed): result}`` of the completed ``seeds`` of ``regime``."""
        return {str(s): self.result(regime, s) for s in seeds if self.is_done(regime, s)}

    def completed(self) -> list[tuple[str, int]]:
        """Completed units in the order they were marked."""
        return list(self.units)

    def ensure_config(self, fingerprint: str) -> None:
        """Adopt ``fingerprint`` for a new state; refuse a resume under another config."""
        if self.fingerprint is None:
            self.fingerprint = fingerprint
        elif self.fingerprint != fingerprint:
            raise RunStateError(
                "cannot resume: this run was started with another config "
                f"(fingerprint {self.fingerprint}, now {fingerprint}); "
                "use the same options or start a new run"
            )

    def to_dict(self) -> dict:
        return {
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint,
            "units": [{"regime": r, "seed": s, "result": res} for (r, s), res in self.units.items()],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "RunState":
        if d.get("version") != STATE_VERSION:
            raise RunStateError(f"unsupported state version {d.get('version')!r} (expected {STATE_VERSION})")
        state = cls(fingerprint=d.get("fingerprint"))
        for unit in d.get("units", []):
            state.mark_done(unit["regime"], unit["seed"], unit["result"])
        return state


def load_state(run_dir: str | os.PathLike) -> RunState:
    """The run's :class:`RunState`; an empty one when the run has none yet."""
    path = Path(run_dir) / STATE_FILE
    if not path.exists():
        return RunState()
    try:
        return RunState.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise RunStateError(f"{path} is damaged ({e}); start a new run") from None


def save_state(run_dir: str | os.PathLike, state: RunState) -> Path:
    """Write the run's state atomically; returns the path."""
    return atomic_write_json(Path(run_dir) / STATE_FILE, state.to_dict())
