"""The invariant, on the real API server: every pod it accepts, it accepts again once podmutate mutated it.

Three namespaces: a plain one, one enforcing Pod Security `restricted`, one with a ResourceQuota
on CPU and memory. Each pod is dry-run as written; the API server's answer (the pod defaulted,
as a webhook receives it) is mutated offline; the mutation is dry-run again.
"""

import copy
import pathlib
import uuid

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes.client.exceptions import ApiException

from webhook import admission
from webhook.engine import load_engine
from webhook.ops.cases import case_engine

GOLDEN = pathlib.Path(__file__).parent.parent / "golden"
GENERATED_PODS = 500
NAMESPACES = ("plain", "restricted", "quota")
GENERATED_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields")

_tally = {}


@pytest.fixture(scope="module")
def namespaces(core, prefix):
    """namespace -> kind: plain, restricted (Pod Security enforce), quota (CPU and memory)."""
    names = {}
    for kind in NAMESPACES:
        name = f"{prefix}-{kind}"
        labels = {"pod-security.kubernetes.io/enforce": "restricted"} if kind == "restricted" else {}
        core.create_namespace({"metadata": {"name": name, "labels": labels}})
        if kind == "quota":
            hard = {"requests.cpu": "100", "requests.memory": "100Gi", "limits.cpu": "100", "limits.memory": "100Gi"}
            core.create_namespaced_resource_quota(name, {"metadata": {"name": "compute"}, "spec": {"hard": hard}})
            # No controller-manager here to fill in the quota's status; without it every pod is refused.
            core.patch_namespaced_resource_quota_status(
                "compute", name, {"status": {"hard": hard, "used": dict.fromkeys(hard, "0")}}
            )
        names[kind] = name
    return names


@pytest.fixture(scope="module")
def prefix():
    return f"valid-{uuid.uuid4().hex[:8]}"


def dry_run(core, namespace, pod):
    """The pod as the API server would store it, or the reason it refuses it."""
    try:
        created = core.create_namespaced_pod(namespace, pod, dry_run="All")
    except ApiException as error:
        if error.status in (400, 403, 422):
            return None, error.body
        raise
    return core.api_client.sanitize_for_serialization(created), None


def as_received(stored):
    """A dry-run answer as a webhook receives the pod: defaulted, without what the server generates."""
    pod = copy.deepcopy(stored)
    for key in GENERATED_FIELDS:
        pod["metadata"].pop(key, None)
    pod.pop("status", None)
    return pod


def check_invariant(core, namespaces, pod, engine, kinds=NAMESPACES):
    """For each namespace: if the API server accepts `pod`, it accepts podmutate's mutation too."""
    for kind in kinds:
        stored, _refused = dry_run(core, namespaces[kind], copy.deepcopy(pod))
        tally = _tally.setdefault(kind, {"accepted": 0, "refused as written": 0})
        if stored is None:
            tally["refused as written"] += 1
            continue
        tally["accepted"] += 1
        received = as_received(stored)
        mutation = admission.mutate(received, engine)
        _after, refused = dry_run(core, namespaces[kind], mutation.pod)
        assert refused is None, f"{kind}: podmutate made a valid pod invalid:\n{refused}\npod: {received}"


# ----------------------------------------------------------------- generated pods

NAMES = ("main", "init", "fix-permissions", "source", "destination", "orchestrator", "sidecar")
PATHS = ("/tmp", "/tmp/", "/config", "/pipes", "/data", "/cache", "/volumes/data")
QUANTITIES = {"cpu": ("50m", "100m", "250m", "1"), "memory": ("16Mi", "32Mi", "64Mi", "1Gi")}
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@st.composite
def resources(draw):
    requests, limits = {}, {}
    for name, values in QUANTITIES.items():
        index = draw(st.integers(0, len(values) - 1))
        if draw(st.booleans()):
            requests[name] = values[index]
        if draw(st.booleans()):
            limits[name] = values[draw(st.integers(index, len(values) - 1))]
    return {kind: values for kind, values in (("requests", requests), ("limits", limits)) if values}


@st.composite
def job_pods(draw):
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    init_count = draw(st.integers(0, min(2, len(names) - 1)))
    volumes = [{"name": "data", "emptyDir": {}}, {"name": "cache", "emptyDir": {"medium": "Memory"}}]
    block = draw(st.booleans())
    if block:
        volumes.append({"name": "disk", "persistentVolumeClaim": {"claimName": "disk"}})
    restricted = draw(st.booleans())
    fully_resourced = draw(st.booleans())
    containers = []
    for name in names:
        container = {"name": name, "image": "busybox:1.35"}
        paths = draw(st.lists(st.sampled_from(PATHS), max_size=2, unique_by=lambda path: path.rstrip("/")))
        if paths:
            container["volumeMounts"] = [
                {"name": draw(st.sampled_from(["data", "cache"])), "mountPath": path} for path in paths
            ]
        if block and draw(st.booleans()):
            container["volumeDevices"] = [{"name": "disk", "devicePath": draw(st.sampled_from(["/tmp", "/config"]))}]
        if restricted:
            container["securityContext"] = dict(RESTRICTED_CONTAINER)
        if fully_resourced:
            container["resources"] = {
                "requests": {"cpu": "50m", "memory": "32Mi"},
                "limits": {"cpu": "250m", "memory": "64Mi"},
            }
        elif draw(st.booleans()):
            container["resources"] = draw(resources())
        containers.append(container)
    pod_spec = {
        "restartPolicy": "Never",
        "initContainers": containers[:init_count],
        "containers": containers[init_count:],
    }
    security = {}
    if draw(st.booleans()):
        security.update(runAsUser=draw(st.sampled_from([0, 1000, 2000])), runAsGroup=draw(st.sampled_from([0, 1000])))
    if restricted:
        security.update(runAsNonRoot=True, seccompProfile={"type": "RuntimeDefault"})
        if not security.get("runAsUser"):
            security["runAsUser"] = 1000
    if security:
        pod_spec["securityContext"] = security
    if draw(st.booleans()):
        pod_spec["resources"] = {
            "requests": {
                "cpu": draw(st.sampled_from(["100m", "500m", "2"])),
                "memory": draw(st.sampled_from(["64Mi", "256Mi", "2Gi"])),
            },
            "limits": {"cpu": "2", "memory": "2Gi"},
        }
    pod_spec["volumes"] = volumes
    annotations = {}
    if draw(st.booleans()):
        annotations["podmutate.io/fix-permissions"] = ",".join(
            draw(st.lists(st.sampled_from(["data", "cache", "disk", "absent"]), min_size=1, max_size=3))
        )
    for opt_out in ("podmutate.io/init-wait", "podmutate.io/tmp-volume"):
        if draw(st.integers(0, 4)) == 0:
            annotations[opt_out] = "false"
    labels = draw(
        st.sampled_from(
            [
                {"podmutate.io/job-type": "sync", "connection_id": "c1"},
                {"job_type": "check"},
                {"job_type": "sync", "sync_step": "replication", "airbyte": "job-pod", "connection_id": "c2"},
                {"sync_step": "orchestrator-replication", "connection_id": "c3"},
                {"job_type": "sync", "sync_step": "normalize", "connection_id": "c4"},
            ]
        )
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"gen-{draw(st.integers(0, 10**9))}", "labels": labels, "annotations": annotations},
        "spec": pod_spec,
    }


def test_generated_pods_stay_valid_in_every_namespace(core, namespaces):
    engine = load_engine(environ={})

    @settings(
        max_examples=GENERATED_PODS,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(job_pods())
    def invariant(pod):
        check_invariant(core, namespaces, pod, engine)

    _tally.clear()
    invariant()
    print(f"\nvalid pods kept valid, per namespace: {_tally}")
    for kind in NAMESPACES:  # the generator must reach every namespace, or the invariant is untested there
        assert _tally[kind]["accepted"] >= 50, _tally


# ----------------------------------------------------------------- golden and Airbyte pods

GOLDEN_CASES = sorted(path.name for path in GOLDEN.iterdir() if (path / "pod.yaml").exists())


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_golden_pods_stay_valid_in_every_namespace(core, namespaces, case):
    pod = yaml.safe_load((GOLDEN / case / "pod.yaml").read_text())
    pod["metadata"].pop("namespace", None)
    check_invariant(core, namespaces, pod, case_engine(GOLDEN / case), kinds=("plain",))
    restricted = restricted_variant(pod)
    check_invariant(core, namespaces, restricted, case_engine(GOLDEN / case))
    assert dry_run(core, namespaces["restricted"], copy.deepcopy(restricted))[0] is not None, (
        "the restricted variant must itself be valid there, or the case proves nothing"
    )


def restricted_variant(pod):
    """The same pod written for Pod Security `restricted` and a CPU and memory quota."""
    pod = copy.deepcopy(pod)
    pod_spec = pod["spec"]
    pod_spec["securityContext"] = {
        **(pod_spec.get("securityContext") or {}),
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod_spec["securityContext"].setdefault("runAsUser", 1000)
    if pod_spec["securityContext"]["runAsUser"] == 0:
        pod_spec["securityContext"]["runAsUser"] = 1000
    for field in ("initContainers", "containers"):
        for container in pod_spec.get(field) or []:
            context = container.setdefault("securityContext", {})
            context.update(allowPrivilegeEscalation=False, capabilities={"drop": ["ALL"]})
            context.pop("runAsUser", None) if context.get("runAsUser") == 0 else None
            context.pop("runAsNonRoot", None)
            context.pop("privileged", None)
            resources = container.setdefault("resources", {})
            resources["requests"] = {"cpu": "100m", "memory": "64Mi", **(resources.get("requests") or {})}
            resources["limits"] = {"cpu": "4", "memory": "8Gi", **(resources.get("limits") or {})}
    return pod
