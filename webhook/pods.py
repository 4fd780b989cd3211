"""Small helpers for plugins that edit a pod dict: find, add once, never duplicate."""

import functools
import posixpath
from typing import Any

from webhook.contract import MAIN_CONTAINER

# The helpers plugins may use, each documented in docs/plugins.md.
__all__ = [
    "helper_resources",
    "restricted_security_context",
    "run_as",
    "runs_restricted",
    "metadata",
    "annotations",
    "labels",
    "annotation",
    "label",
    "opted_in",
    "opted_out",
    "spec",
    "containers",
    "all_containers",
    "container_name_taken",
    "main_container",
    "volume",
    "add_volume",
    "clean_path",
    "mount_at",
    "path_in_use",
    "add_mount",
    "init_container",
    "add_init_container",
    "env_value",
]

CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
# What an injected helper container asks for by default: Airbyte's init container's resources.
# Without them, a namespace whose ResourceQuota covers CPU or memory refuses the pod.
INJECTED_RESOURCES = {"requests": {"cpu": "100m", "memory": "25Mi"}, "limits": {"cpu": "200m", "memory": "50Mi"}}
NON_ROOT_USER = 1000  # Airbyte's rootless uid, for a helper in a pod that names none


def helper_resources(pod: dict, resources: dict | None) -> dict:
    """The `resources` field for a helper container: none when the pod sets pod-level resources,
    which then bound the helper too (its own could exceed them, and the API server would refuse)."""
    return {} if spec(pod).get("resources") is not None or not resources else {"resources": resources}


def restricted_security_context(pod: dict) -> dict:
    """A securityContext that Pod Security `restricted` admits, for a helper container of `pod`.

    `runAsNonRoot` makes the kubelet refuse to start a container that would run as root, so
    unless the pod itself names a non-root user (which the helper inherits), the helper is
    given one: the main container's, else NON_ROOT_USER (an image such as busybox runs as root).
    """
    context = {
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod_user = ((pod.get("spec") or {}).get("securityContext") or {}).get("runAsUser")
    if not pod_user:  # unset, or root
        main_user = ((main_container(pod) or {}).get("securityContext") or {}).get("runAsUser")
        context["runAsUser"] = main_user if isinstance(main_user, int) and main_user > 0 else NON_ROOT_USER
    return context


def run_as(pod: dict, container: dict | None = None) -> tuple[int | None, int | None]:
    """(runAsUser, runAsGroup) of `container` (the main one by default), falling back to the pod's."""
    pod_context = (pod.get("spec") or {}).get("securityContext") or {}
    container = container if container is not None else main_container(pod) or {}
    context = container.get("securityContext") or {}
    return (
        context.get("runAsUser", pod_context.get("runAsUser")),
        context.get("runAsGroup", pod_context.get("runAsGroup")),
    )


def runs_restricted(pod: dict) -> bool:
    """Whether the pod is written for Pod Security `restricted`: runAsNonRoot for every container."""
    pod_context = (pod.get("spec") or {}).get("securityContext") or {}
    return all(
        (container.get("securityContext") or {}).get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True
        for container in all_containers(pod)
    )


def metadata(pod: dict) -> dict:
    """The pod's metadata (created empty when missing)."""
    return _mapping(pod, "metadata")


def annotations(pod: dict) -> dict:
    """The pod's annotations (created empty when missing)."""
    return _mapping(metadata(pod), "annotations")


def labels(pod: dict) -> dict:
    """The pod's labels (created empty when missing)."""
    return _mapping(metadata(pod), "labels")


def _mapping(parent: dict, key: str) -> dict:
    if parent.get(key) is None:
        parent[key] = {}
    return parent[key]


def annotation(pod: dict, key: str, default: Any = None) -> Any:
    """The value of the pod's annotation `key`, or `default`; never creates anything."""
    return ((pod.get("metadata") or {}).get("annotations") or {}).get(key, default)


def label(pod: dict, key: str, default: Any = None) -> Any:
    """The value of the pod's label `key`, or `default`; never creates anything."""
    return ((pod.get("metadata") or {}).get("labels") or {}).get(key, default)


def opted_out(pod: dict, key: str) -> bool:
    """True when the pod's annotation `key` says "false" (podmutate.io/<feature>: "false")."""
    return _flag(pod, key) == "false"


def opted_in(pod: dict, key: str) -> bool:
    """True when the pod's annotation `key` says "true" (podmutate.io/uses-stdin: "true")."""
    return _flag(pod, key) == "true"


def _flag(pod: dict, key: str) -> str:
    """A boolean annotation's value in one spelling: case and surrounding spaces do not count."""
    return str(annotation(pod, key, "")).strip().lower()


def spec(pod: dict) -> dict:
    """The pod's spec (created empty when missing)."""
    return _mapping(pod, "spec")


def containers(pod: dict) -> list[dict]:
    """The pod's regular containers (not init or ephemeral ones)."""
    return spec(pod).get("containers") or []


def all_containers(pod: dict) -> list[dict]:
    """Every container of the pod: init, regular and ephemeral."""
    pod_spec = pod.get("spec") or {}
    return [
        container for field in CONTAINER_LISTS for container in pod_spec.get(field) or [] if isinstance(container, dict)
    ]


def container_name_taken(pod: dict, name: str) -> bool:
    """Whether any container of the pod (init, regular or ephemeral) is called `name`."""
    return any(container.get("name") == name for container in all_containers(pod))


def main_container(pod: dict) -> dict | None:
    """The container named `main`, else the first one; None for a pod without containers."""
    found = containers(pod)
    return _named(found, MAIN_CONTAINER) or (found[0] if found else None)


def volume(pod: dict, name: str) -> dict | None:
    """The pod volume called `name`, or None."""
    return _named(spec(pod).get("volumes"), name)


def _append(parent: dict, field: str, item: dict) -> None:
    """Append `item` to the list `parent[field]`, created when missing or null."""
    if parent.get(field) is None:
        parent[field] = []
    parent[field].append(item)


def _named(items: list | None, name: str) -> dict | None:
    """The first of `items` called `name`, or None."""
    return next((item for item in items or [] if item.get("name") == name), None)


def add_volume(pod: dict, new_volume: dict) -> dict:
    """Append `new_volume` unless a volume of that name exists; return the one in the pod."""
    existing = volume(pod, new_volume["name"])
    if existing is not None:
        return existing
    _append(spec(pod), "volumes", new_volume)
    return new_volume


def clean_path(path: Any) -> str:
    """A container path in one spelling: `/tmp/`, `//tmp` and `/tmp/.` are all `/tmp`."""
    return _clean_path(path) if isinstance(path, str) and path else ""


@functools.lru_cache(maxsize=4096)
def _clean_path(path: str) -> str:
    return posixpath.normpath("/" + path)


def mount_at(container: dict, path: str) -> dict | None:
    """The volume mount of `container` at `path` (in any spelling), or None."""
    wanted = clean_path(path)
    for mount in container.get("volumeMounts") or []:
        if clean_path(mount.get("mountPath", "")) == wanted:
            return mount
    return None


def path_in_use(container: dict, path: str) -> bool:
    """Whether `container` already uses `path`, as a volume mount or as a block device."""
    wanted = clean_path(path)
    return mount_at(container, path) is not None or any(
        clean_path(device.get("devicePath", "")) == wanted for device in container.get("volumeDevices") or []
    )


def add_mount(container: dict, volume_name: str, path: str) -> None:
    """Mount `volume_name` at `path` unless the container uses that path already (mount or device)."""
    if path_in_use(container, path):
        return
    _append(container, "volumeMounts", {"name": volume_name, "mountPath": path})


def init_container(pod: dict, name: str) -> dict | None:
    """The init container called `name`, or None."""
    return _named(spec(pod).get("initContainers"), name)


def add_init_container(pod: dict, container: dict) -> bool:
    """Append `container` to the init containers unless a container of that name exists (of any kind).

    Appended, never inserted: the init containers already there (Airbyte's own `init` among
    them, which its launcher reads as `initContainerStatuses[0]`) keep their places.
    """
    if container_name_taken(pod, container["name"]):
        return False
    _append(spec(pod), "initContainers", container)
    return True


def env_value(container: dict, name: str) -> Any:
    """The literal value of env var `name` in `container` (None when unset or from a ref)."""
    for variable in container.get("env") or []:
        if variable.get("name") == name:
            return variable.get("value")
    return None
