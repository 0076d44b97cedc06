"""Shared test fixtures (keep each one minimal)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def synthetic_small(tmp_path_factory):
    """A 24-image synthetic data set (128 px, all four splits) generated once per session."""
    from pipelines.datasets import get_dataset

    return get_dataset("synthetic", root=tmp_path_factory.mktemp("synthetic_small"), n_images=24, seed=0)
