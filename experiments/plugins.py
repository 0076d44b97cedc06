"""Plug-ins: a user's own neural predicates and cached features, in their own modules.

A plug-in is a Python module that registers networks (:func:`neural.registry.register`)
and cached features (:func:`pipelines.feature_registry.register_feature`) when it is
imported. The entry points (``emologic`` and ``experiments/joint_vs_frozen.py``)
import, before they parse their arguments:

* every module named in the ``EMOLOGIC_PLUGINS`` environment variable: comma-separated
  module names (``my_package.my_predicate``) or ``.py`` file paths;
* every entry point of the ``emologic.plugins`` group of the installed distributions
  (``[project.entry-points."emologic.plugins"] light = "my_package.light"``).

A plug-in that fails to import is one line (exit 2). What each plug-in registered is
recorded in a run's ``config.json`` (``environment.plugins``), so that ``emologic
query``/``rules`` on that run can say which plug-in is missing when it is not loaded.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from importlib import metadata
from pathlib import Path

from neural.common import UserError

ENV_VAR = "EMOLOGIC_PLUGINS"
ENTRY_POINT_GROUP = "emologic.plugins"

#: plug-ins imported by this process, in order: {"module", "path", "from", "networks", "features"}
_LOADED: list[dict] = []


class PluginError(UserError):
    pass


def _registered() -> tuple[set[str], set[str]]:
    from neural.registry import list_networks
    from pipelines.feature_registry import list_features

    return set(list_networks()), set(list_features())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _import_file(path: Path):
    if not path.is_file():
        raise PluginError(f"plug-in {path}: no such file ({ENV_VAR})")
    name = f"emologic_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _load_one(entry: str, source: str, importer) -> None:
    if any(p["entry"] == entry for p in _LOADED):
        return  # already imported by this process
    before_nets, before_feats = _registered()
    try:
        module = importer()
    except PluginError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a user's module is one line, not a traceback
        raise PluginError(f"plug-in {entry} ({source}) failed to import: {_first_line(exc)}") from None
    nets, feats = _registered()
    _LOADED.append({"entry": entry, "module": module.__name__, "path": getattr(module, "__file__", None),
                    "from": source, "networks": sorted(nets - before_nets), "features": sorted(feats - before_feats)})


def load_plugins(env: str | None = None) -> list[dict]:
    """Import the plug-ins named by ``EMOLOGIC_PLUGINS`` (or ``env``) and the
    ``emologic.plugins`` entry points; returns what each registered."""
    env = os.environ.get(ENV_VAR, "") if env is None else env
    for entry in (e.strip() for e in env.split(",")):
        if not entry:
            continue
        if entry.endswith(".py") or os.sep in entry:
            path = Path(entry).expanduser().resolve()
            _load_one(str(path), ENV_VAR, lambda path=path: _import_file(path))
        else:
            _load_one(entry, ENV_VAR, lambda entry=entry: importlib.import_module(entry))
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        _load_one(ep.value, f"entry point {ep.name}", ep.load)
    return loaded_plugins()


def load_recorded(recorded: list[dict]) -> None:
    """Import in this process the plug-ins another one loaded (:func:`loaded_plugins` of a
    driver, shipped to a Ray worker with its work: its networks must be importable
    before the worker unpickles them)."""
    load_plugins(",".join(p["entry"] for p in recorded if p.get("from") == ENV_VAR))


def loaded_plugins() -> list[dict]:
    """What :func:`load_plugins` imported (recorded in a run's environment)."""
    return [dict(p) for p in _LOADED]


def missing_plugins(recorded: list[dict] | None) -> list[str]:
    """One phrase per plug-in ``recorded`` by a run whose networks or features are not
    registered in this process, naming them and how to load it."""
    if not recorded:
        return []  # nothing to look up (the registries import torch: a served query need not)
    nets, feats = _registered()
    out = []
    for p in recorded:
        lost = [f"network {n}" for n in p.get("networks", []) if n not in nets] + \
               [f"feature {f}" for f in p.get("features", []) if f not in feats]
        if lost:
            how = f"load it with {ENV_VAR}={p.get('path') or p.get('entry')}" if p.get("from") == ENV_VAR else \
                f"install the distribution that declares its {p.get('from')}"
            out.append(f"plug-in {p.get('module')} ({', '.join(lost)}; {how})")
    return out


def check_run_plugins(run_dir, run_config: dict) -> None:
    """Refuse, in one line, a run whose plug-ins are not loaded (``run_config``: its config.json)."""
    missing = missing_plugins(run_config.get("plugins"))
    if missing:
        raise PluginError(f"{run_dir} was made with {'; '.join(missing)}, which is not loaded")
