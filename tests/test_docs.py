"""docs/plugins.md documents every hook and every public helper with its exact signature, and the
tests exercise each of them (datasette's `test_plugin_hooks_are_documented`, extended to helpers)."""

import inspect
import pathlib
import re

import pytest

from webhook import formats, hookspecs, pods

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = (ROOT / "docs" / "plugins.md").read_text()
TESTS = "".join(
    path.read_text()
    for path in (ROOT / "tests").rglob("*.py")
    if "build" not in path.parts and path.name != "test_docs.py"
)

HOOKS = [
    name
    for name, value in vars(hookspecs).items()
    if inspect.isfunction(value) and hasattr(value, f"{hookspecs.PROJECT_NAME}_spec")
]
HELPERS = [
    (module.__name__.rpartition(".")[2], name)
    for module in (pods, formats)
    for name in module.__all__
    if callable(getattr(module, name))
]


def signature(function):
    return str(inspect.signature(function)).replace("'", "")


def test_every_hook_and_helper_is_listed():
    assert HOOKS == ["config_defaults", "config_from_environ", "parse_config", "classify_pod", "mutate_pod"]
    assert ("pods", "add_volume") in HELPERS and ("formats", "check_toleration") in HELPERS


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_with_its_signature(hook):
    assert f"### `{hook}{signature(getattr(hookspecs, hook))}`" in DOCS


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_implemented_by_a_test_plugin(hook):
    assert re.search(rf"def {hook}\(", TESTS), f"no plugin in the tests implements {hook}"


@pytest.mark.parametrize(("module", "name"), HELPERS, ids=[f"{module}.{name}" for module, name in HELPERS])
def test_helper_is_documented_with_its_signature(module, name):
    function = getattr(pods if module == "pods" else formats, name)
    assert f"#### `{module}.{name}{signature(function)}`" in DOCS


@pytest.mark.parametrize(("module", "name"), HELPERS, ids=[f"{module}.{name}" for module, name in HELPERS])
def test_helper_is_called_by_a_test(module, name):
    assert re.search(rf"\b{module}\.{name}\(", TESTS), f"no test calls {module}.{name}"


def test_nothing_documented_is_gone():
    documented = set(re.findall(r"#### `(\w+)\.(\w+)\(", DOCS))
    assert documented == set(HELPERS)
