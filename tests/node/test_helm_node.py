"""The Helm chart on the real node: install, then an upgrade that changes the launcher's RBAC and
podmutate's image, then a rollback, while job pods are launched without pause by the launcher's
own service account. Airbyte's chart failed here ("forbidden" during upgrades, its Role split
across rules and re-made by hooks); this one must not: 0 forbidden, 0 failed, 0 unmutated."""

import json
import os
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import kubernetes
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from tests.node.conftest import CONFIG, IMAGE, NAMESPACE, admission_only_pod, is_mutated
from tests.test_helm import CHART

JOBS = "jobs"
LAUNCHER = f"system:serviceaccount:{JOBS}:podmutate-launcher"
NEXT_TAG = "next"  # the image of the upgrade: the same build, tagged anew
RATE = 5.0  # launches per second


class Launches:
    """Creates and lists job pods as the launcher's account, without pause, until stopped."""

    def __init__(self, kubeconfig):
        client = kubernetes.config.new_client_from_config(config_file=kubeconfig)
        client.set_default_header("Impersonate-User", LAUNCHER)
        self.core = kubernetes.client.CoreV1Api(client)
        self.phase = "installed"
        self.counts = {}
        self.problems = []
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _launch(self, index, phase):
        pod = admission_only_pod(f"helm-{index:04d}-{uuid.uuid4().hex[:4]}", "helm")
        try:
            created = self.core.create_namespaced_pod(JOBS, pod)
            self.core.list_namespaced_pod(JOBS, label_selector="connection_id=helm", limit=1)  # what kill does first
            outcome = "mutated" if is_mutated(created) else "unmutated"
        except ApiException as error:
            outcome = "forbidden" if error.status == 403 else "failed"
            self.problems.append(f"{phase}: {error.status} {error.reason}: {error.body}"[:300])
        with self._lock:
            counts = self.counts.setdefault(phase, {})
            counts[outcome] = counts.get(outcome, 0) + 1

    def run(self):
        with ThreadPoolExecutor(max_workers=8) as pool:
            started, index = time.monotonic(), 0
            while not self._stop.is_set():
                pool.submit(self._launch, index, self.phase)
                index += 1
                time.sleep(max(0.0, started + index / RATE - time.monotonic()))

    def stop(self):
        self._stop.set()


@pytest.fixture
def helm_release(helm, cluster, kubectl, podmutate, tmp_path):
    """The kustomize install removed, then the chart installed with the local image; afterwards the
    release uninstalled and the kustomize install restored for the tests that follow."""

    def run(*args, timeout=300):
        result = subprocess.run(
            [helm, "--kubeconfig", cluster.kubeconfig, *args], capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}{result.stderr}"
        return result

    kubectl("delete", "-k", os.path.join(podmutate.manifests, "base"), "--wait=true", "--ignore-not-found", timeout=300)
    repository, tag = IMAGE.rsplit(":", 1)
    cluster.ctr("images", "tag", "--force", IMAGE, f"{repository}:{NEXT_TAG}")
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump({"image": {"repository": repository, "tag": tag}, "config": yaml.safe_dump(CONFIG)})
    )
    run("install", "podmutate", CHART, "-n", NAMESPACE, "--create-namespace", "-f", str(values), "--wait")
    yield run
    run("uninstall", "podmutate", "-n", NAMESPACE, "--wait")
    podmutate.apply()


def role_resources(kubectl):
    role = json.loads(kubectl("-n", JOBS, "get", "role", "podmutate-launcher", "-o", "json").stdout)
    return [rule["resources"] for rule in role["rules"]]


def image_of(kubectl):
    return kubectl(
        "-n", NAMESPACE, "get", "deployment", "podmutate", "-o", "jsonpath={.spec.template.spec.containers[0].image}"
    ).stdout


def test_upgrade_and_rollback_while_jobs_launch_leave_no_window(helm_release, cluster, kubectl):
    launches = Launches(cluster.kubeconfig)
    runner = threading.Thread(target=launches.run)
    runner.start()
    try:
        time.sleep(5)
        launches.phase = "upgrade"
        helm_release("upgrade", "podmutate", CHART, "-n", NAMESPACE, "--reuse-values", "--wait",
                     "--set", f"image.tag={NEXT_TAG}", "--set", "launcher.extraResources={secrets}")  # fmt: skip
        assert role_resources(kubectl) == [["pods", "pods/exec", "events", "secrets"]]  # one rule, one more item
        assert image_of(kubectl).endswith(f":{NEXT_TAG}")
        time.sleep(5)
        launches.phase = "rollback"
        helm_release("rollback", "podmutate", "1", "-n", NAMESPACE, "--wait")
        assert role_resources(kubectl) == [["pods", "pods/exec", "events"]]
        assert not image_of(kubectl).endswith(f":{NEXT_TAG}")
        time.sleep(5)
    finally:
        launches.stop()
        runner.join(60)
        print(f"\nlaunches as {LAUNCHER} through helm install, upgrade and rollback: {launches.counts}")
    assert launches.problems == []
    assert set(launches.counts) == {"installed", "upgrade", "rollback"}
    for phase, counts in launches.counts.items():
        assert set(counts) == {"mutated"} and counts["mutated"] > 0, (phase, counts)
