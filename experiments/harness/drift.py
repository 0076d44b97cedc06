"""Parameter drift: what did training change inside each network?

The research notes ask "which parameters really train?". Take a
:func:`snapshot` of the model after stage 0, train, then compare with
:func:`parameter_drift`:

    before = snapshot(model)
    train(model)
    drift = parameter_drift(before, model)   # or parameter_drift(before, snapshot(model))
    drift["face.block1"]   # {"l2": ..., "rel_l2": ..., "frac_changed": ..., "n_params": ...}
    drift["total"]

Comparison is exact (``!=``), so a frozen network reports exactly ``0.0`` — the
frozen regime's test relies on that.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

#: Key of the entry that sums over every parameter.
TOTAL = "total"


def snapshot(module: nn.Module, include_buffers: bool = False) -> dict[str, torch.Tensor]:
    """CPU copies of the module's floating-point parameters, by qualified name.

    With ``include_buffers=True`` floating-point buffers (e.g. BatchNorm running
    statistics, which change in train mode even when no parameter is optimised)
    are included too. Integer tensors (``num_batches_tracked``) never are.
    """
    tensors = dict(module.named_parameters())
    if include_buffers:
        tensors.update(module.named_buffers())
    return {
        name: t.detach().to("cpu", copy=True)
        for name, t in tensors.items()
        if t is not None and t.is_floating_point()
    }


def group_name(param_name: str, group_depth: int = 2) -> str:
    """The module prefix a parameter is reported under.

    The first ``group_depth`` components of the *module* path (the name without
    the final parameter component): ``face.block1.conv.weight`` -> ``face.block1``
    (depth 2) or ``face`` (depth 1); ``scene_head.weight`` -> ``scene_head``. A
    parameter registered directly on the root module is its own group.
    """
    if group_depth < 1:
        raise ValueError(f"group_depth must be >= 1, got {group_depth}")
    parts = param_name.split(".")
    module_path = parts[:-1]
    return ".".join(module_path[:group_depth]) if module_path else param_name


def parameter_drift(
    before: Mapping[str, torch.Tensor],
    after: Mapping[str, torch.Tensor] | nn.Module,
    group_depth: int = 2,
) -> dict[str, dict[str, float | int]]:
    """Change of every parameter group between two snapshots.

    Args:
        before: a :func:`snapshot` (name -> tensor) taken before training.
        after: a later snapshot, or the module itself (its floating-point
            parameters, and buffers named in ``before``, are compared).
        group_depth: how many module-path components name a group
            (:func:`group_name`).

    Returns:
        ``{group: {"l2", "rel_l2", "frac_changed", "n_params"}}`` plus a
        ``"total"`` entry over all parameters, where ``l2`` is the L2 norm of
        ``after - before`` over the group's scalars, ``rel_l2 = l2 /
        ||before||`` (0.0 when nothing changed, ``inf`` when a zero group
        changed), ``frac_changed`` the fraction of scalars with
        ``after != before`` (exact), ``n_params`` the number of scalars. Exactly
        unchanged groups report ``0.0``. Sums are taken in float64.

    Raises:
        ValueError: when a name of ``before`` is missing from ``after`` or the
            shapes differ.
    """
    if isinstance(after, nn.Module):
        current = dict(after.named_parameters())
        current.update(dict(after.named_buffers()))
        after = current
    missing = [n for n in before if n not in after]
    if missing:
        raise ValueError(f"parameters missing after training: {missing[:5]}{' ...' if len(missing) > 5 else ''}")

    # group -> [sum of squared differences, sum of squared before, n changed, n]
    acc: dict[str, list[float]] = {}
    total = [0.0, 0.0, 0, 0]
    for name, b in before.items():
        a = after[name]
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"shape of {name!r} changed: {tuple(b.shape)} -> {tuple(a.shape)}")
        b64 = b.detach().to("cpu", torch.float64)
        a64 = a.detach().to("cpu", torch.float64)
        diff = a64 - b64
        # exact comparison in the original dtype (float64 conversion is exact anyway)
        changed = int((a.detach().to("cpu") != b.detach().to("cpu")).sum())
        stats = (float((diff * diff).sum()), float((b64 * b64).sum()), changed, b.numel())
        slot = acc.setdefault(group_name(name, group_depth), [0.0, 0.0, 0, 0])
        for i, v in enumerate(stats):
            slot[i] += v
            total[i] += v

    def finish(sq_diff: float, sq_before: float, n_changed: int, n: int) -> dict[str, float | int]:
        l2 = sq_diff**0.5 if sq_diff > 0 else 0.0
        if l2 == 0.0:
            rel = 0.0
        else:
            rel = l2 / sq_before**0.5 if sq_before > 0 else float("inf")
        return {
            "l2": float(l2),
            "rel_l2": float(rel),
            "frac_changed": float(n_changed / n) if n else 0.0,
            "n_params": int(n),
        }

    out = {group: finish(*stats) for group, stats in sorted(acc.items())}
    out[TOTAL] = finish(*total)
    return out
