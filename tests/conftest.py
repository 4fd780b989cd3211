import pytest

from tests.helpers import example_plugin_path
from webhook.engine import load_engine


@pytest.fixture
def engine():
    """The built-in configuration, with no file and an empty environment."""
    return load_engine(environ={})


@pytest.fixture(scope="session")
def example_plugins(tmp_path_factory):
    """A directory holding the installed example plugin package, to put on PYTHONPATH."""
    return example_plugin_path(tmp_path_factory)
