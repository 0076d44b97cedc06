"""Shared test fixtures (keep each one minimal)."""
from __future__ import annotations

import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one torch thread per xdist worker: two workers with two threads each on two
    # cores oversubscribe the CPU and run many times slower
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synthetic_small(tmp_path_factory):
    """A 24-image synthetic data set (128 px, all four splits) generated once per session."""
    from pipelines.datasets import get_dataset

    return get_dataset("synthetic", root=tmp_path_factory.mktemp("synthetic_small"), n_images=24, seed=0)


@pytest.fixture
def float64():
    """Run the test with float64 as torch's default dtype."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
