"""Offline equals served: `podmutate mutate` gives, field by field, what the API server stores
through the webhook, but for the fields the API server itself defaults or generates.

Those fields are listed here once, and in the README's "Offline and served" section.
"""

import json
import os
import pathlib
import subprocess

import pytest
import yaml

from tests.e2e.conftest import register
from tools.harness.processes import PODMUTATE, serve
from webhook.ops.cases import case_settings

GOLDEN = pathlib.Path(__file__).parent.parent / "golden"
CASES = sorted(path.name for path in GOLDEN.iterdir() if (path / "pod.yaml").exists())

# What the API server writes itself: generated, or defaulted where the pod leaves a field out.
GENERATED = {
    "metadata": {"uid", "creationTimestamp", "resourceVersion", "generation", "managedFields", "namespace"},
    "": {"status"},
}
DEFAULTED = {
    "spec": {
        "dnsPolicy",
        "schedulerName",
        "securityContext",
        "terminationGracePeriodSeconds",
        "enableServiceLinks",
        "preemptionPolicy",
        "priority",
        "restartPolicy",
        "serviceAccountName",
        "serviceAccount",
    },
    "container": {"terminationMessagePath", "terminationMessagePolicy", "imagePullPolicy", "resources"},
    "volume source": {"defaultMode"},  # configMap, secret, projected, downwardAPI: 0644
}
# DefaultTolerationSeconds adds these two to every pod that does not tolerate them already.
DEFAULT_TOLERATION_KEYS = {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}


def differences(offline, served, path="", served_parent=None):
    """Where `served` differs from `offline`, other than by what the API server generates or defaults."""
    if isinstance(offline, dict) and isinstance(served, dict):
        found = []
        for key, value in offline.items():
            if key not in served:
                found.append(f"{path}/{key}: podmutate mutate sets it, the served pod lacks it")
            else:
                found += differences(value, served[key], f"{path}/{key}", served)
        allowed = allowed_additions(path, served_parent)
        found += [
            f"{path}/{key}: only in the served pod" for key in served if key not in offline and key not in allowed
        ]
        return found
    if isinstance(offline, list) and isinstance(served, list):
        if path == "/spec/tolerations":
            served = [item for item in served if item.get("key") not in DEFAULT_TOLERATION_KEYS]
        if len(offline) != len(served):
            return [f"{path}: {len(offline)} items offline, {len(served)} served"]
        return [
            found for index, (a, b) in enumerate(zip(offline, served)) for found in differences(a, b, f"{path}/{index}")
        ]
    return [] if offline == served else [f"{path}: {offline!r} offline, {served!r} served"]


def allowed_additions(path, served_parent):
    parts = path.split("/")
    if path.endswith("/resources/requests"):  # a request left out defaults to its limit
        return set((served_parent or {}).get("limits") or {})
    if len(parts) == 5 and parts[1:3] == ["spec", "volumes"]:
        return DEFAULTED["volume source"]
    if path in ("", "/metadata"):
        return GENERATED[path.strip("/")]
    if path == "/spec":
        return DEFAULTED["spec"] | {"tolerations"}
    if len(parts) == 4 and parts[1] == "spec" and parts[2] in ("containers", "initContainers"):
        return DEFAULTED["container"]
    return set()


@pytest.mark.parametrize("case", CASES)
def test_offline_equals_served(case, admissionregistration, kubectl, namespace, tmp_path):
    config, environ = case_settings(GOLDEN / case)
    args = ["--config", config] if config else []
    environment = {key: value for key, value in os.environ.items() if key != "PODMUTATE_CONFIG"}
    environment.update(environ)
    pod_file = str(GOLDEN / case / "pod.yaml")
    offline = subprocess.run(
        [*PODMUTATE, "mutate", "-f", pod_file, "-o", "json", *args], capture_output=True, text=True, env=environment
    )
    assert offline.returncode == 0, offline.stderr
    with serve(tmp_path, env=environ, args=args) as served:
        register(admissionregistration, kubectl, served.url, served.ca_file, namespace, object_selector={})
        result = kubectl("create", "-n", namespace, "--dry-run=server", "-o", "json", "-f", pod_file)
    offline_pod = json.loads(offline.stdout)
    offline_pod["metadata"].pop("namespace", None)
    assert differences(offline_pod, json.loads(result.stdout)) == []
    offline_warnings = sorted(
        line.removeprefix("warning: ") for line in offline.stderr.splitlines() if line.startswith("warning: ")
    )
    served_warnings = sorted(
        line.removeprefix("Warning: ") for line in result.stderr.splitlines() if line.startswith("Warning: ")
    )
    assert offline_warnings == served_warnings


def test_the_comparison_fails_on_a_real_difference():
    pod = yaml.safe_load((GOLDEN / "sync-airbyte-labels" / "pod.yaml").read_text())
    served = json.loads(json.dumps(pod))
    served["spec"]["containers"][0]["image"] = "other"
    served["spec"]["nodeSelector"] = {"pool": "jobs"}
    served["spec"]["dnsPolicy"] = "ClusterFirst"
    assert differences(pod, served) == [
        "/spec/containers/0/image: 'airbyte/source-postgres:3.6.2' offline, 'other' served",
        "/spec/nodeSelector: only in the served pod",
    ]
