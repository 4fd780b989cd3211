"""podmutate's /metrics on the real node: scraped from each replica's pod IP and through the
Service, after job pods created through the API server (kubectl, as an operator would)."""

import json
import uuid

import requests

from tests.node.conftest import NAMESPACE, WEBHOOK_LABELS, admission_only_pod, wait_for, webhook_pods
from tools.harness.processes import metric_samples

METRICS_PORT = 8000
PODS = 6


def scrape(address):
    return metric_samples(requests.get(f"http://{address}:{METRICS_PORT}/metrics", timeout=10).text)


def total(samples_by_replica, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    return sum(samples.get(key, 0) for samples in samples_by_replica)


def job_pod(index, job_type):
    return admission_only_pod(f"metrics-{job_type}-{index}-{uuid.uuid4().hex[:4]}", "metrics", job_type)


def test_metrics_count_the_job_pods_created_through_the_api_server(podmutate, core, kubectl):
    # Only once the replicas of an earlier rollout are gone: until then the API server's open
    # connections may still carry reviews to them, and they would not be scraped.
    podmutate.wait_rolled_out()
    wait_for(
        lambda: len(core.list_namespaced_pod(NAMESPACE, label_selector=WEBHOOK_LABELS).items) == 2,
        "no replica of an earlier rollout left",
        timeout=90,
    )
    pods = webhook_pods(core)
    assert len(pods) == 2
    addresses = [pod.status.pod_ip for pod in pods]
    before = [scrape(address) for address in addresses]
    kubectl("create", "namespace", "metrics", check=False)
    for index in range(PODS):
        kubectl("-n", "metrics", "create", "-f", "-", input=json.dumps(job_pod(index, "sync")))
    kubectl("-n", "metrics", "create", "--dry-run=server", "-f", "-", input=json.dumps(job_pod(0, "check")))

    def counted():
        """Every review counted, once the replicas' workers have written what they counted (at
        their heartbeat): each pod is reviewed twice (below)."""
        scraped = [scrape(address) for address in addresses]
        reviewed = total(scraped, "podmutate_request_body_bytes_count") - total(
            before, "podmutate_request_body_bytes_count"
        )
        return (
            scraped
            if reviewed >= 2 * (PODS + 1) and total(scraped, "podmutate_admission_reviews_in_flight") == 0
            else None
        )

    after = wait_for(counted, "the reviews counted", timeout=30)

    def delta(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("podmutate_admission_reviews_total", outcome="mutated", job_type="sync") == PODS
    assert delta("podmutate_admission_reviews_total", outcome="mutated", job_type="check") == 1  # a dry run too
    # Each pod is reviewed twice: the ServiceAccount admission plugin mounts its token in the init
    # container podmutate added, and so the API server re-invokes the webhook (reinvocationPolicy:
    # IfNeeded), whose second review changes nothing.
    assert delta("podmutate_admission_reviews_total", outcome="unchanged", job_type="sync") == PODS
    assert delta("podmutate_admission_reviews_total", outcome="unchanged", job_type="check") == 1
    assert delta("podmutate_admission_review_duration_seconds_count", outcome="mutated") == PODS + 1
    assert delta("podmutate_plugin_duration_seconds_count", plugin="init_container") == 2 * (PODS + 1)
    assert delta("podmutate_request_body_bytes_count") == 2 * (PODS + 1)
    assert total(after, "podmutate_admission_reviews_total", outcome="failed", job_type="sync") == 0
    for samples in after:  # every replica: its certificates, its configuration
        assert 0 < samples[("podmutate_certificate_expiry_seconds", (("certificate", "serving"),))] <= 366 * 86400
        assert samples[("podmutate_certificate_expiry_seconds", (("certificate", "ca"),))] > 4 * 365 * 86400
        assert samples[("podmutate_config_last_reload_successful", ())] == 1
        assert samples[("podmutate_admission_reviews_in_flight", ())] == 0
    service = core.read_namespaced_service("podmutate", NAMESPACE)
    through_service = scrape(service.spec.cluster_ip)  # one replica or the other, through kube-proxy
    assert ("podmutate_config_last_reload_successful", ()) in through_service
    kubectl("delete", "namespace", "metrics", "--wait=false")
