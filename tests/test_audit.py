"""What podmutate makes of a pod as stored: mutated, unmutated, stale or refused (in process)."""

import json

import pytest

from tests.helpers import apply_answer, job_pod
from tools.harness.pods import review
from webhook import admission
from webhook.engine import load_engine
from webhook.errors import ConfigError
from webhook.ops.audit import MUTATED, REFUSED, STALE, UNMUTATED, Finding, as_json, assess, matched, table

OWNED = {
    "ownerReferences": [{"kind": "Job", "name": "sync-42", "controller": True, "uid": "u", "apiVersion": "batch/v1"}]
}


def stored(pod, phase="Pending", uid="uid-1"):
    """`pod` as the API server keeps it: a uid, a status, and what it defaults after admission."""
    pod = json.loads(json.dumps(pod))
    pod["metadata"]["uid"] = uid
    pod["status"] = {"phase": phase}
    for container in pod["spec"]["containers"]:
        container.setdefault("terminationMessagePath", "/dev/termination-log")
    pod["spec"].setdefault("dnsPolicy", "ClusterFirst")
    return pod


def test_a_pod_podmutate_mutated_gives_nothing_to_change(engine):
    pod = job_pod("sync")
    mutated = apply_answer(pod, admission.review(review(pod), engine))
    finding = assess(stored(mutated), engine)
    assert (finding.state, finding.changes, finding.job_type) == (MUTATED, [], "sync")


def test_a_pod_that_got_through_is_unmutated_with_the_paths_podmutate_would_change(engine):
    pod = job_pod("sync")
    pod["metadata"].update(OWNED)
    finding = assess(stored(pod), engine)
    assert finding.state == UNMUTATED and finding.controller == "Job/sync-42"
    assert "/spec/initContainers" in finding.changes and "/spec/volumes" in finding.changes
    assert not any("mutated-by" in change for change in finding.changes)


def test_a_pod_mutated_by_another_configuration_is_stale(engine):
    pod = job_pod("sync")
    before = load_engine(environ={}, overrides={"job_types": {"sync": {"labels": {"tier": "gold"}}}})
    mutated = apply_answer(pod, admission.review(review(pod), before))
    finding = assess(stored(mutated), engine)
    assert finding.state == STALE
    assert finding.changes == []  # the new configuration would add nothing the old one did not: only the name differs


def test_a_pod_no_plugin_claims_is_no_job_pod(engine):
    assert assess(stored(job_pod(None, labels={"app": "web"})), engine) is None


def test_a_pod_podmutate_would_deny_is_refused_naming_why():
    engine = load_engine(environ={}, overrides={"connection_labels": {"required": {"default": True}}})
    finding = assess(stored(job_pod("sync")), engine)
    assert finding.state == REFUSED and "connection id" in finding.problem


def test_the_webhooks_selectors_decide_which_pods_count():
    selectors = [({"matchLabels": {"jobs": "yes"}}, {"matchExpressions": [{"key": "job_type", "operator": "Exists"}]})]
    namespaces = {"jobs": {"jobs": "yes"}, "web": {}}
    pod = stored(job_pod("sync"))
    assert matched(pod, namespaces, selectors)
    pod["metadata"]["namespace"] = "web"
    assert not matched(pod, namespaces, selectors)
    pod = stored(job_pod(None, labels={"app": "x"}))
    assert not matched(pod, namespaces, selectors)


def test_the_table_and_the_json_name_every_pod_and_its_state():
    findings = [
        Finding("jobs", "a", "u1", "sync", UNMUTATED, "Pending", ["/spec/volumes"], "Job/j"),
        Finding("jobs", "b", "u2", "check", MUTATED, "Running"),
    ]
    lines = table(findings).splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "JOB", "TYPE", "PHASE", "STATE", "WOULD", "CHANGE"]
    assert lines[1].split() == ["jobs", "a", "sync", "Pending", "unmutated", "/spec/volumes"]
    assert lines[2].split() == ["jobs", "b", "check", "Running", "mutated", "-"]
    items = json.loads(as_json(findings))["items"]
    assert [(item["name"], item["state"], item["controller"]) for item in items] == [
        ("a", UNMUTATED, "Job/j"),
        ("b", MUTATED, None),
    ]


def test_the_deletion_budget_allows_so_many_a_minute_then_again():
    from webhook.ops.safety_net import DeletionBudget

    now = [0.0]
    budget = DeletionBudget(2, clock=lambda: now[0])
    assert [budget.take() for _ in range(3)] == [True, True, False]
    now[0] = 59.9
    assert not budget.take()
    now[0] = 60.0
    assert budget.take() and budget.take() and not budget.take()


@pytest.mark.parametrize(
    ("section", "named"),
    [
        ({"action": "delete"}, "safety_net.action: 'delete' is not valid: expected report or recreate"),
        ({"max_deletions_per_minute": 0}, "safety_net.max_deletions_per_minute: 0"),
        ({"namespaces": "jobs"}, "safety_net.namespaces: 'jobs'"),
        ({"namespaces": ["Jobs"]}, "safety_net.namespaces: 'Jobs'"),
        ({"enabled": "yes"}, "safety_net.enabled: 'yes'"),
        ({"leese": "x"}, "safety_net"),
    ],
)
def test_a_bad_safety_net_setting_is_named(section, named):
    with pytest.raises(ConfigError) as error:
        load_engine(environ={}, overrides={"safety_net": section})
    assert str(error.value).startswith(named) and "\n" not in str(error.value)


def test_the_safety_net_settings_are_not_in_the_digest_pods_are_named_by():
    assert (
        load_engine(environ={}).config.digest
        == load_engine(environ={}, overrides={"safety_net": {"enabled": True}}).config.digest
    )
    assert (
        load_engine(environ={}).config.digest
        != load_engine(environ={}, overrides={"failure_mode": "fail"}).config.digest
    )


def test_a_pod_nested_past_what_a_copy_takes_is_refused_not_raised(engine):
    """One such pod must not stop the safety net's list at it (no free-form field lets the API
    server store one, but a pod from anywhere else may be)."""
    pod = stored(job_pod("sync"))
    deep = pod["metadata"]["annotations"] = {}
    for _ in range(300):
        deep["x"] = {}
        deep = deep["x"]
    finding = assess(pod, engine)
    assert finding.state == REFUSED and finding.problem
