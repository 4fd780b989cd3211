"""The manual against the code: docs/plugins.md documents every hook and every public helper with
its exact signature, and the tests exercise each of them (datasette's
`test_plugin_hooks_are_documented`, extended to helpers); docs/operate.md's metrics table is every
metric the code exports, and the dashboard and the alerts ask for no other; docs/configure.md
shows every setting and names every Airbyte variable the plugins read."""

import ast
import inspect
import json
import pathlib
import re

import pytest

from webhook import formats, hookspecs, pods

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = (ROOT / "docs" / "plugins.md").read_text()
TEST_TREES = [
    ast.parse(path.read_text())
    for path in (ROOT / "tests").rglob("*.py")
    if "build" not in path.parts and path.name != "test_docs.py"
]

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


def is_hookimpl(decorator):
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(target, ast.Name) and target.id == "hookimpl"


def implemented_hooks(trees=TEST_TREES):
    """The hooks a plugin in the tests implements: functions of that name marked @hookimpl."""
    return {
        node.name
        for tree in trees
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and any(is_hookimpl(decorator) for decorator in node.decorator_list)
    }


def called_helpers(trees=TEST_TREES):
    """(module, name) of every `module.name(...)` call in the tests' code (not in a comment or a string)."""
    return {
        (node.func.value.id, node.func.attr)
        for tree in trees
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
    }


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_implemented_by_a_test_plugin(hook):
    assert hook in implemented_hooks(), f"no plugin in the tests implements {hook}"


@pytest.mark.parametrize(("module", "name"), HELPERS, ids=[f"{module}.{name}" for module, name in HELPERS])
def test_helper_is_documented_with_its_signature(module, name):
    function = getattr(pods if module == "pods" else formats, name)
    assert f"#### `{module}.{name}{signature(function)}`" in DOCS


@pytest.mark.parametrize(("module", "name"), HELPERS, ids=[f"{module}.{name}" for module, name in HELPERS])
def test_helper_is_called_by_a_test(module, name):
    assert (module, name) in called_helpers(), f"no test calls {module}.{name}"


def test_a_mention_in_a_comment_or_a_string_is_neither_a_call_nor_an_implementation():
    mentioned = [ast.parse('# pods.add_volume(pod)\nNOTE = "@hookimpl def mutate_pod(pod): pods.add_mount(c)"\n')]
    assert called_helpers(mentioned) == set() and implemented_hooks(mentioned) == set()
    written = [ast.parse("@hookimpl\ndef mutate_pod(pod):\n    pods.add_volume(pod, {})\n")]
    assert called_helpers(written) == {("pods", "add_volume")} and implemented_hooks(written) == {"mutate_pod"}


def test_nothing_documented_is_gone():
    documented = set(re.findall(r"#### `(\w+)\.(\w+)\(", DOCS))
    assert documented == set(HELPERS)


# -- the operator's tables and the dashboard, against the code -------------------------------

OPERATE = (ROOT / "docs" / "operate.md").read_text()
MONITORING = ROOT / "manifests" / "overlays" / "monitoring"


def metrics_table():
    """{metric name: (its row's type cell, its labels cell)} of docs/operate.md's metrics table."""
    rows = {}
    table = OPERATE.split("| Metric | Type | Labels |", 1)[1].split("\n\n", 1)[0]
    for line in table.strip().splitlines()[1:]:
        names, kind, labels = (cell.strip() for cell in line.strip("|").split("|"))
        for name in re.findall(r"`(\w+)`", names):
            rows[name] = (kind, labels)
    return rows


def test_the_metrics_table_is_every_metric_the_code_exports():
    from webhook.metrics import exported

    table, code = metrics_table(), exported()
    assert set(table) == set(code)
    for name, (kind, labels) in code.items():
        assert table[name][0].startswith(kind), name
        assert all(f"`{label}`" in table[name][1] for label in labels), name


def queries():
    """Every PromQL expression of the dashboard and of the alerts."""
    import yaml

    dashboard = json.loads((MONITORING / "podmutate-dashboard.json").read_text())
    found = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    rules = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    found += [rule["expr"] for group in rules["spec"]["groups"] for rule in group["rules"]]
    return found


def test_the_dashboard_and_the_alerts_ask_only_for_metrics_the_code_exports():
    from webhook.metrics import exported

    families = exported()
    asked = set()
    for expression in queries():
        for name in re.findall(r"\b(podmutate_\w+)", expression):
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            assert family in families, f"{name} in {expression!r} is not exported"
            if name != family:
                assert families[family][0] == "histogram", expression
            asked.add(family)
    assert {"podmutate_admission_reviews_total", "podmutate_certificate_expiry_seconds"} <= asked
    assert len(asked) >= len(families) - 1  # the dashboard shows (nearly) everything there is


def test_the_dashboard_is_a_grafana_dashboard_the_sidecar_picks_up():
    import yaml

    dashboard = json.loads((MONITORING / "podmutate-dashboard.json").read_text())
    assert dashboard["uid"] == "podmutate" and dashboard["panels"]
    assert all(panel["datasource"]["uid"] == "${datasource}" for panel in dashboard["panels"])
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    assert generator["options"]["labels"] == {"grafana_dashboard": "1"}
    chart_copy = ROOT / "manifests" / "helm" / "podmutate" / "dashboards" / "podmutate.json"
    assert chart_copy.resolve() == (MONITORING / "podmutate-dashboard.json").resolve()  # one file, linked


# -- the settings: every key and every Airbyte variable, against the code ---------------------

CONFIGURE = (ROOT / "docs" / "configure.md").read_text()


def documented_configuration():
    import yaml

    return yaml.safe_load(re.search(r"```yaml\n(.*?)```", CONFIGURE, re.DOTALL)[1])


def test_the_documented_configuration_is_every_setting_and_loads(tmp_path):
    from plugins.profiles import SETTINGS
    from webhook.config import HOST_DEFAULTS
    from webhook.engine import load_engine

    documented = documented_configuration()
    engine = load_engine(environ={})
    defaults = [HOST_DEFAULTS, *engine.plugins.hook.config_defaults()]
    for section in (section for defaults_of in defaults for section in defaults_of.items()):
        name, value = section
        assert name in documented, name
        if isinstance(value, dict) and name != "job_types":
            assert set(value) <= set(documented[name]), name
    shown = {setting for profile in documented["job_types"].values() for setting in profile}
    assert set(SETTINGS) <= shown  # every profile setting, under some job type
    path = tmp_path / "podmutate.yaml"
    path.write_text(re.search(r"```yaml\n(.*?)```", CONFIGURE, re.DOTALL)[1])
    assert load_engine(str(path), environ={}).config.section("job_types")["sync"]["node_selector"] == {"pool": "sync"}


class Recording(dict):
    """An environment that remembers every variable asked for."""

    def __init__(self):
        super().__init__()
        self.asked = set()

    def get(self, key, default=None):
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.asked.add(key)
        return super().__getitem__(key)


def documented_variables():
    """Every variable name the Airbyte table of docs/configure.md names, its shorthands expanded."""
    table = CONFIGURE.split("| Variable | Format | Sets |", 1)[1].split("\n\n", 1)[0]
    names = set()
    for line in table.strip().splitlines()[1:]:
        cell = line.strip("|").split("|")[0]
        tokens = re.findall(r"`([A-Z_{},<>]+)`", cell)
        base = tokens[-1].split("_", 1)[1] if tokens and tokens[-1] else ""
        for token in tokens:
            token = token + base if token.endswith("_") else token
            expanded = [token]
            while any("{" in name for name in expanded):
                expanded = [
                    name[: name.index("{")] + choice + name[name.index("}") + 1 :]
                    for name in expanded
                    for choice in name[name.index("{") + 1 : name.index("}")].split(",")
                ]
            names.update(expanded)
    return names


def test_every_airbyte_variable_the_plugins_read_is_documented():
    from webhook.engine import load_engine

    environ = Recording()
    load_engine(environ={}).plugins.hook.config_from_environ(environ=environ)
    documented = documented_variables()
    missing = sorted(name for name in environ.asked if name not in documented and not name.startswith("PODMUTATE_"))
    assert not missing
    assert "JOB_DEFAULT_ENV_<NAME>" in documented and len(environ.asked) > 30
