"""Root conftest: lets `pytest` find the harness plugin in a checkout that was not pip-installed."""

from importlib.metadata import entry_points

if not any(entry.name == "harness" for entry in entry_points(group="pytest11")):
    pytest_plugins = ["harness.plugin"]
