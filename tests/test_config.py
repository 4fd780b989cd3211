"""Configuration: defaults, file, Airbyte's variables, one-line errors naming the key, reload."""

import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugins import profiles
from tests.helpers import examples, job_pod
from tools.harness import hostile
from tools.harness.processes import wait_for
from webhook import admission
from webhook.engine import EngineWatcher, load_engine, load_engine_or_last_good
from webhook.errors import ConfigError


def profile(engine, job_type):
    return engine.config.settings["profiles"][job_type]


def test_defaults_alone_are_valid(engine):
    assert engine.config.failure_mode == "ignore"
    assert engine.config.max_body_bytes == 3 * 1024 * 1024
    assert engine.config.job_types == {"spec", "check", "discover", "sync", "normalization", "orchestrator"}
    assert profile(engine, "check").status_check_interval == 1
    assert profile(engine, "sync").status_check_interval == 30


def test_per_type_settings_fall_back_to_default_one_by_one():
    engine = load_engine(
        environ={
            "JOB_KUBE_NODE_SELECTORS": "pool=jobs",
            "CHECK_JOB_KUBE_NODE_SELECTORS": "pool=checks",
            "JOB_MAIN_CONTAINER_CPU_LIMIT": "2",
            "JOB_MAIN_CONTAINER_MEMORY_LIMIT": "1Gi",
            "CHECK_JOB_MAIN_CONTAINER_CPU_LIMIT": "1",
            "REPLICATION_ORCHESTRATOR_MEMORY_REQUEST": "256Mi",
        }
    )
    assert profile(engine, "check").node_selector == {"pool": "checks"}
    assert profile(engine, "spec").node_selector == {"pool": "jobs"}
    assert profile(engine, "check").resources == {"limits": {"cpu": "1", "memory": "1Gi"}}
    assert profile(engine, "orchestrator").resources == {
        "requests": {"memory": "256Mi"},
        "limits": {"cpu": "2", "memory": "1Gi"},
    }


def test_airbyte_empty_selector_means_unset_so_the_fallback_applies():
    engine = load_engine(environ={"JOB_KUBE_NODE_SELECTORS": "pool=jobs", "SPEC_JOB_KUBE_NODE_SELECTORS": ""})
    assert profile(engine, "spec").node_selector == {"pool": "jobs"}


def test_environment_wins_over_the_file(tmp_path):
    path = tmp_path / "podmutate.yaml"
    path.write_text("job_types:\n  default:\n    node_selector: {pool: from-file}\n")
    engine = load_engine(str(path), environ={"JOB_KUBE_NODE_SELECTORS": "pool=from-env"})
    assert profile(engine, "sync").node_selector == {"pool": "from-env"}


def test_podmutate_config_variable_names_the_file(tmp_path):
    path = tmp_path / "podmutate.yaml"
    path.write_text("failure_mode: fail\n")
    assert load_engine(environ={"PODMUTATE_CONFIG": str(path)}).config.failure_mode == "fail"


@pytest.mark.parametrize(
    "environ, message",
    [
        (
            {"JOB_KUBE_TOLERATIONS": "key=a,operator=Exists"},
            "JOB_KUBE_TOLERATIONS: 'key=a,operator=Exists' is not valid: expected a toleration with key, effect and "
            "operator (missing ['effect'])",
        ),
        (
            {"JOB_MAIN_CONTAINER_CPU_LIMIT": "lots"},
            "JOB_MAIN_CONTAINER_CPU_LIMIT: 'lots' is not valid: expected a Kubernetes quantity such as 500m, 2 or 1Gi",
        ),
        ({"JOB_KUBE_TOLERATIONS": "key=a,operator=Exists,effect=Sometimes"}, "JOB_KUBE_TOLERATIONS[0].effect"),
        ({"JOB_KUBE_NODE_SELECTORS": "pool"}, "JOB_KUBE_NODE_SELECTORS: 'pool'"),
        ({"JOB_KUBE_MAIN_CONTAINER_IMAGE_PULL_POLICY": "Sometimes"}, "JOB_KUBE_MAIN_CONTAINER_IMAGE_PULL_POLICY"),
        ({"SYNC_JOB_INIT_RETRY_TIMEOUT_MINUTES": "five"}, "SYNC_JOB_INIT_RETRY_TIMEOUT_MINUTES: 'five'"),
        (
            {"CHECK_JOB_MAIN_CONTAINER_CPU_REQUEST": "3", "CHECK_JOB_MAIN_CONTAINER_CPU_LIMIT": "1"},
            "job_types.check.resources.requests.cpu: '3' is not valid: expected a request no larger than the limit 1",
        ),
    ],
)
def test_malformed_variables_stop_loading_naming_the_variable(environ, message):
    with pytest.raises(ConfigError) as raised:
        load_engine(environ=environ)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("failure_mode: sometimes\n", "failure_mode: 'sometimes' is not valid: expected ignore or fail"),
        ("max_body_bytes: -1\n", "max_body_bytes: -1"),
        ("failur_mode: fail\n", "failur_mode"),
        ("job_types:\n  sync:\n    node_selectr: {a: b}\n", "job_types.sync.node_selectr"),
        ("job_types:\n  sync:\n    labels: {tier: 'not valid!'}\n", "job_types.sync.labels.tier: 'not valid!'"),
        (
            "job_types:\n  sync:\n    tolerations: [{key: a, effect: NoSchedule, operator: Exists, value: b}]\n",
            "job_types.sync.tolerations[0].value",
        ),
        ("tmp_volume: {medium: Disk}\n", "tmp_volume.medium: 'Disk'"),
        ("connection_labels: {required: {default: maybe}}\n", "connection_labels.required.default: 'maybe'"),
        ("job_types: [\n", "line 2, column 1"),
        ("- a\n- b\n", "expected a mapping of sections, got list"),
        ("", "the file is empty"),
        ("# only a comment\n", "the file is empty"),
        ("tmp_volum: {enabled: false}\n", "tmp_volum: {'enabled': False} is not valid: expected one of the sections"),
        ("disable_plugins: [profiles]\ntmp_volum: {enabled: false}\n", "tmp_volum"),  # whatever is disabled
        ("disable_plugins: [tmp_volume]\ntmp_volume: {enabeld: false}\n", "tmp_volume.enabeld"),
        ("tmp_volume: 5\n", "tmp_volume: 5 is not valid: expected a mapping of containers, enabled"),
        ("connection_labels: [keys]\n", "connection_labels: ['keys'] is not valid: expected a mapping"),
    ],
)
def test_bad_files_stop_loading_with_one_line_naming_the_key(tmp_path, text, message):
    path = tmp_path / "podmutate.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_engine(str(path), environ={})
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nowhere.yaml: No such file"):
        load_engine(str(tmp_path / "nowhere.yaml"), environ={})


def test_a_reload_keeps_the_overrides_the_engine_was_loaded_with(tmp_path):
    """Before, the watcher reloaded the file without them: `podmutate test`'s and an app's
    overrides were dropped by the first change of the file."""
    path = tmp_path / "podmutate.yaml"
    path.write_text("review_timeout_seconds: 1.0\n")
    engine = load_engine(str(path), environ={}, overrides={"failure_mode": "fail"})
    watcher = EngineWatcher(engine, environ={}, interval=0)
    path.write_text("review_timeout_seconds: 0.5\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert watcher.check() is True
    assert watcher.current().config.review_timeout_seconds == 0.5
    assert watcher.current().config.failure_mode == "fail"


def test_watcher_reloads_a_changed_file_and_keeps_the_last_good_one(tmp_path, caplog):
    path = tmp_path / "podmutate.yaml"
    path.write_text("failure_mode: ignore\n")
    watcher = EngineWatcher(load_engine(str(path), environ={}), environ={}, interval=0)
    path.write_text("failure_mode: fail\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert watcher.current().config.failure_mode == "ignore"  # never read on the request path
    assert watcher.check() is True
    assert watcher.current().config.failure_mode == "fail"
    path.write_text("failure_mode: sometimes\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2_000_000))
    assert watcher.check() is False
    assert watcher.current().config.failure_mode == "fail"
    assert "refused, keeping the last good one: failure_mode: 'sometimes'" in caplog.text


def test_a_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "podmutate.yaml"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(ConfigError, match="not a regular file"):
        load_engine(str(fifo), environ={})
    assert time.monotonic() - started < 5


def test_connection_id_required_denies_a_pod_without_one():
    engine = load_engine(environ={}, overrides={"connection_labels": {"required": {"default": False, "sync": True}}})
    with pytest.raises(admission.Denied, match="sync pods must carry a connection id"):
        admission.mutate(job_pod("sync"), engine)
    assert admission.mutate(job_pod("check"), engine).job_type == "check"


def billion_laughs(levels=9, width=10):
    """A YAML bomb: under a kilobyte that expands to width**levels strings."""
    lines = ['a0: &a0 "lol"']
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * width)}]")
    return "\n".join(lines) + f"\njob_types: *a{levels - 1}\n"


HOSTILE_FILES = [
    pytest.param(billion_laughs(), "more than 20000 values once its aliases are expanded", id="billion-laughs"),
    pytest.param(billion_laughs(levels=6), "more than 20000 values once its aliases are expanded", id="six-levels"),
    pytest.param(
        'a: &a "' + "x" * 40_000 + '"\nb: [' + ", ".join(["*a"] * 40) + "]\n",
        "more than 1048576 bytes of text once its aliases are expanded",
        id="aliased-long-string",
    ),
    pytest.param("a: &a [*a]\n", "an alias refers to a value that contains it", id="recursive-alias"),
    pytest.param("job_types: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested deeper than 32 levels", id="deep-flow"),
    pytest.param(
        "job_types: " + "{a: " * 40 + "1" + "}" * 40 + "\n", "nested deeper than 32 levels", id="deep-mappings"
    ),
    pytest.param("max_body_bytes: 99999999999999999999\n", "max_body_bytes: 99999999999999999999", id="huge-integer"),
    pytest.param("max_body_bytes: .inf\n", "max_body_bytes: inf", id="infinite-cap"),
    pytest.param("review_timeout_seconds: .nan\n", "review_timeout_seconds: nan", id="nan-timeout"),
    pytest.param(
        "job_types:\n  sync:\n    resources: {limits: {cpu: .nan}}\n",
        "job_types.sync.resources.limits.cpu",
        id="nan-cpu",
    ),
    pytest.param(
        "job_types:\n  sync:\n    resources: {limits: {memory: 1e3Gi}}\n",
        "limits.memory: '1e3Gi'",
        id="exponent-and-suffix",
    ),
    pytest.param("init_container: {timeout_minutes: .inf}\n", "init_container.timeout_minutes", id="infinite-timeout"),
    pytest.param("job_types:\n  sync:\n    labels: {k: " + "v" * 10_000 + "}\n", "labels.k", id="huge-value"),
]


@pytest.mark.parametrize("text, message", HOSTILE_FILES)
def test_hostile_files_are_refused_with_one_short_line(tmp_path, text, message):
    """Before, a bomb was expanded (OOM, or an error of 15 MB), deep nesting and odd numbers
    raised RecursionError, TypeError or InvalidOperation."""
    path = tmp_path / "podmutate.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_engine(str(path), environ={})
    assert message in str(raised.value)
    assert "\n" not in str(raised.value) and len(str(raised.value)) < 400


@pytest.mark.parametrize(
    "variable, value",
    [
        ("JOB_MAIN_CONTAINER_CPU_REQUEST", "Infinity"),
        ("JOB_MAIN_CONTAINER_CPU_REQUEST", "NaN"),
        ("JOB_MAIN_CONTAINER_MEMORY_LIMIT", "1e3Gi"),
        ("JOB_MAIN_CONTAINER_MEMORY_LIMIT", "1Gi\n"),
        ("SYNC_JOB_INIT_RETRY_TIMEOUT_MINUTES", "nan"),
        ("SYNC_JOB_INIT_RETRY_TIMEOUT_MINUTES", "inf"),
    ],
)
def test_hostile_environment_values_are_refused_naming_the_variable(variable, value):
    with pytest.raises(ConfigError) as raised:
        load_engine(environ={variable: value})
    assert str(raised.value).startswith(f"{variable}: ") and "\n" not in str(raised.value)


def test_the_watcher_survives_whatever_loading_raises(tmp_path, caplog, monkeypatch):
    path = tmp_path / "podmutate.yaml"
    path.write_text("failure_mode: ignore\n")
    watcher = EngineWatcher(load_engine(str(path), environ={}), environ={}, interval=0.01)
    watcher.watch()
    from webhook import engine as engine_module

    def explode(*_args, **_kwargs):
        raise SystemExit("out")

    monkeypatch.setattr(engine_module, "load_engine", explode)
    path.write_text("failure_mode: fail\n")
    assert wait_for(lambda: "refused, keeping the last good one: SystemExit: out" in caplog.text)
    assert watcher.alive() and watcher.current().config.failure_mode == "ignore"
    monkeypatch.undo()
    path.write_text("failure_mode: fail\n  \n")
    assert wait_for(lambda: watcher.current().config.failure_mode == "fail")


def test_a_process_started_while_the_file_is_bad_starts_from_the_last_good_one(tmp_path, caplog):
    path, kept = tmp_path / "podmutate.yaml", str(tmp_path / "last-good.yaml")
    path.write_text("failure_mode: fail\n")
    first, refused = load_engine_or_last_good(str(path), last_good=kept, environ={})
    EngineWatcher(first, environ={}, last_good=kept, refused=refused)
    path.write_text("failure_mode: sometimes\n")
    later, refused = load_engine_or_last_good(str(path), last_good=kept, environ={})
    assert refused and later.config.failure_mode == "fail" and later.config.path == str(path)
    assert "refused, starting from the last good one: failure_mode: 'sometimes'" in caplog.text


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=hostile.hostile_config_files())
def test_generated_hostile_files_load_or_are_refused_in_one_short_line(tmp_path, text):
    path = tmp_path / "podmutate.yaml"
    path.write_text(text)
    started = time.process_time()  # CPU, not the wall clock: a busy machine must not fail it
    try:
        load_engine(str(path), environ={})
    except ConfigError as error:  # anything else fails the test
        assert "\n" not in str(error) and len(str(error)) < 600
    assert time.process_time() - started < 5  # a bound (a YAML bomb costs minutes), not a measure


ENVIRONMENT_VARIABLES = sorted(
    {variable.replace("*", "CPU_REQUEST") for _type, _setting, variable, _read in profiles.environ_settings()}
    | {"SYNC_JOB_INIT_RETRY_TIMEOUT_MINUTES", "JOB_MAIN_CONTAINER_MEMORY_LIMIT", "JOB_KUBE_BUSYBOX_IMAGE"}
)


@settings(max_examples=examples(300), deadline=None)
@given(
    variable=st.sampled_from(ENVIRONMENT_VARIABLES),
    value=st.one_of(
        hostile.ODD_TEXT,
        st.sampled_from(
            ["NaN", "inf", "-1", "1e3Gi", "99999999999999999999", "a=b,c", "k=v:NoSchedule", "=", ",,,", "1Gi\n"]
        ),
    ),
)
def test_generated_hostile_environment_values_load_or_are_refused_naming_the_variable(variable, value):
    try:
        load_engine(environ={variable: value})
    except ConfigError as error:
        assert "\n" not in str(error) and len(str(error)) < 600
