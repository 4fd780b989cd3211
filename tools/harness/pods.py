"""Realistic inputs: AdmissionReviews of job pods as Airbyte creates them, at any size."""

import copy
import uuid

CONNECTION_ID = "8f2c5a7e-0c1d-4d7e-9a55-3e0f1b2c4d5e"
SIDECARS = ["remote-stdin", "relay-stdout", "relay-stderr", "call-heartbeat-server"]


def airbyte_pod(job_type="sync", containers=5, env_vars=20, volumes=4, labelled=True):
    """A job pod shaped like Airbyte's: main, its socat/heartbeat sidecars, env, volumes.

    `labelled=False` gives a pod of the same size that no plugin touches (the floor).
    """
    env = [{"name": f"AIRBYTE_VAR_{index}", "value": f"value-{index}"} for index in range(env_vars)]
    env += [
        {"name": "CONNECTION_ID", "value": CONNECTION_ID},
        {"name": "JOB_ID", "value": "42"},
        {"name": "ATTEMPT_ID", "value": "0"},
    ]
    pod_volumes = [
        {"name": f"secret-{index}", "secret": {"secretName": f"connector-secret-{index}"}} for index in range(volumes)
    ]
    main = {
        "name": "main",
        "image": "airbyte/source-postgres:3.6.2",
        "env": env,
        "command": ["sh", "-c", 'eval "$AIRBYTE_ENTRYPOINT read"'],
        "workingDir": "/config",
        "volumeMounts": [{"name": volume["name"], "mountPath": f"/secrets/{volume['name']}"} for volume in pod_volumes],
        "resources": {"requests": {"cpu": "250m"}},
    }
    names = ["main", *SIDECARS, *(f"sidecar-{index}" for index in range(max(0, containers - 5)))][:containers]
    pod_containers = [main] + [
        {
            "name": name,
            "image": "alpine/socat:1.7.4.4-r0",
            "command": ["sh", "-c", "socat -d -d TCP-L:9001 STDOUT"],
            "env": copy.deepcopy(env[:5]),
            "resources": {"requests": {"cpu": "100m", "memory": "25Mi"}, "limits": {"cpu": "2", "memory": "50Mi"}},
        }
        for name in names[1:]
    ]
    labels = {
        "job_type": job_type,
        "connection_id": CONNECTION_ID,
        "job_id": "42",
        "attempt_id": "0",
        "airbyte": "job-pod",
        "workspace_id": "2b1c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d",
    }
    if job_type == "orchestrator":
        labels.pop("job_type")
        labels["sync_step"] = "orchestrator-replication"
    if not labelled:
        labels = {"app": "web", "tier": "frontend"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"source-postgres-{job_type}-42-0-abcde",
            "namespace": "jobs",
            "labels": labels,
            "annotations": {"airbyte.io/sync-id": "123"},
        },
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": "airbyte-admin",
            "containers": pod_containers,
            "volumes": pod_volumes,
            "nodeSelector": {"kubernetes.io/os": "linux"},
        },
    }


def review(pod, *, operation="CREATE", dry_run=False, resource="pods", uid=None, sub_resource=None):
    """A v1 AdmissionReview request for `pod`, as the API server sends it."""
    request = {
        "uid": uid or str(uuid.uuid4()),
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": resource},
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": resource},
        "namespace": pod["metadata"].get("namespace", "default"),
        "name": pod["metadata"].get("name", ""),
        "operation": operation,
        "userInfo": {
            "username": "system:serviceaccount:airbyte:airbyte-admin",
            "groups": ["system:serviceaccounts", "system:authenticated"],
        },
        "object": pod,
        "oldObject": None,
        "dryRun": dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
    }
    if sub_resource:
        request["subResource"] = sub_resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def hostile_pod(kind, size):
    """A crafted job pod whose cost must stay linear in `size`.

    `volumes`: a fix-permissions annotation naming `size` volumes (and as many that do not
    exist, each worth a warning); `containers`: `size` containers, each given a /tmp mount.
    """
    metadata = {
        "name": f"hostile-{kind}-{size}",
        "namespace": "jobs",
        "labels": {"podmutate.io/job-type": "sync", "connection_id": CONNECTION_ID},
    }
    if kind == "volumes":
        names = [f"v{index}" for index in range(size)]
        metadata["annotations"] = {
            "podmutate.io/fix-permissions": ",".join([*names, *(f"absent-{index}" for index in range(size))])
        }
        pod_spec = {
            "securityContext": {"runAsUser": 1000, "runAsGroup": 1000},
            "containers": [
                {
                    "name": "main",
                    "image": "airbyte/source-postgres:3.6.2",
                    "volumeMounts": [{"name": name, "mountPath": f"/v/{name}"} for name in names],
                }
            ],
            "volumes": [{"name": name, "emptyDir": {}} for name in names],
        }
    else:
        pod_spec = {
            "containers": [{"name": f"c{index}", "image": "airbyte/source-postgres:3.6.2"} for index in range(size)]
        }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": {"restartPolicy": "Never", **pod_spec}}
