"""The Keycloak example plugin on the real node: podmutate's image with the plugin installed over it
(examples/podmutate-keycloak/Containerfile), deployed with the example's manifests. Keycloak pods are
admitted clustered, and the headless Service JGroups queries lists every replica.

No Keycloak image is needed: a stand-in (busybox httpd) listens on 7800, the jgroups port.
"""

import copy

import pytest
import yaml

from tests.helpers import HERE
from tests.node.conftest import CONFIG, wait_for

KEYCLOAK = "keycloak"
LABELS = {"app.kubernetes.io/name": "keycloak"}  # the plugin's default selector
REPLICAS = 3
EXAMPLE = f"{HERE}/../examples/podmutate-keycloak"
IMAGE = ("ghcr.io/podmutate/podmutate-keycloak", "localhost/podmutate-keycloak:dev")
# Readiness timings short enough for a test; the rest are the plugin's defaults (Airbyte's chart).
PROBES = {"readiness": {"initialDelaySeconds": 1, "periodSeconds": 1}}

STAND_IN = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "keycloak"},
    "spec": {
        "replicas": REPLICAS,
        "selector": {"matchLabels": LABELS},
        "template": {
            "metadata": {"labels": LABELS},
            "spec": {
                "containers": [
                    {
                        "name": "keycloak",
                        "image": "busybox:1.35",
                        "command": ["httpd", "-f", "-p", "7800"],
                        "readinessProbe": {"tcpSocket": {"port": 7800}},
                        "livenessProbe": {"tcpSocket": {"port": 7800}},
                    }
                ]
            },
        },
    },
}


@pytest.fixture
def keycloak(podmutate, kubectl):
    config = copy.deepcopy(CONFIG)
    config["keycloak"] = {"probes": PROBES}
    podmutate.apply("../examples/podmutate-keycloak/manifests", config=config, image=IMAGE)
    kubectl("create", "namespace", KEYCLOAK, check=False)
    # Replicas of the image without the plugin may answer for a moment after the rollout (until
    # the Service drops them): wait until a server-side dry run comes back clustered.
    probe_pod = yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "probe", "labels": LABELS},
            "spec": {"containers": [{"name": "keycloak", "image": "busybox:1.35"}]},
        }
    )
    wait_for(
        lambda: (
            "jgroups.dns.query"
            in kubectl("create", "-n", KEYCLOAK, "--dry-run=server", "-o", "json", "-f", "-", input=probe_pod).stdout
        ),
        "podmutate with the Keycloak plugin to answer",
        timeout=60,
    )
    kubectl("apply", "-n", KEYCLOAK, "-f", f"{EXAMPLE}/manifests/headless-service.yaml")
    yield
    kubectl("delete", "namespace", KEYCLOAK, "--wait=false", check=False)
    podmutate.apply()


def ready(pod):
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def test_keycloak_pods_are_admitted_clustered_and_found_through_the_headless_service(keycloak, kubectl, core):
    kubectl("apply", "-n", KEYCLOAK, "-f", "-", input=yaml.safe_dump(STAND_IN))

    def ready_replicas():
        pods = [pod for pod in core.list_namespaced_pod(KEYCLOAK).items if ready(pod)]
        return pods if len(pods) == REPLICAS else None

    pods = wait_for(ready_replicas, f"{REPLICAS} Ready Keycloak replicas", timeout=120)
    for pod in pods:
        (container,) = pod.spec.containers
        env = {variable.name: variable.value for variable in container.env}
        assert env["JAVA_OPTS_APPEND"] == "-Djgroups.dns.query=keycloak-headless"
        assert env["KC_CACHE"] == "ispn" and env["KC_CACHE_STACK"] == "kubernetes"
        assert [(port.name, port.container_port) for port in container.ports] == [("jgroups", 7800)]
        assert (
            container.readiness_probe.initial_delay_seconds,
            container.readiness_probe.period_seconds,
            container.readiness_probe.failure_threshold,
        ) == (1, 1, 10)
        assert (container.liveness_probe.initial_delay_seconds, container.liveness_probe.period_seconds) == (60, 5)
        assert not pod.spec.init_containers  # not a job pod: podmutate's job-pod plugins left it alone

    def listed():
        slices = yaml.safe_load(
            kubectl(
                "get",
                "endpointslices",
                "-n",
                KEYCLOAK,
                "-o",
                "yaml",
                "-l",
                "kubernetes.io/service-name=keycloak-headless",
            ).stdout
        )["items"]
        endpoints = [
            endpoint
            for item in slices
            for endpoint in item.get("endpoints") or []
            if endpoint.get("conditions", {}).get("ready")
        ]
        ports = {(port["name"], port["port"]) for item in slices for port in item.get("ports") or []}
        addresses = sorted(address for endpoint in endpoints for address in endpoint["addresses"])
        return (addresses, ports) if len(addresses) == REPLICAS else None

    addresses, ports = wait_for(listed, "the EndpointSlice to list every replica", timeout=60)
    assert addresses == sorted(pod.status.pod_ip for pod in pods)
    assert ports == {("jgroups", 7800)}
