"""What an operator sees of a running `podmutate serve`: Prometheus metrics added up over its
worker processes, JSON log lines, the mutated-by annotation and the audit annotations."""

import json
import os
import signal
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import apply_answer, job_pod
from tools.harness.pods import review
from tools.harness.processes import serve, wait_for, worker_pids
from webhook.contract import MUTATED_BY_ANNOTATION

pytestmark = pytest.mark.served  # real servers, processes or sockets on this machine

CONFIG = {"connection_labels": {"required": {"sync": True}}}  # a sync pod without a connection id is denied
CONNECTED = {"connection_id": "8f2c5a7e"}
CLOSE = {"Connection": "close"}  # a fresh connection each time: the reviews spread over both workers
BUILTIN_MUTATORS = ("connection_labels", "fix_permissions", "init_container", "profiles", "tmp_volume")


def reviews(samples, outcome, job_type):
    return samples.get(("podmutate_admission_reviews_total", (("job_type", job_type), ("outcome", outcome))), 0)


def sample(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def known_traffic(served):
    """3 sync pods mutated, 1 check pod mutated, 1 pod denied, 1 pod a plugin fails on, 1 deletion, 2 bad bodies."""
    for index in range(3):
        pod = job_pod("sync", name=f"sync-{index}", labels=CONNECTED)
        assert "patch" in served.post("/mutate", review(pod), headers=CLOSE).json()["response"]
    assert "patch" in served.post("/mutate", review(job_pod("check")), headers=CLOSE).json()["response"]
    denied = served.post("/mutate", review(job_pod("sync", name="nobody")), headers=CLOSE).json()["response"]
    assert denied["allowed"] is False
    exploding = job_pod("check", name="boom", annotations={"example.com/explode": "true"})
    assert "warnings" in served.post("/mutate", review(exploding), headers=CLOSE).json()["response"]
    assert served.post("/mutate", review(job_pod("sync"), operation="DELETE"), headers=CLOSE).status_code == 200
    assert served.post("/mutate", "not json", headers=CLOSE).status_code == 400
    assert served.post("/mutate", {"apiVersion": "v1"}, headers=CLOSE).status_code == 400


@pytest.fixture
def served(tmp_path, example_plugins):
    with serve(tmp_path, config=CONFIG, env={"PYTHONPATH": example_plugins}, workers=2) as running:
        yield running


def settled(served, ready):
    """The metrics once `ready(samples)`: a worker writes what it counted at its heartbeat."""
    scraped = {}

    def check():
        scraped["samples"] = served.metrics()
        return ready(scraped["samples"])

    assert wait_for(check)
    return scraped["samples"]


def test_metrics_count_known_traffic_over_both_workers_and_survive_a_killed_one(served, tmp_path):
    known_traffic(served)
    samples = settled(
        served,
        lambda samples: (
            sample(samples, "podmutate_request_body_bytes_count") == 9
            and sample(samples, "podmutate_patch_operations_count") == 7
            and sum(value for (name, _), value in samples.items() if name == "podmutate_admission_reviews_total") == 9
            and sample(samples, "podmutate_admission_reviews_in_flight") == 0
        ),
    )
    assert reviews(samples, "mutated", "sync") == 3
    assert reviews(samples, "mutated", "check") == 1
    assert reviews(samples, "denied", "sync") == 1
    assert reviews(samples, "failed", "check") == 1
    assert reviews(samples, "unchanged", "") == 1  # the DELETE
    assert reviews(samples, "bad_request", "") == 2
    assert sample(samples, "podmutate_admission_review_duration_seconds_count", outcome="mutated") == 4
    assert sample(samples, "podmutate_admission_review_duration_seconds_bucket", outcome="mutated", le="10.0") == 4
    assert sample(samples, "podmutate_plugin_failures_total", plugin="explode") == 1
    # Timed on each pod that got as far as it: connection_labels runs first (tryfirst) and sees
    # all six reviewed pods; it denied the sync pod, and the third-party `explode`, next, failed
    # the check pod, so the other built-ins saw the four mutated ones.
    timed = {
        plugin: sample(samples, "podmutate_plugin_duration_seconds_count", plugin=plugin) for plugin in BUILTIN_MUTATORS
    }
    assert timed == {plugin: 6 if plugin == "connection_labels" else 4 for plugin in BUILTIN_MUTATORS}
    assert sample(samples, "podmutate_patch_operations_count") == 7  # every answered review but the bad bodies
    assert sample(samples, "podmutate_patch_operations_bucket", le="0.0") == 3  # denied, failed, unchanged
    assert sample(samples, "podmutate_request_body_bytes_count") == 9
    assert sample(samples, "podmutate_admission_reviews_in_flight") == 0
    before = sample(samples, "podmutate_connections_total")  # each of the 9 on a connection of its own, and the probes
    assert before >= 9
    for _ in range(3):
        served.get("/healthz", fresh=True)
    assert sample(served.metrics(), "podmutate_connections_total") == before + 3
    assert sample(samples, "podmutate_config_last_reload_successful") == 1
    assert sample(samples, "podmutate_certificate_expiry_seconds", certificate="serving") == pytest.approx(
        365 * 86400, rel=0.01
    )
    assert sample(samples, "podmutate_certificate_expiry_seconds", certificate="ca") == pytest.approx(
        5 * 365 * 86400, rel=0.01
    )
    (digest,) = [dict(labels)["digest"] for name, labels in samples if name == "podmutate_config_info"]
    mutated = served.post("/mutate", review(job_pod("sync", labels=CONNECTED))).json()
    assert (
        json.loads(apply_answer(job_pod("sync"), mutated)["metadata"]["annotations"][MUTATED_BY_ANNOTATION])["config"]
        == digest
    )

    settled(served, lambda samples: reviews(samples, "mutated", "sync") == 4)
    for pid in worker_pids(served.process.pid):  # a worker killed outright: what it wrote still counts
        os.kill(pid, signal.SIGKILL)
    time.sleep(1)
    assert wait_for(lambda: served.get("/readyz").status_code == 200)
    after = served.metrics()
    assert reviews(after, "mutated", "sync") == 4
    assert sample(after, "podmutate_admission_reviews_in_flight") == 0


def test_configuration_reloads_and_their_results_are_counted(served, tmp_path):
    config = tmp_path / "podmutate.yaml"
    before = served.metrics()
    (digest,) = [dict(labels)["digest"] for name, labels in before if name == "podmutate_config_info"]
    # Both workers up first: a worker that starts while the file is bad fails to load it and exits
    # (and its replacements with it), as it has no last good configuration of its own.
    assert wait_for(lambda: served.log().count("Running on") >= 2)
    # Each worker polls the file on its own, and one that read it half-written (truncated, say)
    # would count that version too: the file is replaced whole, as a ConfigMap volume does it.
    replace_file(config, "failure_mode: sometimes\n")
    refusals = lambda: sample(served.metrics(), "podmutate_config_reloads_total", result="failure")  # noqa: E731
    assert wait_for(lambda: refusals() == 2), f"refusals counted: {refusals()}; log:\n{served.log()[-3000:]}"
    assert sample(served.metrics(), "podmutate_config_last_reload_successful") == 0
    replace_file(config, json.dumps({**CONFIG, "failure_mode": "fail"}))
    assert wait_for(lambda: sample(served.metrics(), "podmutate_config_last_reload_successful") == 1)
    samples = served.metrics()
    assert sample(samples, "podmutate_config_reloads_total", result="success") == 2
    assert sample(samples, "podmutate_config_info", digest=digest) == 0
    assert [
        dict(labels)["digest"] for (name, labels), value in samples.items() if name == "podmutate_config_info" and value
    ] != [digest]


def test_the_metrics_page_is_prometheus_text_with_help_and_types(served):
    served.post("/mutate", review(job_pod("check")))
    settled(served, lambda samples: reviews(samples, "mutated", "check") == 1)
    text = requests.get(f"http://127.0.0.1:{served.metrics_port}/metrics", timeout=10).text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["podmutate_admission_reviews"].type == "counter"
    assert families["podmutate_admission_review_duration_seconds"].type == "histogram"
    assert families["podmutate_certificate_expiry_seconds"].type == "gauge"
    assert all(family.documentation for family in families.values())


def test_json_logs_have_one_line_per_review_at_debug_and_nothing_of_the_pod(tmp_path, example_plugins):
    secret = "hunter2-do-not-log"
    env = {"PYTHONPATH": example_plugins, "PODMUTATE_LOG_FORMAT": "json", "PODMUTATE_LOG_LEVEL": "debug"}
    with serve(tmp_path, config=CONFIG, env=env, workers=1) as served:
        pod = job_pod(
            "sync",
            labels=CONNECTED,
            containers=[{"name": "main", "image": "busybox:1.35", "env": [{"name": "PASSWORD", "value": secret}]}],
        )
        served.post("/mutate", review(pod, uid="uid-1"))
        served.post("/mutate", review(job_pod("sync", name="nobody"), uid="uid-2"))
        lines = [json.loads(line) for line in wait_for(lambda: review_lines(served, 2))]
        log_text = served.log()
    mutated, denied = sorted(lines, key=lambda line: line["review"]["uid"])
    assert mutated["level"] == "DEBUG" and denied["level"] == "WARNING"
    assert mutated["review"]["pod"] == "jobs/source-pg-sync-1-0-abcde"
    assert mutated["review"]["outcome"] == "mutated" and mutated["review"]["job_type"] == "sync"
    assert set(mutated["review"]["changed_by"].split(",")) >= {"profiles", "init_container", "tmp_volume"}
    assert denied["review"]["plugin"] == "connection_labels"
    assert mutated["review"]["patch_operations"] > 0 and mutated["review"]["duration_ms"] > 0
    assert denied["review"]["outcome"] == "denied" and "connection" in denied["review"]["error"]
    assert secret not in log_text
    for line in log_text.splitlines():  # every line of the server, the supervisor's too, is JSON
        assert json.loads(line)["logger"]


def review_lines(served, count):
    lines = [line for line in served.log().splitlines() if '"review"' in line]
    return lines if len(lines) >= count else None


def test_the_annotation_and_audit_annotations_name_what_podmutate_did(served):
    pod = job_pod("sync", labels=CONNECTED)
    answer = served.post("/mutate", review(pod)).json()
    mutated = apply_answer(pod, answer)
    named = json.loads(mutated["metadata"]["annotations"][MUTATED_BY_ANNOTATION])
    assert set(named["plugins"]) >= set(BUILTIN_MUTATORS) and "explode" in named["plugins"]
    audit = answer["response"]["auditAnnotations"]
    assert audit["mutated-by"] == mutated["metadata"]["annotations"][MUTATED_BY_ANNOTATION]
    assert audit["job-type"] == "sync" and int(audit["patch"]) > 0
    again = served.post("/mutate", review(mutated)).json()["response"]  # reinvoked: nothing to change
    assert "patch" not in again and "auditAnnotations" not in again


def replace_file(path, text):
    """Write `text` beside `path`, then rename it over `path`: readers see the old file or the new."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(text)
    os.replace(fresh, path)
