"""podmutate deployed from its own image and manifests/base, as an operator would, on a real node."""

import subprocess

from tests.node.conftest import NAMESPACE, WEBHOOK_LABELS, ca_bundle, verifies, wait_for, webhook_pods
from tools.harness.processes import PODMUTATE

CA_RACE_TRIALS = 10


def test_both_replicas_serve_a_certificate_the_ca_bundle_verifies(podmutate, core, kubectl):
    pods = webhook_pods(core)
    assert len(pods) == 2
    bundle = ca_bundle(kubectl)
    # Each replica on its own pod IP: one good connection proves nothing about the other.
    assert {pod.status.pod_ip: verifies(bundle, pod.status.pod_ip) for pod in pods} == {
        pod.status.pod_ip: True for pod in pods
    }


def test_doctor_passes_against_the_live_cluster(podmutate, core, cluster):
    pod_ip = webhook_pods(core)[0].status.pod_ip
    result = subprocess.run(
        [*PODMUTATE, "doctor", "--kubeconfig", cluster.kubeconfig, "--url", f"https://{pod_ip}:8443/mutate"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fail" not in result.stdout.split()


def test_doctor_outside_the_cluster_checks_each_replica_through_a_port_forward(podmutate, core, cluster):
    """No --url: every replica's certificate is checked through the API server's port-forward."""
    result = subprocess.run(
        [*PODMUTATE, "doctor", "--kubeconfig", cluster.kubeconfig], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for pod in webhook_pods(core):
        assert f"caBundle verifies the certificate served at pod {pod.metadata.name}" in result.stdout, result.stdout
    assert "pass --url" not in result.stdout
    assert "safety net:" in result.stdout  # the node's configuration turns it off: said so


def test_replicas_start_without_error_lines_under_a_read_only_root(podmutate, core, kubectl):
    for pod in webhook_pods(core):
        log = kubectl("-n", NAMESPACE, "logs", pod.metadata.name).stdout
        assert "serving https://" in log
        problems = [
            line
            for line in log.splitlines()
            if " ERROR " in line or "[ERROR]" in line or "Traceback" in line or "Read-only file system" in line
        ]
        assert problems == [], pod.metadata.name


def test_replicas_started_together_agree_on_one_ca_every_time(podmutate, core, kubectl):
    """Fresh starts with both replicas racing to create the CA: 0 mismatches allowed."""
    mismatches = []
    for trial in range(CA_RACE_TRIALS):
        kubectl("-n", NAMESPACE, "scale", "deployment/podmutate", "--replicas=0")
        kubectl(
            "-n",
            NAMESPACE,
            "delete",
            "pods",
            "-l",
            WEBHOOK_LABELS,
            "--grace-period=0",
            "--force",
            "--ignore-not-found",
            "--wait=true",
        )
        kubectl("-n", NAMESPACE, "delete", "secret", "podmutate-tls", "--ignore-not-found")
        kubectl("-n", NAMESPACE, "scale", "deployment/podmutate", "--replicas=2")
        podmutate.wait_rolled_out()
        pods = wait_for(lambda: len(webhook_pods(core)) == 2 and webhook_pods(core), "two Ready replicas")
        bundle = ca_bundle(kubectl)
        secret = core.read_namespaced_secret("podmutate-tls", NAMESPACE)
        if secret.data["ca.crt"] != bundle:
            mismatches.append(f"trial {trial}: the Secret's CA is not the caBundle")
        for pod in pods:
            if not verifies(bundle, pod.status.pod_ip):
                mismatches.append(f"trial {trial}: {pod.metadata.name} serves a certificate the caBundle refuses")
    assert mismatches == []
