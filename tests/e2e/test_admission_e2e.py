"""podmutate called by a real kube-apiserver over verified TLS, checked with the real kubectl."""

import base64
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from certs import CA
from tests.e2e.conftest import JOB_TYPE_LABEL, is_mutated, job_pod_manifest, register
from tools.harness.processes import cpu_seconds_of, serve, worker_pids

JOB_TYPES = ["spec", "check", "discover", "sync", "orchestrator"]
INTERVALS = {"spec": "1", "check": "1", "discover": "1", "sync": "30", "orchestrator": "30"}


def owned_fields(pod):
    """The parts of a pod podmutate writes (built-in admission plugins add others)."""
    spec = pod["spec"]
    main = next(container for container in spec["containers"] if container["name"] == "main")
    return {
        "labels": {
            key: value
            for key, value in pod["metadata"]["labels"].items()
            if key in {"connection_id", "job_id", "attempt_id"}
        },
        "interval": pod["metadata"]["annotations"].get("podmutate.io/status-check-interval"),
        "init": [container["name"] for container in spec.get("initContainers", [])],
        "volumes": sorted(volume["name"] for volume in spec.get("volumes", [])),
        "main_mounts": sorted(mount["mountPath"] for mount in main.get("volumeMounts", [])),
    }


def expected_fields(job_type):
    return {
        "labels": {"connection_id": "8f2c5a7e-0c1d-4d7e-9a55-3e0f1b2c4d5e", "job_id": "7", "attempt_id": "0"},
        "interval": INTERVALS[job_type],
        "init": ["init"],
        "volumes": ["airbyte-config", "airbyte-pipes", "tmp"],
        "main_mounts": ["/config", "/pipes", "/tmp"],
    }


@pytest.fixture
def registered(admissionregistration, kubectl, podmutate, namespace):
    register(admissionregistration, kubectl, podmutate.url, podmutate.ca_file, namespace)
    return namespace


@pytest.mark.parametrize("job_type", JOB_TYPES)
def test_server_side_dry_run_returns_the_mutated_pod(kubectl, registered, tmp_path, job_type):
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(json.dumps(job_pod_manifest(job_type)))
    result = kubectl("apply", "-n", registered, "--dry-run=server", "-f", str(manifest), "-o", "json")
    assert owned_fields(json.loads(result.stdout)) == expected_fields(job_type)
    assert kubectl("get", "pods", "-n", registered, "-o", "json").stdout.count('"kind": "Pod"') == 0


def test_a_created_pod_is_stored_mutated(kubectl, core, registered):
    manifest = job_pod_manifest("sync", name="source-pg-sync-7-0-abcde")
    kubectl("create", "-n", registered, "-f", "-", input=json.dumps(manifest))
    stored = json.loads(kubectl("get", "pod", "source-pg-sync-7-0-abcde", "-n", registered, "-o", "json").stdout)
    assert owned_fields(stored) == expected_fields("sync")
    assert core.read_namespaced_pod("source-pg-sync-7-0-abcde", registered).spec.init_containers[0].name == "init"


def test_a_pod_without_the_job_type_label_is_stored_untouched(kubectl, registered):
    manifest = job_pod_manifest("sync", name="web")
    del manifest["metadata"]["labels"][JOB_TYPE_LABEL]
    kubectl("create", "-n", registered, "-f", "-", input=json.dumps(manifest))
    stored = json.loads(kubectl("get", "pod", "web", "-n", registered, "-o", "json").stdout)
    assert "initContainers" not in stored["spec"]
    assert "labels" not in stored["metadata"]
    assert "volumeMounts" not in stored["spec"]["containers"][0]


@pytest.mark.parametrize("failure_policy", ["Ignore", "Fail"])
def test_a_stopped_webhook_and_the_failure_policy(admissionregistration, kubectl, namespace, tmp_path, failure_policy):
    with serve(tmp_path) as served:
        name = register(
            admissionregistration, kubectl, served.url, served.ca_file, namespace, failure_policy=failure_policy
        )
    manifest = json.dumps(job_pod_manifest("check", name="after-stop"))
    result = kubectl("create", "-n", namespace, "-f", "-", input=manifest, check=False)
    if failure_policy == "Ignore":
        assert result.returncode == 0, result.stderr
        stored = json.loads(kubectl("get", "pod", "after-stop", "-n", namespace, "-o", "json").stdout)
        assert not is_mutated(stored)
    else:
        assert result.returncode != 0
        assert f'failed calling webhook "{name}.podmutate.io"' in result.stderr


class SidecarInjector(BaseHTTPRequestHandler):
    """A second webhook that adds a container after podmutate ran (and is never re-invoked)."""

    def do_POST(self):
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        pod = review["request"]["object"]
        patch = []
        if not any(container["name"] == "sidecar" for container in pod["spec"]["containers"]):
            patch = [
                {
                    "op": "add",
                    "path": "/spec/containers/-",
                    "value": {"name": "sidecar", "image": "alpine/socat:1.7.4.4-r0"},
                }
            ]
        response = {"uid": review["request"]["uid"], "allowed": True}
        if patch:
            response.update(patchType="JSONPatch", patch=base64.b64encode(json.dumps(patch).encode()).decode())
        body = json.dumps(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def sidecar_webhook(tmp_path):
    ca = CA.create("sidecar test CA")
    serving = ca.issue("127.0.0.1")
    (tmp_path / "sidecar.crt").write_bytes(serving.cert_pem())
    (tmp_path / "sidecar.key").write_bytes(serving.key_pem())
    (tmp_path / "sidecar-ca.crt").write_bytes(ca.cert_pem())
    server = ThreadingHTTPServer(("127.0.0.1", 0), SidecarInjector)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "sidecar.crt", tmp_path / "sidecar.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", str(tmp_path / "sidecar-ca.crt")
    server.shutdown()


def test_reinvocation_completes_the_pod_without_duplicates(
    admissionregistration, kubectl, podmutate, namespace, sidecar_webhook
):
    # Webhooks run in the order of their configurations' names: podmutate first, then the
    # sidecar injector; IfNeeded re-invokes podmutate to mount /tmp in the new container.
    register(
        admissionregistration, kubectl, podmutate.url, podmutate.ca_file, namespace, name=f"a-podmutate-{namespace}"
    )
    url, ca_file = sidecar_webhook
    register(
        admissionregistration,
        kubectl,
        url,
        ca_file,
        namespace,
        name=f"b-sidecar-{namespace}",
        path="/",
        reinvocation="Never",
        probe=False,
    )
    manifest = json.dumps(job_pod_manifest("sync", name="reinvoked"))
    deadline = time.monotonic() + 30  # the second configuration takes a moment to take effect
    while (
        len(
            json.loads(
                kubectl("create", "-n", namespace, "--dry-run=server", "-o", "json", "-f", "-", input=manifest).stdout
            )["spec"]["containers"]
        )
        < 2
    ):
        assert time.monotonic() < deadline, "the sidecar webhook did not take effect in 30 s"
        time.sleep(0.3)
    kubectl("create", "-n", namespace, "-f", "-", input=manifest)
    stored = json.loads(kubectl("get", "pod", "reinvoked", "-n", namespace, "-o", "json").stdout)
    containers = {container["name"]: container for container in stored["spec"]["containers"]}
    assert set(containers) == {"main", "sidecar"}
    assert [mount["mountPath"] for mount in containers["sidecar"]["volumeMounts"]] == ["/tmp"]
    assert [container["name"] for container in stored["spec"]["initContainers"]] == ["init"]
    assert sorted(volume["name"] for volume in stored["spec"]["volumes"]) == ["airbyte-config", "airbyte-pipes", "tmp"]
    assert sorted(mount["mountPath"] for mount in containers["main"]["volumeMounts"]) == ["/config", "/pipes", "/tmp"]


def test_a_hung_plugin_behind_the_api_server_is_answered_in_time_with_a_warning(
    admissionregistration, kubectl, namespace, tmp_path, example_plugins
):
    """Before: after a few hung calls nothing was answered, and job pods went in unmutated, silently."""
    with serve(
        tmp_path, config={"review_timeout_seconds": 0.5}, env={"PYTHONPATH": example_plugins}, workers=2
    ) as served:
        register(admissionregistration, kubectl, served.url, served.ca_file, namespace, failure_policy="Ignore")
        for index in range(10):
            hanging = job_pod_manifest("sync", name=f"hang-{index}")
            hanging["metadata"]["annotations"]["example.com/hang"] = "true"
            result = kubectl("create", "-n", namespace, "-f", "-", "-o", "json", input=json.dumps(hanging))
            assert "Warning: podmutate: plugin 'hang' did not finish within 0.5s" in result.stderr, (
                is_mutated(json.loads(result.stdout)),
                served.log()[-1500:],
            )
            assert not is_mutated(json.loads(result.stdout))
        ordinary = kubectl(
            "create",
            "-n",
            namespace,
            "-f",
            "-",
            "-o",
            "json",
            input=json.dumps(job_pod_manifest("sync", name="ordinary")),
        )
        assert is_mutated(json.loads(ordinary.stdout))  # ordinary job pods are still mutated


def test_the_audit_log_records_what_podmutate_did(kubectl, control_plane, registered, tmp_path):
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(json.dumps(job_pod_manifest("sync", name="audited")))
    pod = json.loads(kubectl("create", "-n", registered, "-f", str(manifest), "-o", "json").stdout)
    webhook = f"podmutate-{registered}.podmutate.io"

    def event():
        with open(control_plane.audit_log) as stream:
            events = [json.loads(line) for line in stream]
        return next(
            (
                found
                for found in events
                if (found.get("objectRef") or {}).get("name") == "audited"
                and found["objectRef"].get("namespace") == registered
                and found["stage"] == "ResponseComplete"
            ),
            None,
        )

    deadline = time.monotonic() + 10
    while event() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    annotations = event()["annotations"]
    assert annotations[f"{webhook}/job-type"] == "sync"
    assert annotations[f"{webhook}/mutated-by"] == pod["metadata"]["annotations"]["podmutate.io/mutated-by"]
    assert int(annotations[f"{webhook}/patch"]) > 0
    rounds = [  # what the API server itself says of each webhook call
        json.loads(value) for key, value in annotations.items() if key.startswith("mutation.webhook.admission.k8s.io/")
    ]
    assert {"webhook": webhook, "mutated": True} in [{k: one[k] for k in ("webhook", "mutated")} for one in rounds]


def test_more_than_a_thousand_reviews_on_the_api_servers_connections_all_succeed(
    api_client, control_plane, registered, admissionregistration
):
    """hypercorn, which served podmutate before, closed a connection after 1,000 requests, failing
    the reviews in flight on it: the API server keeps its connections to a webhook, so every
    1,000th review or so failed its create
    (failurePolicy Fail here) or left its pod unmutated (Ignore). Found over HTTP/2, which the API
    server spoke to a loopback URL until podmutate offered HTTP/1.1 only."""
    from concurrent.futures import ThreadPoolExecutor

    import kubernetes

    core = kubernetes.client.CoreV1Api(api_client)
    pod = job_pod_manifest("sync", name="many")

    def create(index):
        body = {**pod, "metadata": {**pod["metadata"], "name": f"many-{index}"}}
        try:
            created = core.create_namespaced_pod(registered, body, dry_run="All")
        except kubernetes.client.exceptions.ApiException as error:
            return f"{error.status}: {error.body[:300]}"
        return "mutated" if [c.name for c in created.spec.init_containers or []] == ["init"] else "unmutated"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(create, range(1200)))
    assert [outcome for outcome in outcomes if outcome != "mutated"] == []


def test_the_api_servers_reviews_are_shared_by_both_workers(api_client, podmutate, registered):
    """Over HTTP/2 the API server sent every review on one connection, owned by one worker process,
    while the other idled: each worker must now do a fair part of the reviewing."""
    from concurrent.futures import ThreadPoolExecutor

    import kubernetes

    core = kubernetes.client.CoreV1Api(api_client)
    pod = job_pod_manifest("sync", name="shared")
    workers = worker_pids(podmutate.process.pid)
    assert len(workers) == 2
    before = [cpu_seconds_of([pid]) for pid in workers]

    def create(index):
        body = {**pod, "metadata": {**pod["metadata"], "name": f"shared-{index}"}}
        created = core.create_namespaced_pod(registered, body, dry_run="All")
        return is_mutated(api_client.sanitize_for_serialization(created))

    with ThreadPoolExecutor(max_workers=16) as pool:
        assert all(pool.map(create, range(600)))
    used = [cpu_seconds_of([pid]) - start for pid, start in zip(workers, before, strict=True)]
    assert min(used) >= 0.15 * sum(used), f"CPU seconds of each worker: {used}"
