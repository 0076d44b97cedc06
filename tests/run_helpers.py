"""Shared helpers of the harness tests."""
from __future__ import annotations


def numbers(obj):
    """Every number in a JSON-like object (to check results are finite)."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


def interrupt_at(monkeypatch, regime_name: str):
    """Make the image track raise ``KeyboardInterrupt`` (Ctrl-C) when it reaches ``regime_name``;
    the other regimes run as usual. Returns the real ``ImageTrack.run_regime``, to put back."""
    from experiments.harness.image_track import ImageTrack

    real = ImageTrack.run_regime

    def interrupt(self, regime, *args, **kwargs):
        if regime.name == regime_name:
            raise KeyboardInterrupt
        return real(self, regime, *args, **kwargs)

    monkeypatch.setattr(ImageTrack, "run_regime", interrupt)
    return real


def tiny_image_run(tmp, regimes: list[str]):
    """A finished run of ``regimes`` on 60 synthetic images, one seed, one epoch (what the
    query tests answer with); returns its run directory."""
    from experiments.harness import run
    from experiments.harness.config import HarnessConfig

    cfg = HarnessConfig(n_images=60, seeds=[0], epochs=1, stage0_epochs=1, progress=False, regimes=list(regimes),
                        runs_dir=str(tmp / "runs"), cache=str(tmp / "cache"), data_root=str(tmp / "data"))
    return run(cfg, argv=[])
