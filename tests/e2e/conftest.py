import base64
import json
import subprocess
import time
import uuid

import kubernetes
import pytest

from tests.helpers import kubectl_binary, running
from tools.harness.controlplane import HOW_TO_GET, ControlPlane, find_binaries
from tools.harness.processes import serve
from webhook.contract import JOB_TYPE_LABEL, STATUS_CHECK_ANNOTATION


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory):
    binaries = find_binaries()
    if binaries is None:
        pytest.skip(HOW_TO_GET)
    with running(
        "e2e", ControlPlane(binaries, tmp_path_factory.mktemp("controlplane")), ("kube-apiserver", "etcd")
    ) as plane:
        yield plane.start()


@pytest.fixture(scope="session")
def api_client(control_plane):
    return kubernetes.config.new_client_from_config(config_file=control_plane.kubeconfig)


@pytest.fixture(scope="session")
def core(api_client):
    return kubernetes.client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def admissionregistration(api_client):
    return kubernetes.client.AdmissionregistrationV1Api(api_client)


@pytest.fixture
def namespace(core):
    """A fresh namespace per test: without a namespace controller, none ever finishes deleting."""
    name = f"e2e-{uuid.uuid4().hex[:10]}"
    core.create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture(scope="session")
def kubectl(control_plane):
    binary = kubectl_binary() or pytest.skip("kubectl is not installed")

    def run(*args, input=None, check=True):
        result = subprocess.run(
            [binary, "--kubeconfig", control_plane.kubeconfig, *args], capture_output=True, text=True, input=input
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    return run


@pytest.fixture(scope="module")
def podmutate(tmp_path_factory):
    """A running `podmutate serve` with its own certificates, shared by a module's tests."""
    with serve(tmp_path_factory.mktemp("podmutate"), workers=2) as served:
        yield served


def job_pod_manifest(job_type, name=None, **extra_labels):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name or f"source-pg-{job_type}-7-0-{uuid.uuid4().hex[:5]}",
            "labels": {JOB_TYPE_LABEL: job_type, **extra_labels},
            "annotations": {
                "podmutate.io/connection-id": "8f2c5a7e-0c1d-4d7e-9a55-3e0f1b2c4d5e",
                "podmutate.io/job-id": "7",
                "podmutate.io/attempt-id": "0",
            },
        },
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "airbyte/source-postgres:3.6.2"}]},
    }


def is_mutated(pod):
    init = (pod.get("spec") or {}).get("initContainers") or []
    return any(container.get("name") == "init" for container in init)


JOB_TYPE_SELECTOR = {"matchExpressions": [{"key": JOB_TYPE_LABEL, "operator": "Exists"}]}


def register(
    admissionregistration,
    kubectl,
    served_url,
    ca_file,
    namespace,
    *,
    name=None,
    failure_policy="Fail",
    reinvocation="IfNeeded",
    path="/mutate",
    probe=True,
    object_selector=JOB_TYPE_SELECTOR,
):
    """Register a MutatingWebhookConfiguration for `namespace` only; wait until it takes effect."""
    with open(ca_file, "rb") as stream:
        ca_bundle = base64.b64encode(stream.read()).decode()
    name = name or f"podmutate-{namespace}"
    admissionregistration.create_mutating_webhook_configuration(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": f"{name}.podmutate.io",
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    "failurePolicy": failure_policy,
                    "reinvocationPolicy": reinvocation,
                    "timeoutSeconds": 3,
                    "clientConfig": {"url": f"{served_url}{path}", "caBundle": ca_bundle},
                    "rules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["pods"],
                            "scope": "Namespaced",
                        }
                    ],
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                    "objectSelector": object_selector,
                }
            ],
        }
    )
    if probe:
        wait_effective(kubectl, namespace)
    return name


def wait_effective(kubectl, namespace, timeout=30):
    """Dry-run a probe pod until it comes back mutated: a new configuration is not effective at once."""
    probe = json.dumps(job_pod_manifest("spec", name="probe"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = kubectl(
            "create", "-n", namespace, "--dry-run=server", "-o", "json", "-f", "-", input=probe, check=False
        )
        if result.returncode == 0 and STATUS_CHECK_ANNOTATION in json.loads(result.stdout)["metadata"].get(
            "annotations", {}
        ):  # written for every job type, whatever else the configuration turns off
            return
        time.sleep(0.3)
    raise AssertionError(f"the webhook configuration did not take effect in {timeout}s")
