"""Ray, the optional engine for more than one process or machine, and the torch device.

    ray = connect_ray(None)            # a local Ray on this machine (or the one already running)
    ray = connect_ray("10.0.0.5:6379") # a cluster started with `ray start --head`
    device = resolve_device(None)      # "cuda" when a GPU is visible, else "cpu"

Ray is the ``distributed`` extra (``pip install -e ".[distributed]"``); it is
imported only here and only when asked for, so everything else works without it.
"""
from __future__ import annotations

from neural.common import UserError

INSTALL_HINT = 'pip install -e ".[distributed]"'
#: ``--ray`` without an address: start (or join) a Ray on this machine
LOCAL = "local"


def import_ray():
    """The ``ray`` module, or a one-line :class:`UserError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(f"--ray needs Ray, the optional 'distributed' extra: {INSTALL_HINT}") from None
    return ray


def connect_ray(address: str | None, num_cpus: int | None = None):
    """Connect to Ray at ``address`` (``None`` or ``"local"``: this machine) and return the module.

    A Ray this process already started (a test's, a notebook's) is reused as it is.
    ``num_cpus`` limits a local Ray started here (default: every core).
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray
    local = address in (None, "", LOCAL)
    try:
        if local:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)
        else:
            ray.init(address=address, log_to_driver=True)
    except ConnectionError as exc:
        raise UserError(f"cannot reach a Ray cluster at {address!r} ({exc}); start one with `ray start --head`") from None
    return ray


def resolve_device(device: str | None) -> str:
    """``device`` checked (``cpu``, ``cuda``, ``cuda:N``, ``mps``); ``None``/``"auto"``: cuda when available."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:N, mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU is visible here (torch.cuda.is_available() is False)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {device}: MPS is not available on this machine")
    return str(dev)


def torch_device(device: str | None):
    """:func:`resolve_device` as a ``torch.device`` (what training loops move their tensors to)."""
    import torch

    return torch.device(resolve_device(device))


def add_device_argument(parser) -> None:
    """``--device`` (default: cuda when available, else cpu) on an argparse parser."""
    parser.add_argument("--device", default=None,
                        help="where the networks run: cpu, cuda, cuda:N, mps (default: cuda when available, else cpu)")


def add_ray_arguments(parser, what: str) -> None:
    """``--ray [ADDRESS]`` and ``--workers N`` on an argparse parser; ``what`` is what Ray spreads."""
    parser.add_argument("--ray", nargs="?", const=LOCAL, default=None, metavar="ADDRESS",
                        help=f"spread {what} over Ray workers; ADDRESS of a cluster (`ray start --head` prints it; "
                             f"'auto' finds the local one), omitted: start a Ray on this machine "
                             f"(needs {INSTALL_HINT})")
    parser.add_argument("--workers", type=int, default=None,
                        help="with --ray: at most this many workers at once (default: as many as the cluster has CPUs "
                             "or GPUs for)")
