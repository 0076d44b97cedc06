"""The training regimes, registered once: what each trains and which tracks run it.

    frozen         networks fixed, only the rule parameters learn (logic-only)
    joint          rule parameters and the trainable network parts learn together
    uniform_rules  rules fixed at uniform, networks trained through the logic
    late_fusion    no logic: a neural late-fusion model on the same network outputs

A track runs a regime from its declaration (:meth:`experiments.harness.track.Track.run_regime`);
the config's defaults and checks, the report's order and the query read the names here. A leaf
module (no imports), so reports and the query read it without reaching into the harness.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Regime:
    name: str
    train_rules: bool  # the rule parameters learn
    train_networks: bool  # the networks' trainable parts learn (through the logic, or the baseline's own)
    tracks: tuple[str, ...]  # the tracks that run it
    logic: bool = True  # False: a purely neural baseline (no rules, no program checkpoint)
    doc: str = ""


REGIMES: dict[str, Regime] = {r.name: r for r in (
    Regime("frozen", True, False, ("image", "clip"), doc="networks fixed, only the rule parameters learn"),
    Regime("joint", True, True, ("image", "clip"), doc="rules and the trainable network parts learn together"),
    Regime("uniform_rules", False, True, ("image",), doc="rules fixed at uniform, networks trained through the logic"),
    Regime("late_fusion", False, True, ("image",), logic=False,
           doc="no logic: a neural late-fusion model on the same network outputs"),
)}


def regime_names(track: str | None = None) -> tuple[str, ...]:
    """Every registered regime (of ``track``), in the order runs and reports list them."""
    return tuple(n for n, r in REGIMES.items() if track is None or track in r.tracks)


def get_regime(name: str) -> Regime:
    return REGIMES[name]
