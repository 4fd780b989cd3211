"""The tiers: every test is `unit`, `served`, `e2e` or `node` (pyproject.toml's markers).

A test module or test says `served` when it starts a real server, a process or a socket;
`tests/e2e` and `tests/node` mark their own. Every other test is `unit`, and is held to it: in
a unit test, opening a socket or starting a process fails, naming the test's tier.
"""

import os
import socket
import subprocess

import pytest

from tests.helpers import FAST_TIER, RUNNING_LOGS, example_plugin_path, helm_binary
from webhook.engine import load_engine

TIERS = ("served", "e2e", "node")


def pytest_configure(config):
    """`-m unit`, the fast tier, runs the property tests at a tenth of their examples (tests.helpers.examples)."""
    if config.getoption("markexpr") == "unit":
        os.environ[FAST_TIER] = "1"


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items):
    for item in items:
        tier = tier_directory(item)
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))
        elif not any(item.get_closest_marker(tier) for tier in TIERS):
            item.add_marker(pytest.mark.unit)


def tier_directory(item):
    """The tier whose directory (tests/e2e, tests/node) holds the test, if one does."""
    return next((tier for tier in TIERS if f"/tests/{tier}/" in str(item.path)), None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failed e2e or node test, the tail of each log of what its tier started (RUNNING_LOGS)."""
    outcome = yield
    report = outcome.get_result()
    running = RUNNING_LOGS.get(tier_directory(item))
    if report.failed and running is not None:
        source, names, lines = running
        for name in names:
            report.sections.append((f"{name} log (tail)", source.tail(name, lines)))


class NotUnit(AssertionError):
    """A unit test reached for what only the served, e2e and node tiers may use."""


@pytest.fixture(autouse=True)
def unit_tier_holds(request, monkeypatch):
    """In a unit test, a socket that connects or binds, or a new process, is a failure."""
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(what):
        def refused(*_args, **_kwargs):
            raise NotUnit(f"a unit test {what}: mark it `served` (pytest.mark.served) or keep it in process")

        return refused

    monkeypatch.setattr(socket.socket, "connect", refuse("connects a socket"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connects a socket"))
    monkeypatch.setattr(socket.socket, "bind", refuse("binds a socket"))
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("starts a process"))
    monkeypatch.setattr(os, "fork", refuse("forks"))


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
