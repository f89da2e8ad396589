"""Shared set-up of the framework's own tests."""

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    """The framework's own tests run with the settings of a harness session (its Hypothesis profile unless
    ``--hypothesis-profile`` chose one, the offline hub): the plugin itself applies them only to sessions that
    use the harness (see ``harness.plugin``), and this folder is not one of its suites."""
    from harness.plugin import apply_settings

    apply_settings(config)


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The test models are tiny: one intra-op thread is fastest, and two threads per pytest-xdist worker on
    two busy cores thrashed (7x to 50x slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
