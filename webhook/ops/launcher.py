"""The side module that launches job pods and kills every live pod of a connection.

It is the only part of podmutate that talks to the API server about pods. It creates plain
pods with the right labels; scheduling, resources, volumes and the init container are left to
the webhook at admission.
"""

from __future__ import annotations

import io
import json
import logging
import random
import re
import string
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream as kubernetes_stream
from kubernetes.stream.ws_client import ERROR_CHANNEL, STDIN_CHANNEL
from urllib3.exceptions import HTTPError

from webhook.config import Config
from webhook.contract import (
    CONFIG_DIR,
    CONNECTION_ID,
    DEFAULT_LABEL_KEYS,
    DELETE_PROPAGATION,
    INIT_CONTAINER,
    INIT_WAIT_SECONDS,
    JOB_TYPE_LABEL,
    KILL_SECONDS,
    MAIN_CONTAINER,
    ORCHESTRATOR_JOB_TYPE,
    ORCHESTRATOR_POD_PREFIX,
    STATUS_CHECK_ANNOTATION,
    SUCCESS_FILE,
    SWEEPER_LABEL,
)
from webhook.wire import json_type

log = logging.getLogger(__name__)

NAME_LIMIT = 63
TERMINAL_PHASES = ("Succeeded", "Failed")
KILLED_EXIT_CODE = 143
UPLOAD_ATTEMPTS = 3


class WaitTimeout(TimeoutError):
    """A wait on a pod ran out of time; says which wait. The pod's whole state has been logged."""

    def __init__(self, pod_name: str, what: str, seconds: float) -> None:
        self.pod_name = pod_name
        self.what = what
        super().__init__(f"pod {pod_name}: timed out after {seconds:.0f}s waiting for {what}")


class UploadError(RuntimeError):
    """Copying the job's files into the init container failed, after every retry."""


class NotMutated(RuntimeError):
    """The created pod came back without the init container the launcher feeds: the webhook did
    not mutate it (down, unreachable with failurePolicy Ignore, or not matching the namespace)."""

    def __init__(self, namespace: str, pod_name: str) -> None:
        self.pod_name = pod_name
        super().__init__(
            f"pod {namespace}/{pod_name} came back without its `{INIT_CONTAINER}` init container: the webhook did "
            f"not mutate it, so nothing would ever start it; deleted it (run `podmutate doctor` to see why)"
        )


class KillTimeout(RuntimeError):
    """Live pods of a connection were still there when the kill's time ran out."""

    def __init__(self, connection_id: str, names: list[str], seconds: float) -> None:
        self.names = names
        super().__init__(f"pods of connection {connection_id} still live after {seconds:.0f}s: {', '.join(names)}")


class JobError(ValueError):
    """A job description is not valid: one line naming the field, what it must be, and what it is."""


@dataclass
class Job:
    """What a job pod is made from. `Job.from_mapping` checks a description read from YAML."""

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
    files: dict = field(default_factory=dict)  # name in /config -> text or bytes
    security_context: dict = field(default_factory=dict)  # the main container's securityContext

    @classmethod
    def from_mapping(cls, data: Any) -> Job:
        """A Job from a parsed job description; raises JobError naming the first bad field."""
        if not isinstance(data, dict):
            raise JobError(f"expected a mapping of job fields, got {json_type(data, yaml=True)}")
        unknown = sorted(set(data) - set(JOB_FIELDS))
        if unknown:
            raise JobError(f"{unknown[0]}: not a job field (expected one of {', '.join(JOB_FIELDS)})")
        for name, (check, expected, required) in JOB_FIELDS.items():
            if name not in data:
                if required:
                    raise JobError(f"{name}: missing (expected {expected})")
                continue
            if not check(data[name]):
                raise JobError(
                    f"{name}: expected {expected}, got {json_type(data[name], yaml=True)} {data[name]!r:.60}"
                )
        return cls(**data)


def _string(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _string_map(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(key, str) and isinstance(item, str) for key, item in value.items()
    )


def _env(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(key, str) and isinstance(item, str | int | float | bool) for key, item in value.items()
    )


# name: (check, what it must be, required)
JOB_FIELDS = {
    "job_type": (_string, "a string such as sync", True),
    "image": (_string, "an image reference (a string)", True),
    "connection_id": (_string, "a string (quote ids in YAML)", True),
    "job_id": (_string, "a string (quote ids in YAML)", True),
    "attempt": (
        lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= 0,
        "a whole number from 0",
        False,
    ),
    "namespace": (_string, "a namespace name (a string)", False),
    "command": (_strings, "a list of strings, e.g. [sh, -c, 'sleep 10']", False),
    "args": (_strings, "a list of strings", False),
    "env": (_env, "a mapping of names to values", False),
    "labels": (_string_map, "a mapping of strings to strings", False),
    "files": (_string_map, "a mapping of file names in /config to their text", False),
    "security_context": (lambda value: isinstance(value, dict), "a securityContext mapping", False),
}


def image_short_name(image: str) -> str:
    """`registry/org/source-postgres:3.6.2@sha256:...` -> `source-postgres`."""
    last = image.rsplit("/", 1)[-1]
    return re.split(r"[:@]", last, maxsplit=1)[0]


def pod_name(job: Job, suffix: str | None = None) -> str:
    """Airbyte's names.

    An orchestrator gets a fixed name, `orchestrator-repl-job-<job>-attempt-<n>`, so that a
    running one can be found again. Any other pod is `<image-short-name>-<type>-<job>-<attempt>-<5
    random letters>`, trimmed from the front to 63 characters, and starts at its first letter
    (an image named `1234` gives `sync-...`), as Airbyte's KubeProcessFactory names them.
    """
    if job.job_type == ORCHESTRATOR_JOB_TYPE:
        name = f"{ORCHESTRATOR_POD_PREFIX}-job-{job.job_id}-attempt-{job.attempt}".lower()
        return re.sub(r"[^a-z0-9-]+", "-", name)[:NAME_LIMIT].rstrip("-")
    suffix = suffix or "".join(random.choices(string.ascii_lowercase, k=5))
    name = f"{image_short_name(job.image)}-{job.job_type}-{job.job_id}-{job.attempt}-{suffix}".lower()
    name = re.sub(r"[^a-z0-9-]+", "-", name)[-NAME_LIMIT:]
    return re.sub(r"^[^a-z]+", "", name) or suffix


def label_keys(config: Config) -> dict[str, str]:
    """The label key of each id, as configured (connection_labels.keys): what the launcher labels
    pods with and kills them by. Read from the section as loaded when the connection_labels plugin
    is disabled (its keys are checked all the same)."""
    parsed = config.settings.get("connection_labels")
    return dict(parsed["keys"]) if parsed else {**DEFAULT_LABEL_KEYS, **config.section("connection_labels")["keys"]}


def pod_manifest(
    job: Job,
    *,
    label_keys: Mapping[str, str] = DEFAULT_LABEL_KEYS,
    process_id: str | None = None,
    suffix: str | None = None,
) -> dict:
    """The plain pod for `job`: labels to find it by (under `label_keys`), one `main` container, never restarted."""
    container: dict[str, Any] = {"name": MAIN_CONTAINER, "image": job.image}
    if job.command:
        container["command"] = list(job.command)
    if job.args:
        container["args"] = list(job.args)
    if job.env:
        container["env"] = [{"name": name, "value": str(value)} for name, value in job.env.items()]
    if job.security_context:
        container["securityContext"] = dict(job.security_context)
    ids = {
        CONNECTION_ID: job.connection_id,
        "job_id": str(job.job_id),
        "attempt_id": str(job.attempt),
        "process_id": process_id or str(uuid.uuid4()),
    }
    labels = {
        **job.labels,
        **SWEEPER_LABEL,
        JOB_TYPE_LABEL: job.job_type,
        **{label_keys[name]: value for name, value in ids.items()},
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name(job, suffix), "namespace": job.namespace, "labels": labels},
        "spec": {"restartPolicy": "Never", "containers": [container]},
    }


def core_api(kubeconfig: str | None = None, timeouts: Any = None) -> kubernetes.client.CoreV1Api:
    """CoreV1Api with in-cluster credentials in a pod, else the kubeconfig (as kubectl)."""
    from webhook.ops.kubeapi import DEFAULT_TIMEOUTS, api_client

    return kubernetes.client.CoreV1Api(api_client(kubeconfig, timeouts or DEFAULT_TIMEOUTS))


def launch(
    core: kubernetes.client.CoreV1Api,
    job: Job,
    *,
    label_keys: Mapping[str, str] = DEFAULT_LABEL_KEYS,
    kill_running: bool = True,
    propagation: str = DELETE_PROPAGATION,
) -> Any:
    """Create the pod of `job`; return it as the API server stored it (mutated by the webhook).

    A pod that comes back unmutated (no init container to feed) is deleted at once and
    NotMutated raised: nothing would ever start it.

    First, unless told not to, every live pod of the job's connection is killed, as Airbyte's
    LauncherWorker did before each run: one live run per connection. `label_keys` are the
    configured connection label keys (connection_labels.keys).
    """
    if kill_running:
        kill_connection(
            core, job.namespace, job.connection_id, label_key=label_keys[CONNECTION_ID], propagation=propagation
        )
    manifest = pod_manifest(job, label_keys=label_keys)
    created = core.create_namespaced_pod(job.namespace, manifest)
    if not any(container.name == INIT_CONTAINER for container in created.spec.init_containers or []):
        delete_pod(core, job.namespace, created.metadata.name, propagation)
        raise NotMutated(job.namespace, created.metadata.name)
    log.info("launched pod %s/%s for connection %s", job.namespace, created.metadata.name, job.connection_id)
    return created


def is_terminal(pod: Any) -> bool:
    """A pod is done when its phase says so or its main container has terminated."""
    status = pod.status
    if status is None:
        return False
    if status.phase in TERMINAL_PHASES:
        return True
    for container in status.container_statuses or []:
        if container.name == MAIN_CONTAINER and container.state is not None and container.state.terminated is not None:
            return True
    return False


def live_pods(
    core: kubernetes.client.CoreV1Api,
    namespace: str,
    connection_id: str,
    label_key: str = DEFAULT_LABEL_KEYS[CONNECTION_ID],
) -> list:
    """Every non-terminal pod of the connection, across all its attempts and process ids."""
    return [pod for pod in connection_pods(core, namespace, connection_id, label_key) if not is_terminal(pod)]


def connection_pods(core: kubernetes.client.CoreV1Api, namespace: str, connection_id: str, label_key: str) -> list:
    """Every pod of the connection, terminated ones included."""
    return core.list_namespaced_pod(namespace, label_selector=f"{label_key}={connection_id}").items


def kill_connection(
    core: kubernetes.client.CoreV1Api,
    namespace: str,
    connection_id: str,
    *,
    label_key: str = DEFAULT_LABEL_KEYS[CONNECTION_ID],
    timeout: float = KILL_SECONDS,
    dry_run: bool = False,
    poll: float = 1.0,
    propagation: str = DELETE_PROPAGATION,
) -> list[str]:
    """Delete every live pod of the connection (foreground propagation, as Airbyte) until none is left.

    The pods it deleted are waited for until they are gone, as Airbyte waited for the deletion:
    a pod whose containers ended may still be torn down. Returns the names of the pods it
    deleted (or, with `dry_run`, would delete). Pods already gone are fine, so a second kill is
    a no-op. Raises KillTimeout naming the pods left after `timeout` seconds.
    """
    killed: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        listed = connection_pods(core, namespace, connection_id, label_key)
        live = [pod for pod in listed if not is_terminal(pod)]
        if dry_run:
            return [pod.metadata.name for pod in live]
        going = [pod for pod in listed if pod.metadata.name in killed and is_terminal(pod)]
        if not live and not going:
            return killed
        if time.monotonic() >= deadline:
            raise KillTimeout(connection_id, [pod.metadata.name for pod in live + going], timeout)
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


def wait_for_pod(
    core: kubernetes.client.CoreV1Api,
    namespace: str,
    name: str,
    predicate: Callable[[Any], bool],
    what: str,
    timeout: float,
) -> Any:
    """Watch pod `name` until `predicate(pod)` is true; return the pod.

    The pod is read first, then watched from that resourceVersion, so no change is missed.
    On timeout, the whole pod state and its events are logged and WaitTimeout is raised.
    """
    deadline = time.monotonic() + timeout
    selector = f"metadata.name={name}"
    while True:
        listed = core.list_namespaced_pod(namespace, field_selector=selector)
        for pod in listed.items:
            if predicate(pod):
                return pod
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            log_pod_state(core, namespace, name, what)
            raise WaitTimeout(name, what, timeout)
        for event in watch_pod(core, namespace, selector, listed.metadata.resource_version, max(1, int(remaining))):
            if event["type"] != "DELETED" and predicate(event["object"]):
                return event["object"]
            if time.monotonic() >= deadline:
                break
        # The watch ended (its timeout, a dropped stream, 410 Gone): read afresh and go on.


def watch_pod(
    core: kubernetes.client.CoreV1Api, namespace: str, selector: str, resource_version: str, seconds: int
) -> Iterator[dict]:
    """The events of a watch from `resource_version`, for at most `seconds`; ends quietly when the
    stream drops or the API server answers 410 Gone (the version is too old): the caller lists
    afresh and watches again."""
    watch = kubernetes.watch.Watch()
    connect = getattr(core.api_client, "timeouts", None)
    request_timeout = (connect.connect if connect else 5.0, seconds + 10)
    try:
        yield from watch.stream(
            core.list_namespaced_pod,
            namespace,
            field_selector=selector,
            resource_version=resource_version,
            timeout_seconds=seconds,
            _request_timeout=request_timeout,
        )
    except ApiException as error:
        if error.status != 410:
            raise
        log.info("watch of %s: 410 Gone, listing afresh", selector)
    except (HTTPError, OSError) as error:
        log.info("watch of %s dropped (%s), listing afresh", selector, error)
    finally:
        watch.stop()


def has_init_status(pod: Any) -> bool:
    return bool(pod.status and pod.status.init_container_statuses)


def init_running(pod: Any) -> bool:
    for status in (pod.status.init_container_statuses or []) if pod.status else []:
        if status.name == INIT_CONTAINER:
            return status.state is not None and status.state.running is not None
    return False


def init_succeeded(core: kubernetes.client.CoreV1Api, namespace: str, name: str) -> bool:
    """Whether the init container has ended with exit code 0 (it saw every file it waits for)."""
    try:
        pod = core.read_namespaced_pod(name, namespace)
    except ApiException:
        return False
    for status in (pod.status.init_container_statuses or []) if pod.status else []:
        if status.name == INIT_CONTAINER:
            ended = status.state.terminated if status.state is not None else None
            return ended is not None and ended.exit_code == 0
    return False


def wait_for_init(
    core: kubernetes.client.CoreV1Api, namespace: str, name: str, timeout: float = INIT_WAIT_SECONDS
) -> Any:
    """Wait until the init container has a status, then until it runs; each wait is bounded."""
    log.info("pod %s: waiting for the init container to be ready before copying files", name)
    wait_for_pod(core, namespace, name, has_init_status, "the init container to have a status", timeout)
    log.info("pod %s: init container present", name)
    pod = wait_for_pod(core, namespace, name, init_running, "the init container to run", timeout)
    log.info("pod %s: init container running", name)
    return pod


def log_pod_state(core: kubernetes.client.CoreV1Api, namespace: str, name: str, what: str) -> None:
    """Log everything known of the pod: phase, conditions, container statuses and its events."""
    try:
        pod = core.read_namespaced_pod(name, namespace)
        state = core.api_client.sanitize_for_serialization(pod.status)
    except ApiException as error:
        state = f"cannot read the pod: {error.status} {error.reason}"
    try:
        events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
        event_lines = [f"{event.type} {event.reason}: {event.message}" for event in events]
    except ApiException as error:
        event_lines = [f"cannot list events: {error.status} {error.reason}"]
    log.error(
        "pod %s/%s: gave up waiting for %s; status: %s; events: %s",
        namespace,
        name,
        what,
        json.dumps(state, default=str),
        event_lines or "none",
    )


def tar_of(files: Mapping[str, str | bytes]) -> bytes:
    """A tar archive of `files` (name -> text or bytes), as `kubectl cp` sends it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = int(time.time())
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def open_exec(core: kubernetes.client.CoreV1Api, namespace: str, name: str, container: str, command: list[str]) -> Any:
    """An exec session in `container` of the pod, with binary stdin."""
    return kubernetes_stream(
        core.connect_get_namespaced_pod_exec,
        name,
        namespace,
        container=container,
        command=command,
        stdin=True,
        stdout=True,
        stderr=True,
        tty=False,
        _preload_content=False,
        binary=True,
    )


def extract(session: Any, archive: bytes, timeout: float = 60.0) -> None:
    """Send `archive` to a `tar -x` session, close its stdin and wait for it to end well."""
    for start in range(0, len(archive), 64 * 1024):
        session.write_stdin(archive[start : start + 64 * 1024])
    session.close_channel(STDIN_CHANNEL)
    deadline = time.monotonic() + timeout
    errors = b""
    while session.is_open() and time.monotonic() < deadline:
        session.update(timeout=1)
        errors += session.read_stderr(timeout=0) or b""
    errors += session.read_stderr(timeout=0) or b""  # what came with the end of the session
    if session.is_open():
        session.close()
        raise UploadError(f"tar did not end within {timeout:.0f} s")
    status = exec_status(session.read_channel(ERROR_CHANNEL))
    session.close()
    if status:
        raise UploadError(f"{status}: {errors.decode(errors='replace').strip()}".rstrip(": "))


def exec_status(channel: str) -> str:
    """What went wrong with an exec, read from its status channel; "" when the command exited 0.

    The channel holds a metav1.Status: an exit code in its causes, or only a message when the
    exec never ran ("container not found").
    """
    try:
        status = json.loads(channel) if channel else {}
    except ValueError:
        return f"unreadable exec status: {channel[:200]}"
    if not isinstance(status, dict) or status.get("status") == "Success":
        return ""
    for cause in (status.get("details") or {}).get("causes") or []:
        if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
            return f"tar exited with {cause.get('message')}"
    return str(status.get("message") or status)[:200]


def upload(
    core: kubernetes.client.CoreV1Api,
    namespace: str,
    name: str,
    files: Mapping[str, str | bytes],
    *,
    exec_session: Callable[..., Any] = open_exec,
    attempts: int = UPLOAD_ATTEMPTS,
) -> None:
    """Copy `files` into /config of the init container, then FINISHED_UPLOADING, last and alone.

    Each copy is a tar stream into `tar -x` (what `kubectl cp` does) and is retried on failure:
    files are overwritten whole, so a retry is safe. The success file is sent only once every
    other file is in, so the init container never starts the job on half its config.
    """
    for batch in (files, {SUCCESS_FILE: b""}):
        if not batch:
            continue
        archive = tar_of(batch)
        for attempt in range(1, attempts + 1):
            try:
                extract(
                    exec_session(core, namespace, name, INIT_CONTAINER, ["tar", "-xmf", "-", "-C", CONFIG_DIR]), archive
                )
                break
            except (UploadError, ApiException, OSError) as error:
                if batch is not files and init_succeeded(core, namespace, name):
                    # The init container saw the success file and ended before tar did: tar was
                    # killed with its container (137) or a retry found no container. Done.
                    return
                if attempt == attempts:
                    raise UploadError(
                        f"pod {name}: copying {sorted(batch)} failed {attempts} times: {error}"
                    ) from error
                log.warning(
                    "pod %s: copying %s failed (attempt %d of %d): %s", name, sorted(batch), attempt, attempts, error
                )
                time.sleep(attempt)


def main_exit_code(pod: Any) -> int | None:
    """The exit code of the main container, or None while it has not terminated."""
    for status in (pod.status.container_statuses or []) if pod.status else []:
        if status.name == MAIN_CONTAINER and status.state is not None and status.state.terminated is not None:
            return status.state.terminated.exit_code
    return None


def status_check_interval(pod: Any, default: int = 30) -> int:
    try:
        return max(1, int((pod.metadata.annotations or {}).get(STATUS_CHECK_ANNOTATION, default)))
    except ValueError:
        return default


def wait_for_exit(core: kubernetes.client.CoreV1Api, namespace: str, name: str) -> int:
    """Watch the pod until its main container ends; return its exit code (143 if the pod is deleted).

    The resync period is the status-check interval the webhook wrote on the pod for its job type.
    """
    selector = f"metadata.name={name}"
    while True:
        listed = core.list_namespaced_pod(namespace, field_selector=selector)
        if not listed.items:
            return KILLED_EXIT_CODE
        pod = listed.items[0]
        code = main_exit_code(pod)
        if code is not None:
            return code
        if pod.status is not None and pod.status.phase in TERMINAL_PHASES:
            return 0 if pod.status.phase == "Succeeded" else 1
        interval = status_check_interval(pod)
        for event in watch_pod(core, namespace, selector, listed.metadata.resource_version, interval):
            if event["type"] == "DELETED":
                return KILLED_EXIT_CODE
            code = main_exit_code(event["object"])
            if code is not None:
                return code


def run(
    core: kubernetes.client.CoreV1Api,
    job: Job,
    *,
    label_keys: Mapping[str, str] = DEFAULT_LABEL_KEYS,
    init_timeout: float = INIT_WAIT_SECONDS,
    exec_session: Callable = open_exec,
    kill_running: bool = True,
    propagation: str = DELETE_PROPAGATION,
    keep_pod: bool = False,
) -> tuple[str, int]:
    """Launch `job`, wait for its init container, upload its files, and wait for it to end.

    Returns (pod name, exit code of the main container); 143 when the pod was deleted first.
    When a wait or the upload gives up, the pod is deleted (a pod nobody will feed is only in
    the way) unless `keep_pod`.
    """
    pod = launch(core, job, label_keys=label_keys, kill_running=kill_running, propagation=propagation)
    name = pod.metadata.name
    try:
        wait_for_init(core, job.namespace, name, timeout=init_timeout)
        upload(core, job.namespace, name, job.files, exec_session=exec_session)
    except (WaitTimeout, UploadError):
        if not keep_pod:
            delete_pod(core, job.namespace, name, propagation)
            log.info("deleted pod %s/%s, which was given up on", job.namespace, name)
        raise
    return name, wait_for_exit(core, job.namespace, name)


def delete_pod(
    core: kubernetes.client.CoreV1Api, namespace: str, name: str, propagation: str = DELETE_PROPAGATION
) -> None:
    try:
        core.delete_namespaced_pod(name, namespace, propagation_policy=propagation)
    except ApiException as error:
        if error.status != 404:
            raise
