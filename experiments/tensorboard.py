"""TensorBoard logging of a run (``<run>/tb``); every call is a no-op without tensorboard installed."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

_TB_WARNED = False


def _summary_writer_class():
    """``SummaryWriter``, or ``None`` (with a one-time warning) when tensorboard is missing."""
    global _TB_WARNED
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        if not _TB_WARNED:
            warnings.warn(
                f"TensorBoard logging disabled ({e}); install it with `pip install tensorboard`",
                RuntimeWarning,
                stacklevel=3,
            )
            _TB_WARNED = True
        return None
    return SummaryWriter


class TBLogger:
    """Thin TensorBoard wrapper; every method is a no-op when tensorboard is missing.

        with TBLogger(run_dir / "tb") as tb:
            tb.add_scalar("frozen/seed0/train_loss", loss, epoch)
    """

    def __init__(self, log_dir: str | os.PathLike):
        self.log_dir = Path(log_dir)
        cls = _summary_writer_class()
        self._writer = cls(log_dir=str(self.log_dir)) if cls is not None else None

    @property
    def enabled(self) -> bool:
        return self._writer is not None

    def add_scalar(self, tag: str, value: float, step: int | None = None) -> None:
        if self._writer is not None:
            self._writer.add_scalar(tag, float(value), global_step=step)

    def add_dict(self, prefix: str, values: dict[str, float], step: int | None = None) -> None:
        """One ``prefix/key`` scalar per entry (``None`` values are skipped)."""
        for key, value in values.items():
            if value is not None:
                self.add_scalar(f"{prefix}/{key}", value, step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "TBLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
