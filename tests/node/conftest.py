"""The node tier: a real one-node cluster (kubelet, containerd) where job pods actually run.

The cluster starts once per session (tools/node/cluster.py). Where the machine cannot run a
node the tests are skipped with one line saying why; under CI they fail instead, so a CI run
can never pass without them.
"""

import json
import os
import shutil
import ssl
import subprocess
import time

import kubernetes
import pytest
import yaml

from tests.helpers import HERE, kubectl_binary, running
from tools.node.cluster import Cluster, ClusterError, unavailable_reason

NAMESPACE = "podmutate-system"
SERVICE_HOST = f"podmutate.{NAMESPACE}.svc"
WEBHOOK_LABELS = "app.kubernetes.io/name=podmutate,app.kubernetes.io/component=webhook"
IMAGE = "localhost/podmutate:dev"
# What the tests change in the podmutate configuration: an init timeout short enough to watch.
INIT_TIMEOUT_MINUTES = 0.2
CONFIG = {
    "failure_mode": "ignore",
    "job_types": {"default": {"mode": "fill"}},
    "init_container": {"timeout_minutes": INIT_TIMEOUT_MINUTES},
}


@pytest.fixture(scope="session")
def cluster():
    reason = unavailable_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the node tests: {reason}")
        pytest.skip(reason)
    with running("node", Cluster(), ("kubelet", "kube-apiserver"), lines=25) as cluster:
        try:
            cluster.start()
        except ClusterError as error:
            pytest.fail(f"the test cluster did not start: {error}")
        yield cluster


@pytest.fixture(scope="session")
def core(cluster):
    return kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(config_file=cluster.kubeconfig))


@pytest.fixture(scope="session")
def kubectl(cluster):
    binary = kubectl_binary() or pytest.fail("kubectl is not installed")

    def run(*args, input=None, check=True, timeout=180):
        result = subprocess.run(
            [binary, "--kubeconfig", cluster.kubeconfig, *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    return run


class Deployer:
    """Applies manifests/ variants with only the image swapped for the locally built one."""

    def __init__(self, kubectl, workdir):
        self.kubectl = kubectl
        self.manifests = os.path.join(workdir, "manifests")
        shutil.copytree(os.path.join(HERE, "..", "manifests"), self.manifests, dirs_exist_ok=True)
        # Examples' manifests refer to manifests/base by the same relative path as in the repository.
        shutil.copytree(os.path.join(HERE, "..", "examples"), os.path.join(workdir, "examples"), dirs_exist_ok=True)

    def apply(self, variant="base", *, config=CONFIG, args=(), image=("ghcr.io/podmutate/podmutate", IMAGE)):
        """`kubectl apply -k` of an overlay over `variant` (relative to manifests/), with the image
        `image[0]` swapped for the local `image[1]`; waits for the rollout. Returns the overlay."""
        overlay = os.path.join(self.manifests, "overlays", "node")
        os.makedirs(overlay, exist_ok=True)
        patches = [
            {
                "target": {"kind": "ConfigMap", "name": "podmutate-config"},
                "patch": json.dumps([{"op": "replace", "path": "/data/config.yaml", "value": yaml.safe_dump(config)}]),
            }
        ]
        if args:
            patches.append(
                {
                    "target": {"kind": "Deployment", "name": "podmutate"},
                    "patch": json.dumps(
                        [{"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": arg} for arg in args]
                    ),
                }
            )
        name, tag = image[1].rsplit(":", 1)
        with open(os.path.join(overlay, "kustomization.yaml"), "w") as stream:
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [f"../../{variant}"],
                    "images": [{"name": image[0], "newName": name, "newTag": tag}],
                    "patches": patches,
                },
                stream,
            )
        self.kubectl("apply", "-k", overlay)
        self.wait_rolled_out()
        return overlay

    def wait_rolled_out(self, timeout=180):
        self.kubectl(
            "-n", NAMESPACE, "rollout", "status", "deployment/podmutate", f"--timeout={timeout}s", timeout=timeout + 10
        )


@pytest.fixture(scope="session")
def deployer(kubectl, tmp_path_factory):
    return Deployer(kubectl, tmp_path_factory.mktemp("deploy"))


@pytest.fixture(scope="session")
def podmutate(deployer):
    """podmutate deployed from manifests/base, as an operator would; re-applied by tests that change it."""
    deployer.apply()
    return deployer


def admission_only_pod(name, connection, job_type="sync"):
    """A job pod that is admitted (and mutated) but never scheduled: these tests count admissions,
    not what the node can run at once."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"podmutate.io/job-type": job_type, "connection_id": connection}},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"podmutate.io/never": "scheduled"},
            "containers": [{"name": "main", "image": "busybox:1.35"}],
        },
    }


def is_mutated(pod):
    """Whether a created pod (a kubernetes client object) went through podmutate: its init container."""
    return [container.name for container in pod.spec.init_containers or []] == ["init"]


def webhook_pods(core):
    """The podmutate pods that are Ready, and not being deleted."""
    pods = core.list_namespaced_pod(NAMESPACE, label_selector=WEBHOOK_LABELS).items
    return [
        pod
        for pod in pods
        if pod.metadata.deletion_timestamp is None
        and any(condition.type == "Ready" and condition.status == "True" for condition in pod.status.conditions or [])
    ]


def ca_bundle(kubectl):
    configuration = json.loads(kubectl("get", "mutatingwebhookconfiguration", "podmutate", "-o", "json").stdout)
    bundles = {webhook["clientConfig"].get("caBundle", "") for webhook in configuration["webhooks"]}
    assert len(bundles) == 1, "the webhooks of the configuration carry different caBundles"
    return bundles.pop()


def verifies(bundle_b64, pod_ip, port=8443):
    """Whether a TLS handshake with `pod_ip` verifies against the caBundle, for the Service's name."""
    import base64
    import socket

    context = ssl.create_default_context(cadata=base64.b64decode(bundle_b64).decode())
    try:
        with socket.create_connection((pod_ip, port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=SERVICE_HOST):
                return True
    except ssl.SSLCertVerificationError:
        return False


def wait_for(predicate, what, timeout=60, interval=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
