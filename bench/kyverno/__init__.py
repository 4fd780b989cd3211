"""Kyverno's admission controller, the benchmark's peer: built from its Go module by build.sh
(cached outside the repository), run out of cluster against the benchmark's API server.

It runs as its Helm chart installs it: the flags, environment and ConfigMaps of the admission
controller in the chart as Kyverno renders it for its release (`config/install-latest-testing.yaml`:
admission reports on, `PolicyApplied` and `PolicySkipped` events omitted, its resource filters),
then the flags that take it out of the cluster: `--serverIP` registers its webhooks by URL
(https://127.0.0.1:<port>) instead of a Service, with the CA it generates and keeps in a Secret
as it does in a cluster, and its metrics listen on free ports.

The policy is a Kyverno `MutatingPolicy` (policies.kyverno.io/v1, the CEL policies Kyverno's own
2026 load tests measure) carrying the MutatingAdmissionPolicy's mutations from bench/policy.py
unchanged: Kyverno's CEL engine takes Kubernetes' apply configurations and JSONPatch expressions,
so Kyverno and the API server do exactly the same work, and what both leave out of podmutate's
mutations is the list in bench/policy.py's docstring.
"""

import base64
import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import requests
import yaml

from bench.policy import JOB_POD, POD_CREATES, mutations
from tools.harness.processes import free_port, stop_process

BUILD = Path(__file__).resolve().parent / "build.sh"
NAMESPACE = "kyverno"
MANAGED = "webhook.kyverno.io/managed-by=kyverno"  # the label on every webhook configuration it writes


def build() -> Path:
    """The directory holding the `kyverno` binary, the `crds/` and the rendered chart (`install.yaml`)
    of its release (built once)."""
    done = subprocess.run(["sh", str(BUILD)], stdout=subprocess.PIPE, text=True, check=True)
    return Path(done.stdout.strip())


def mutating_policy(namespace: str) -> dict:
    """The MutatingAdmissionPolicy's mutations as a Kyverno MutatingPolicy for pods in `namespace`."""
    return {
        "apiVersion": "policies.kyverno.io/v1",
        "kind": "MutatingPolicy",
        "metadata": {"name": f"podmutate-equivalent-{namespace}"},
        "spec": {
            "matchConstraints": {
                "resourceRules": [POD_CREATES],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            },
            "matchConditions": [JOB_POD],
            "failurePolicy": "Fail",
            "reinvocationPolicy": "IfNeeded",
            "mutations": mutations(),
        },
    }


class Kyverno:
    """A running Kyverno admission controller: its process, for CPU and memory figures."""

    def __init__(self, process: subprocess.Popen, log: Path):
        self.process = process
        self.log = log


@contextlib.contextmanager
def running(control_plane, workdir: Path, timeout: float = 180) -> Iterator[Kyverno]:
    """Kyverno's admission controller serving the API server of `control_plane` until the block
    ends; then stopped, and the webhook configurations it registered removed with it."""
    home = build()
    subprocess.run(
        ["kubectl", f"--kubeconfig={control_plane.kubeconfig}", "apply", "--server-side", "-R", "-f", home / "crds"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    install = [document for document in yaml.safe_load_all((home / "install.yaml").read_text()) if document]
    client = kubernetes.config.new_client_from_config(config_file=control_plane.kubeconfig)
    core = kubernetes.client.CoreV1Api(client)
    with contextlib.suppress(kubernetes.client.exceptions.ApiException):  # there from an earlier section
        core.create_namespace({"metadata": {"name": NAMESPACE}})
    for config_map in (document for document in install if document["kind"] == "ConfigMap"):
        with contextlib.suppress(kubernetes.client.exceptions.ApiException):
            core.create_namespaced_config_map(NAMESPACE, config_map)
    port = free_port()
    log = Path(workdir) / "kyverno.log"
    container = admission_container(install)
    command = [
        str(home / "kyverno"),
        *container["args"],
        # last, so that they win: out of cluster, on loopback, on ports that are free
        f"--kubeconfig={control_plane.kubeconfig}",
        f"--serverIP=127.0.0.1:{port}",
        "--webhookServerHost=127.0.0.1",
        f"--webhookServerPort={port}",
        f"--metricsPort={free_port()}",
        f"--controllerRuntimeMetricsAddress=127.0.0.1:{free_port()}",
    ]
    env = {
        variable["name"]: variable.get("value") or FIELDS[variable["valueFrom"]["fieldRef"]["fieldPath"]]
        for variable in container["env"]
    }
    env["TUF_ROOT"] = str(Path(workdir) / "sigstore")
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **env})
    try:
        ca_secret = next(arg.split("=", 1)[1] for arg in container["args"] if arg.startswith("--caSecretName="))
        wait_ready(core, port, ca_secret, process, log, timeout)
        yield Kyverno(process, log)
    finally:
        stop_process(process)
        admission = kubernetes.client.AdmissionregistrationV1Api(client)
        admission.delete_collection_mutating_webhook_configuration(label_selector=MANAGED)
        admission.delete_collection_validating_webhook_configuration(label_selector=MANAGED)


FIELDS = {"metadata.namespace": NAMESPACE, "metadata.name": "kyverno-admission-controller-bench"}


def admission_container(install: list[dict]) -> dict:
    """The admission controller's container in Kyverno's rendered chart: its args and env."""
    (deployment,) = (
        document
        for document in install
        if document["kind"] == "Deployment" and document["metadata"]["name"] == "kyverno-admission-controller"
    )
    (container,) = (item for item in deployment["spec"]["template"]["spec"]["containers"] if item["name"] == "kyverno")
    return container


def wait_ready(core, port: int, ca_secret: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Until Kyverno answers its readiness check over TLS verified with the CA it published."""
    deadline = time.monotonic() + timeout
    ca_file = log.with_name("kyverno-ca.crt")
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"kyverno exited with {process.returncode}; its log ends:\n{tail(log)}")
        with contextlib.suppress(kubernetes.client.exceptions.ApiException, requests.RequestException, KeyError):
            secret = core.read_namespaced_secret(ca_secret, NAMESPACE)
            ca_file.write_bytes(base64.b64decode(secret.data["tls.crt"]))
            if requests.get(f"https://127.0.0.1:{port}/health/readiness", verify=ca_file, timeout=2).ok:
                return
        time.sleep(0.5)
    raise RuntimeError(f"kyverno was not ready in {timeout:.0f}s; its log ends:\n{tail(log)}")


def tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
