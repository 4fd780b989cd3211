"""webhook.formats against the real API server: what a check accepts, the API server accepts, and
what it refuses, the API server refuses (a dry-run create of an object that carries the value)."""

import pytest
from kubernetes.client.exceptions import ApiException

from webhook import formats
from webhook.errors import ConfigError

LABEL_KEYS = [
    "app",
    "example.com/team",
    "a.b-c_d",
    "Example.com/x",
    "x" * 64,
    "a/b/c",
    "-lead",
    "trail-",
    "a b",
    f"{'s' * 254}/n",
    "ok.io/" + "n" * 63,
]
LABEL_VALUES = ["", "v", "v-1.2_3", "-v", "v-", "a b", "x" * 63, "x" * 64, "ünïcode"]
QUANTITIES = [
    *["1", "500m", "1.5", "2Gi", "1e3", "0.1m", "lots", "1GiB", "-1", "1Ki", "2.5Mi", "+1"],
    # What Python's float() or the kubernetes client's parse_quantity took and the API server does not.
    *["Infinity", "NaN", "inf", "1e3Gi", "1e", "K", "1K", "0x10", "1_000", " 1", "1\n", "\uff11"],
    *[".5", "5.", "1E", "1e-3", "1e+3", "8Ei", "1e18", "99999999999999999999", " 1 "],
]
NAMES = ["regcred", "a.b-c", "RegCred", "a_b", "-a", "a" * 253, "a" * 254]


def accepted(call):
    try:
        call()
    except ApiException as error:
        if error.status in (400, 422):
            return False
        raise
    return True


def config_map(core, namespace, **metadata):
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "f-", **metadata}}
    return accepted(lambda: core.create_namespaced_config_map(namespace, body, dry_run="All"))


@pytest.mark.parametrize("key", LABEL_KEYS)
def test_label_keys_agree(core, namespace, key):
    assert (formats.qualified_name_problem(key) is None) == config_map(core, namespace, labels={key: "v"})


@pytest.mark.parametrize("value", LABEL_VALUES)
def test_label_values_agree(core, namespace, value):
    assert (formats.label_value_problem(value) is None) == config_map(core, namespace, labels={"k": value})


def ours(check, value):
    """Whether a check of webhook.formats accepts `value`."""
    try:
        check("key", value)
    except ConfigError:
        return False
    return True


@pytest.mark.parametrize("name", NAMES)
def test_object_names_agree(core, namespace, name):
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
    assert ours(formats.check_object_name, name) == accepted(
        lambda: core.create_namespaced_config_map(namespace, body, dry_run="All")
    )


@pytest.mark.parametrize("value", QUANTITIES)
def test_quantities_agree(core, namespace, value):
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "q-"},
        "spec": {"containers": [{"name": "main", "image": "busybox", "resources": {"limits": {"memory": value}}}]},
    }
    assert ours(formats.check_quantity, value) == accepted(
        lambda: core.create_namespaced_pod(namespace, pod, dry_run="All")
    )
