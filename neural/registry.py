"""Registry of networks and self-describing checkpoints.

``@register("name", Config)`` on a ``nn.Module`` class whose ``__init__`` takes a
single ``Config`` dataclass; ``get_network(name, **cfg)`` builds one. A checkpoint
is a directory (or a path stem) with ``weights.safetensors`` and ``config.json``
holding ``{"network": name, "config": {...}, "provenance": {...}}`` so that
``load_network`` rebuilds the module, and says where its weights came from
(:mod:`neural.provenance`), without being told what it is.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable

from torch import nn

from neural.common import UserError, atomic_write_bytes
from neural.provenance import Provenance, provenance_of

_REGISTRY: dict[str, tuple[type[nn.Module], type]] = {}


class UnknownNetworkError(UserError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return self.args[0]


def register(name: str, config_cls: type) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make ``cls`` buildable as ``get_network(name, **cfg)``."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"config of {name!r} must be a dataclass")

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY and _REGISTRY[name][0] is not cls:
            raise ValueError(f"network {name!r} is already registered")
        _REGISTRY[name] = (cls, config_cls)
        cls.registry_name = name
        return cls

    return deco


def _ensure_builtin() -> None:
    # Import the modules that register the built-in networks (they import us,
    # so this happens lazily to avoid a cycle).
    import neural.networks  # noqa: F401


def list_networks() -> list[str]:
    _ensure_builtin()
    return sorted(_REGISTRY)


def network_class(name: str) -> tuple[type[nn.Module], type]:
    _ensure_builtin()
    if name not in _REGISTRY:
        raise UnknownNetworkError(
            f"unknown network {name!r}; known networks: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


def make_config(name: str, **cfg: Any):
    """The ``Config`` of network ``name`` with ``cfg`` applied; unknown keys raise."""
    _, config_cls = network_class(name)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(cfg) - fields)
    if unknown:
        raise TypeError(
            f"unknown config key(s) {', '.join(unknown)} for network {name!r}; "
            f"known keys: {', '.join(sorted(fields))}"
        )
    return config_cls(**cfg)


def output_size(module: nn.Module) -> int | None:
    """How many values ``module`` outputs (the last dim of its probabilities), where it
    says so: ``n_classes`` on the module or its config, or its ``bins``; else ``None``."""
    for value in (getattr(module, "n_classes", None), getattr(getattr(module, "config", None), "n_classes", None)):
        if isinstance(value, int):
            return value
    bins = getattr(module, "bins", None)
    return len(bins) if isinstance(bins, tuple) else None


def default_output_size(name: str) -> int | None:
    """:func:`output_size` of the registered network ``name`` built with its default config
    (read from the class and config, nothing is built); ``None`` when it does not say."""
    cls, config_cls = network_class(name)
    bins = getattr(cls, "bins", None)
    if isinstance(bins, tuple):
        return len(bins)
    field = next((f for f in dataclasses.fields(config_cls) if f.name == "n_classes"), None)
    return field.default if field is not None and isinstance(field.default, int) else None


def get_network(name: str, **cfg: Any) -> nn.Module:
    """Build the registered network ``name`` from keyword config values."""
    cls, _ = network_class(name)
    net = cls(make_config(name, **cfg))
    if not isinstance(getattr(net, "provenance", None), Provenance):
        net.provenance = Provenance.random_init()  # a network that loads real weights sets its own
    return net


def save_network(module: nn.Module, directory: str | os.PathLike) -> Path:
    """Write ``weights.safetensors`` + ``config.json`` into ``directory`` atomically."""
    from safetensors.torch import save

    name = getattr(module, "registry_name", None)
    if name is None or not hasattr(module, "config"):
        raise TypeError(f"{type(module).__name__} is not a registered network with a config")
    directory = Path(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    atomic_write_bytes(directory / "weights.safetensors", save(state))
    meta = {"network": name, "config": dataclasses.asdict(module.config), "provenance": provenance_of(module).to_dict()}
    atomic_write_bytes(directory / "config.json", json.dumps(meta, indent=2).encode())
    return directory


def build_from_checkpoint(directory: str | os.PathLike) -> tuple[nn.Module, dict]:
    """The network a checkpoint's ``config.json`` describes (weights not loaded), and that metadata."""
    meta_path = Path(directory) / "config.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{directory}: not a network checkpoint (no config.json)")
    meta = json.loads(meta_path.read_text())
    return get_network(meta["network"], **meta["config"]), meta


def load_network(directory: str | os.PathLike, map_location: str = "cpu") -> nn.Module:
    """Rebuild a network saved with :func:`save_network`."""
    from safetensors.torch import load_file

    directory = Path(directory)
    module, meta = build_from_checkpoint(directory)
    state = load_file(str(directory / "weights.safetensors"), device=map_location)
    module.load_state_dict(state)
    if meta.get("provenance"):
        module.provenance = Provenance.from_dict(meta["provenance"])
    return module
