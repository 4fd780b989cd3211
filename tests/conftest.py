import os

import pytest

from tests.helpers import example_plugin_path, helm_binary
from webhook.engine import load_engine


@pytest.fixture
def engine():
    """The built-in configuration, with no file and an empty environment."""
    return load_engine(environ={})


@pytest.fixture(scope="session")
def example_plugins(tmp_path_factory):
    """A directory holding the installed example plugin package, to put on PYTHONPATH."""
    return example_plugin_path(tmp_path_factory)


@pytest.fixture(scope="session")
def helm():
    """The helm CLI (tools/helm/build.sh); skipped without Go, a failure under CI."""
    binary = helm_binary()
    if binary is None:
        reason = "helm could not be built: tools/helm/build.sh needs Go and the Go module proxy"
        pytest.fail(reason) if os.environ.get("CI") else pytest.skip(reason)
    return binary
