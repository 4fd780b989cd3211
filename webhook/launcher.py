"""The side module that launches job pods and kills every live pod of a connection.

It is the only part of podmutate that talks to the API server about pods. It creates plain
pods with the right labels; scheduling, resources, volumes and the init container are left to
the webhook at admission.
"""

import logging
import random
import re
import string
import time
import uuid
from dataclasses import dataclass, field

import kubernetes
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

JOB_TYPE_LABEL = "podmutate.io/job-type"
SWEEPER_LABEL = {"airbyte": "job-pod"}
NAME_LIMIT = 63
KILL_TIMEOUT = 45.0
TERMINAL_PHASES = ("Succeeded", "Failed")


class KillTimeout(RuntimeError):
    """Live pods of a connection were still there when the kill's time ran out."""

    def __init__(self, connection_id, names, seconds):
        self.names = names
        super().__init__(f"pods of connection {connection_id} still live after {seconds:.0f}s: {', '.join(names)}")


@dataclass
class Job:
    """What a job pod is made from."""

    job_type: str
    image: str
    connection_id: str
    job_id: str
    attempt: int = 0
    namespace: str = "default"
    command: list = field(default_factory=list)
    args: list = field(default_factory=list)
    env: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)


def image_short_name(image):
    """`registry/org/source-postgres:3.6.2@sha256:...` -> `source-postgres`."""
    last = image.rsplit("/", 1)[-1]
    return re.split(r"[:@]", last, maxsplit=1)[0]


def pod_name(job, suffix=None):
    """Airbyte's rule: `<image-short-name>-<type>-<job>-<attempt>-<5 random letters>`, trimmed
    from the front to 63 characters and made a valid DNS label."""
    suffix = suffix or "".join(random.choices(string.ascii_lowercase, k=5))
    name = f"{image_short_name(job.image)}-{job.job_type}-{job.job_id}-{job.attempt}-{suffix}".lower()
    name = re.sub(r"[^a-z0-9-]+", "-", name)[-NAME_LIMIT:]
    return name.lstrip("-") or suffix


def pod_manifest(job, *, process_id=None, suffix=None):
    """The plain pod for `job`: labels to find it by, one `main` container, never restarted."""
    container = {"name": "main", "image": job.image}
    if job.command:
        container["command"] = list(job.command)
    if job.args:
        container["args"] = list(job.args)
    if job.env:
        container["env"] = [{"name": name, "value": str(value)} for name, value in job.env.items()]
    labels = {**job.labels, **SWEEPER_LABEL, JOB_TYPE_LABEL: job.job_type,
              "connection_id": job.connection_id, "job_id": str(job.job_id), "attempt_id": str(job.attempt),
              "process_id": process_id or str(uuid.uuid4())}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name(job, suffix), "namespace": job.namespace, "labels": labels},
        "spec": {"restartPolicy": "Never", "containers": [container]},
    }


def core_api(kubeconfig=None):
    """CoreV1Api with in-cluster credentials in a pod, else the kubeconfig (as kubectl)."""
    from certs.inject import api_client

    return kubernetes.client.CoreV1Api(api_client(kubeconfig))


def launch(core, job):
    """Create the pod of `job`; return it as the API server stored it (mutated by the webhook)."""
    manifest = pod_manifest(job)
    created = core.create_namespaced_pod(job.namespace, manifest)
    log.info("launched pod %s/%s for connection %s", job.namespace, created.metadata.name, job.connection_id)
    return created


def is_terminal(pod):
    """A pod is done when its phase says so or its main container has terminated."""
    status = pod.status
    if status is None:
        return False
    if status.phase in TERMINAL_PHASES:
        return True
    for container in status.container_statuses or []:
        if container.name == "main" and container.state is not None and container.state.terminated is not None:
            return True
    return False


def live_pods(core, namespace, connection_id, label_key="connection_id"):
    """Every non-terminal pod of the connection, across all its attempts and process ids."""
    pods = core.list_namespaced_pod(namespace, label_selector=f"{label_key}={connection_id}").items
    return [pod for pod in pods if not is_terminal(pod)]


def kill_connection(core, namespace, connection_id, *, label_key="connection_id", timeout=KILL_TIMEOUT,
                    dry_run=False, poll=1.0, propagation="Foreground"):
    """Delete every live pod of the connection (foreground propagation, as Airbyte) until none is left.

    Returns the names of the pods it deleted (or, with `dry_run`, would delete). Pods already
    gone are fine, so a second kill is a no-op. Raises KillTimeout naming the pods left after
    `timeout` seconds.
    """
    killed = []
    deadline = time.monotonic() + timeout
    while True:
        live = live_pods(core, namespace, connection_id, label_key)
        if dry_run or not live:
            return [pod.metadata.name for pod in live] if dry_run else killed
        if time.monotonic() >= deadline:
            raise KillTimeout(connection_id, [pod.metadata.name for pod in live], timeout)
        for pod in live:
            try:
                core.delete_namespaced_pod(pod.metadata.name, namespace, propagation_policy=propagation)
            except ApiException as error:
                if error.status != 404:
                    raise
            if pod.metadata.name not in killed:
                killed.append(pod.metadata.name)
                log.info("deleted pod %s/%s of connection %s", namespace, pod.metadata.name, connection_id)
        time.sleep(poll)
