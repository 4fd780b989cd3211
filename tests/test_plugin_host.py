"""The pluggy host: built-ins, entry points, disabling, check_pending, failures of plugins."""

import json
import os
import subprocess

import pluggy
import pytest

from tests.helpers import apply_answer, job_pod
from tools.harness.pods import review
from tools.harness.processes import PODMUTATE
from webhook import Denied, admission, hookimpl
from webhook.app import create_app
from webhook.engine import load_engine, parse_settings
from webhook.errors import ConfigError
from webhook.plugins import BUILTIN_PLUGINS, make_plugin_manager, one_plugin_at_a_time


class Raising:
    @hookimpl
    def mutate_pod(self, pod):
        pod["metadata"]["labels"]["half"] = "done"
        raise KeyError("no such thing")


class Refusing:
    @hookimpl
    def mutate_pod(self, job_type):
        raise Denied(f"{job_type} pods are not welcome")


class Classifier:
    @hookimpl
    def classify_pod(self, pod):
        return "sync" if pod["metadata"].get("labels", {}).get("app") == "ingest" else None


@pytest.fixture
def with_plugin(engine):
    """Register a temporary plugin on the config's manager; unregister it afterwards."""
    registered = []

    def register(plugin, name):
        engine.plugins.register(plugin, name=name)
        registered.append(name)
        return engine

    yield register
    for name in registered:
        engine.plugins.unregister(name=name)


def test_builtins_are_registered_from_one_tuple(engine):
    names = {name for name, plugin in engine.plugins.list_name_plugin() if plugin is not None}
    assert {module.rpartition(".")[2] for module in BUILTIN_PLUGINS} <= names


def test_the_mutation_order_is_in_pluggys_markers_whatever_is_registered_after(with_plugin):
    """connection_labels first (tryfirst), fix_permissions last (trylast), a third-party plugin
    between them however it is registered: the order is the markers', not registration's."""

    class Late:
        @hookimpl
        def mutate_pod(self, pod):
            pass

    engine = with_plugin(Late(), "late")
    order = [name for name, _caller in one_plugin_at_a_time(engine.plugins)]
    assert order[0] == "connection_labels" and order[-1] == "fix_permissions", order
    assert set(order[1:-1]) == {"late", "init_container", "profiles", "tmp_volume"}
    pod = job_pod(
        "sync",
        annotations={"podmutate.io/fix-permissions": "data"},
        securityContext={"runAsUser": 1000, "runAsGroup": 1000},
    )
    pod["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    mutated = apply_answer(pod, admission.review(review(pod), engine))
    assert [container["name"] for container in mutated["spec"]["initContainers"]] == ["init", "fix-permissions"]


def test_hookimpl_is_importable_by_plugin_authors():
    from webhook import hookimpl as exported
    from webhook.hookspecs import hookimpl as marker

    assert exported is marker


def test_plugin_manager_is_built_per_config_not_shared():
    first, second = load_engine(environ={}), load_engine(environ={})
    assert first.plugins is not second.plugins


def test_check_pending_catches_a_misspelled_hook():
    class Misspelled:
        @hookimpl
        def mutate_pods(self, pod):
            pass

    pm = make_plugin_manager()
    pm.register(Misspelled())
    with pytest.raises(pluggy.PluginValidationError, match="mutate_pods"):
        pm.check_pending()


def test_disabled_plugin_is_not_called():
    engine = load_engine(environ={}, overrides={"disable_plugins": ["init_container"]})
    pod = admission.mutate(job_pod("sync"), engine).pod
    assert "initContainers" not in pod["spec"]
    assert pod["spec"]["containers"][0]["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]


def test_disabling_an_unknown_plugin_names_it():
    with pytest.raises(ConfigError, match="disable_plugins.*'init_containr'"):
        load_engine(environ={}, overrides={"disable_plugins": ["init_containr"]})


def test_a_plugin_classifier_runs_before_the_builtin_one(with_plugin):
    engine = with_plugin(Classifier(), "ingest")
    mutation = admission.mutate(job_pod(None, labels={"app": "ingest"}), engine)
    assert mutation.job_type == "sync"


def test_failing_plugin_in_ignore_mode_admits_the_pod_unpatched_and_warns(with_plugin, caplog):
    engine = with_plugin(Raising(), "raising")
    answer = create_app(engine).test_client().post("/mutate", json=review(job_pod("sync"))).get_json()
    response = answer["response"]
    assert response["allowed"] is True
    assert "patch" not in response
    assert response["warnings"] == [
        "podmutate: plugin 'raising' failed: KeyError: 'no such thing'; the pod was admitted unmutated"
    ]
    failure = [record for record in caplog.records if record.levelname == "WARNING"]
    assert len(failure) == 1, caplog.text  # one line, naming the pod and the plugin
    assert "pod=jobs/source-pg-sync-1-0-abcde" in failure[0].message
    assert "plugin=raising" in failure[0].message and "KeyError" in failure[0].message
    assert response["auditAnnotations"] == {"failed-plugin": "raising"}


def test_failing_plugin_in_fail_mode_denies_naming_the_plugin():
    engine = load_engine(environ={}, overrides={"failure_mode": "fail"})
    engine.plugins.register(Raising(), name="raising")
    response = admission.review(review(job_pod("sync")), engine)["response"]
    assert response["allowed"] is False
    assert "plugin 'raising' failed" in response["status"]["message"]
    assert "patch" not in response


def test_a_plugin_can_deny_with_a_message(with_plugin):
    engine = with_plugin(Refusing(), "refusing")
    response = admission.review(review(job_pod("check")), engine)["response"]
    assert response["allowed"] is False
    assert response["status"] == {"code": 403, "message": "check pods are not welcome", "reason": "Forbidden"}


def test_hooks_are_called_with_keywords_and_plugins_take_what_they_need(with_plugin):
    seen = {}

    class Recorder:
        @hookimpl
        def mutate_pod(self, request, job_type):
            seen.update(job_type=job_type, dry_run=request.dry_run)

    engine = with_plugin(Recorder(), "recorder")
    admission.review(review(job_pod("spec"), dry_run=True), engine)
    assert seen == {"job_type": "spec", "dry_run": True}


def run_podmutate(*args, pythonpath, input=None, environ=None):
    env = {**os.environ, "PYTHONPATH": pythonpath, **(environ or {})}
    env.pop("PODMUTATE_CONFIG", None)
    return subprocess.run([*PODMUTATE, *args], capture_output=True, text=True, env=env, input=input)


@pytest.mark.served
def test_an_installed_package_is_loaded_through_its_entry_point(example_plugins):
    result = run_podmutate("plugins", "--json", pythonpath=example_plugins)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["team_labels"]["version"] == "1.2.3"
    assert rows["team_labels"]["builtin"] is False
    assert rows["team_labels"]["hooks"] == ["config_defaults", "config_from_environ", "mutate_pod", "parse_config"]
    assert rows["profiles"]["builtin"] is True


def mutated_labels(pythonpath, config_file=None, environ=None):
    """The labels `podmutate mutate` gives a sync pod with the example plugins installed."""
    config = ["--config", str(config_file)] if config_file else []
    result = run_podmutate(
        "mutate",
        "-f",
        "-",
        *config,
        "-o",
        "json",
        pythonpath=pythonpath,
        input=json.dumps(job_pod("sync")),
        environ=environ,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["metadata"]["labels"]


@pytest.mark.served
def test_an_installed_plugin_mutates_and_reads_its_own_section(example_plugins, tmp_path):
    config_file = tmp_path / "podmutate.yaml"
    config_file.write_text("team_labels:\n  team: ingestion\n")
    assert mutated_labels(example_plugins, config_file)["example.com/team"] == "ingestion"


@pytest.mark.served
def test_an_installed_plugin_reads_its_environment_variable_over_the_file(example_plugins, tmp_path):
    environ = {"PODMUTATE_EXAMPLE_TEAM": "billing"}
    assert mutated_labels(example_plugins, environ=environ)["example.com/team"] == "billing"
    config_file = tmp_path / "podmutate.yaml"
    config_file.write_text("team_labels:\n  team: ingestion\n")
    assert mutated_labels(example_plugins, config_file, environ)["example.com/team"] == "billing"


@pytest.mark.served
def test_an_installed_plugin_can_be_disabled(example_plugins, tmp_path):
    config_file = tmp_path / "podmutate.yaml"
    config_file.write_text("disable_plugins: [team_labels]\n")
    result = run_podmutate("plugins", "--json", "--config", str(config_file), pythonpath=example_plugins)
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["team_labels"]["enabled"] is False
    assert "example.com/team" not in mutated_labels(example_plugins, config_file)


def test_applying_the_patch_gives_the_mutated_pod(engine):
    pod = job_pod("orchestrator", labels={"sync_step": "orchestrator-replication"})
    answer = admission.review(review(pod), engine)
    assert apply_answer(pod, answer) == admission.mutate(pod, engine).pod


def test_each_plugins_settings_are_its_own_and_nothing_can_be_changed(engine):
    config = engine.config
    assert set(config.settings) == {"connection_labels", "fix_permissions", "init_container", "profiles", "tmp_volume"}
    with pytest.raises(TypeError):
        config.settings["profiles"] = {}
    with pytest.raises(TypeError):
        config.sections["failure_mode"] = "fail"
    with pytest.raises(TypeError):
        config.sections["tmp_volume"]["enabled"] = False
    with pytest.raises(AttributeError):
        config.plugin_manager  # noqa: B018 - the host keeps the plugin manager
    copied = config.section("tmp_volume")
    copied["enabled"] = False
    assert config.section("tmp_volume")["enabled"] is True


def test_two_plugins_returning_the_same_key_do_not_overwrite_each_other():
    class First:
        @hookimpl
        def parse_config(self):
            return {"shared": "first"}

    class Second:
        @hookimpl
        def parse_config(self):
            return {"shared": "second"}

    engine = load_engine(environ={})
    engine.plugins.register(First(), name="first")
    engine.plugins.register(Second(), name="second")
    settings = parse_settings(engine.plugins, engine.config)
    assert settings["first"] == {"shared": "first"} and settings["second"] == {"shared": "second"}


def test_a_disabled_plugin_keeps_its_section_checked_but_accepted(tmp_path):
    config_file = tmp_path / "podmutate.yaml"
    config_file.write_text(
        "disable_plugins: [connection_labels]\nconnection_labels:\n  keys: {connection_id: a.io/c}\n"
    )
    engine = load_engine(str(config_file), environ={})
    assert "connection_labels" not in engine.config.settings
    assert engine.config.section("connection_labels")["keys"]["connection_id"] == "a.io/c"
    config_file.write_text("disable_plugins: [connection_labels]\nconnection_labels:\n  keys: {connection_id: A B}\n")
    with pytest.raises(ConfigError, match="connection_labels.keys.connection_id"):
        load_engine(str(config_file), environ={})
