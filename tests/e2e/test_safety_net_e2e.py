"""The safety net on a real API server: Lease, list + watch, Events, recreation, handover.

There is no kubelet here, so pods stay Pending, and no garbage collector or Job controller: a
pod's "controller" is an ownerReference to a ReplicaSet that nobody runs, which is all the
safety net reads. The nets run in this process (two of them: two replicas) against the real
API server, with a Lease of 3 s instead of 15 so that a handover takes seconds.
"""

import logging
import os

import pytest

from tests.e2e.conftest import job_pod_manifest, register
from tools.harness.processes import MemoryCgroup, abnormal_exits, manifest_memory_limit, serve, wait_for
from webhook.engine import load_engine
from webhook.ops.safety_net import REASON, SafetyNet

pytestmark = pytest.mark.e2e


def owned(manifest):
    manifest["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": "sync-rs",
            "uid": "0b7a5f3e-0000-4000-8000-000000000001",
            "controller": True,
        }
    ]
    return manifest


def events_of(core, namespace, name):
    return [
        event
        for event in core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
        if event.reason == REASON
    ]


def names(core, namespace):
    return {pod.metadata.name for pod in core.list_namespaced_pod(namespace).items}


@pytest.fixture
def nets(api_client, namespace):
    started = []

    def start(name, **settings):
        engine = load_engine(
            environ={},
            overrides={
                "safety_net": {"enabled": True, "namespaces": [namespace], "lease": f"net-{namespace}", **settings}
            },
        )
        net = SafetyNet(
            api_client, lambda: engine, namespace=namespace, holder=name, lease_seconds=3, renew_seconds=0.5
        )
        net.start()
        started.append(net)
        return net

    yield start
    for net in started:
        net.stop()


def test_the_leader_tells_of_each_unmutated_pod_once_recreates_owned_ones_and_hands_over(
    admissionregistration, kubectl, podmutate, core, namespace, nets
):
    core.create_namespaced_pod(namespace, owned(job_pod_manifest("sync", name="owned-unmutated")))
    core.create_namespaced_pod(namespace, job_pod_manifest("sync", name="bare-unmutated"))
    core.create_namespaced_pod(
        namespace, {"metadata": {"name": "web"}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}
    )
    webhook = register(
        admissionregistration, kubectl, podmutate.url, podmutate.ca_file, namespace, failure_policy="Ignore"
    )
    core.create_namespaced_pod(namespace, job_pod_manifest("sync", name="mutated"))

    first = nets("replica-a", action="recreate")
    assert wait_for(lambda: first.leading, timeout=20)
    second = nets("replica-b", action="recreate")

    # The owned Pending pod is deleted for its controller to make again; the bare one is told of and kept.
    assert wait_for(lambda: "owned-unmutated" not in names(core, namespace), timeout=30)
    assert wait_for(lambda: events_of(core, namespace, "bare-unmutated"), timeout=30)
    (told,) = events_of(core, namespace, "bare-unmutated")
    assert told.type == "Warning" and "/spec/initContainers" in told.message
    assert len(events_of(core, namespace, "owned-unmutated")) == 1
    assert events_of(core, namespace, "mutated") == [] and events_of(core, namespace, "web") == []
    assert "bare-unmutated" in names(core, namespace)
    leading, unmutated, found, recreated = first.figures()
    assert leading and unmutated == {(namespace, "sync"): 1} and found == {(namespace, "sync"): 2} and recreated == 1
    assert not second.leading and second.figures()[0] is False

    first.stop(release=False)  # dies holding the Lease: the other waits it out, then leads
    assert wait_for(lambda: second.leading, timeout=30)
    admissionregistration.delete_mutating_webhook_configuration(webhook)  # podmutate gone again
    probe = job_pod_manifest("check", name="after-handover")
    assert wait_for(lambda: not core.create_namespaced_pod(namespace, probe, dry_run="All").spec.init_containers)
    core.create_namespaced_pod(namespace, probe)
    assert wait_for(lambda: events_of(core, namespace, "after-handover"), timeout=30)
    assert wait_for(lambda: second.figures()[1] == {(namespace, "sync"): 1, (namespace, "check"): 1}, timeout=30)
    assert len(events_of(core, namespace, "bare-unmutated")) == 1  # not told of twice
    assert second.figures()[2] == {(namespace, "check"): 1}


def test_report_only_deletes_nothing_and_a_deleted_pod_leaves_the_gauge(core, namespace, nets):
    core.create_namespaced_pod(namespace, owned(job_pod_manifest("sync", name="owned")))
    net = nets("only-one")
    assert wait_for(lambda: events_of(core, namespace, "owned"), timeout=30)
    assert "owned" in names(core, namespace)
    assert net.figures()[1] == {(namespace, "sync"): 1}
    core.delete_namespaced_pod("owned", namespace, grace_period_seconds=0)
    assert wait_for(lambda: net.figures()[1] == {}, timeout=30)


def test_deletions_keep_to_their_budget(core, namespace, nets, caplog):
    for index in range(4):
        core.create_namespaced_pod(namespace, owned(job_pod_manifest("sync", name=f"owned-{index}")))
    net = nets("budgeted", action="recreate", max_deletions_per_minute=2)
    # Every pod seen: two deleted, the other two left for a minute that has not come.
    assert wait_for(lambda: caplog.text.count("left for now: 2 deletions a minute at most") >= 2, timeout=30)
    assert net.figures()[3] == 2 and len(names(core, namespace)) == 2


def test_a_watch_the_api_server_ends_with_410_gone_is_listed_again_and_goes_on(
    core, namespace, nets, caplog, monkeypatch
):
    """410 Gone: the version watched from is older than the API server keeps. This one's watch
    cache answers an old version with an empty stream instead (tried: version 1, etcd compacted),
    so the first watch is made to carry the ERROR event an API server sends then — the one fake
    part; the lists and the watches after it are the API server's."""
    real = SafetyNet.stream
    ended = []

    def gone_once(self, watched, version):
        if not ended:
            ended.append(version)
            yield {
                "type": "ERROR",
                "object": {"kind": "Status", "code": 410, "message": f"too old resource version: {version}"},
            }
            return
        yield from real(self, watched, version)

    monkeypatch.setattr(SafetyNet, "stream", gone_once)
    caplog.set_level(logging.INFO, logger="webhook.ops.safety_net")
    core.create_namespaced_pod(namespace, job_pod_manifest("sync", name="before"))
    nets("watcher")
    assert wait_for(lambda: "watch too old (410 Gone), listing again" in caplog.text, timeout=30)
    core.create_namespaced_pod(namespace, job_pod_manifest("sync", name="after"))
    assert wait_for(lambda: events_of(core, namespace, "after"), timeout=30)
    assert len(events_of(core, namespace, "before")) == 1  # listed twice, told of once


def test_large_pods_keep_the_supervisor_within_the_manifests_memory_limit(control_plane, core, namespace, tmp_path):
    """Whoever may create pods in a job namespace may make each as large as the API server stores
    (1.5 MiB in etcd) and of the smallest fields. `podmutate serve` with the safety net, under the
    manifests' memory limit (a cgroup): the supervisor reads them a pod at a time, and lives."""
    reason = MemoryCgroup.available()
    if reason:
        pytest.fail(reason) if os.environ.get("CI") else pytest.skip(reason)
    tiny = [{"name": f"V{index}", "value": "x"} for index in range(40_000)]  # ~1.2 MiB of the smallest fields
    for index in range(12):
        pod = job_pod_manifest("sync", name=f"large-{index}")
        pod["spec"]["containers"][0]["env"] = tiny
        core.create_namespaced_pod(namespace, pod)
    cgroup = MemoryCgroup(manifest_memory_limit())
    try:
        config = {"safety_net": {"enabled": True, "namespaces": [namespace], "lease": f"net-{namespace}"}}
        env = {"POD_NAMESPACE": namespace, "KUBECONFIG": control_plane.kubeconfig}
        with serve(tmp_path, config=config, env=env, workers=2, cgroup=cgroup) as served:
            told = wait_for(lambda: len(told_of(core, namespace)) == 12 and told_of(core, namespace), timeout=180)
            assert told, f"told of {len(told_of(core, namespace))} of 12"
            assert served.process.poll() is None and cgroup.oom_kills() == 0
            assert abnormal_exits(served.log()) == []
            peak, limit = cgroup.peak(), cgroup.limit
            print(
                f"\nsupervisor and two workers, 12 pods of 1.2 MiB: peak {peak / 2**20:.0f} MiB of {limit / 2**20:.0f}"
            )
    finally:
        cgroup.remove()


def told_of(core, namespace):
    events = core.list_namespaced_event(namespace, field_selector=f"reason={REASON}").items
    return {event.involved_object.name for event in events}
