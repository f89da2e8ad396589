"""Shared set-up of the framework's own tests."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The test models are tiny: one intra-op thread is fastest, and two threads per pytest-xdist worker on
    two busy cores thrashed (7x to 50x slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
