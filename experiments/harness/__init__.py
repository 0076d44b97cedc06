"""The harness: one loop (:mod:`.loop`) over a track (:mod:`.track`: :mod:`.image_track`,
:mod:`.clip_track`), the regimes registered once (:mod:`.regimes`) and the config split
per track (:mod:`.config`).

    from experiments.harness import HarnessConfig, run
    run(HarnessConfig(dataset="synthetic_clips", n_clips=60), argv=[])
"""
from experiments.harness.config import HarnessConfig, add_arguments, config_from_args
from experiments.harness.loop import run

__all__ = ["HarnessConfig", "add_arguments", "config_from_args", "run"]
