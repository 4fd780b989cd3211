"""Small helpers for plugins that edit a pod dict: find, add once, never duplicate."""

import functools
import posixpath

MAIN_CONTAINER = "main"
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
# What an injected helper container asks for by default: Airbyte's init container's resources.
# Without them, a namespace whose ResourceQuota covers CPU or memory refuses the pod.
INJECTED_RESOURCES = {"requests": {"cpu": "100m", "memory": "25Mi"}, "limits": {"cpu": "200m", "memory": "50Mi"}}
NON_ROOT_USER = 1000  # Airbyte's rootless uid, for a helper in a pod that names none


def helper_resources(pod, resources):
    """The `resources` field for a helper container: none when the pod sets pod-level resources,
    which then bound the helper too (its own could exceed them, and the API server would refuse)."""
    return {} if spec(pod).get("resources") is not None or not resources else {"resources": resources}


def restricted_security_context(pod):
    """A securityContext that Pod Security `restricted` admits, for a helper container of `pod`.

    `runAsNonRoot` makes the kubelet refuse to start a container that would run as root, so
    unless the pod itself names a non-root user (which the helper inherits), the helper is
    given one: the main container's, else NON_ROOT_USER (an image such as busybox runs as root).
    """
    context = {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "readOnlyRootFilesystem": True,
               "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    pod_user = ((pod.get("spec") or {}).get("securityContext") or {}).get("runAsUser")
    if not pod_user:  # unset, or root
        main_user = ((main_container(pod) or {}).get("securityContext") or {}).get("runAsUser")
        context["runAsUser"] = main_user if isinstance(main_user, int) and main_user > 0 else NON_ROOT_USER
    return context


def run_as(pod, container=None):
    """(runAsUser, runAsGroup) of `container` (the main one by default), falling back to the pod's."""
    pod_context = (pod.get("spec") or {}).get("securityContext") or {}
    container = container if container is not None else main_container(pod) or {}
    context = container.get("securityContext") or {}
    return (context.get("runAsUser", pod_context.get("runAsUser")),
            context.get("runAsGroup", pod_context.get("runAsGroup")))


def runs_restricted(pod):
    """Whether the pod is written for Pod Security `restricted`: runAsNonRoot for every container."""
    pod_context = (pod.get("spec") or {}).get("securityContext") or {}
    return all((container.get("securityContext") or {}).get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True
               for container in all_containers(pod))


def metadata(pod):
    return _mapping(pod, "metadata")


def annotations(pod):
    """The pod's annotations (created empty when missing)."""
    return _mapping(metadata(pod), "annotations")


def labels(pod):
    """The pod's labels (created empty when missing)."""
    return _mapping(metadata(pod), "labels")


def _mapping(parent, key):
    if parent.get(key) is None:
        parent[key] = {}
    return parent[key]


def annotation(pod, key, default=None):
    return ((pod.get("metadata") or {}).get("annotations") or {}).get(key, default)


def label(pod, key, default=None):
    return ((pod.get("metadata") or {}).get("labels") or {}).get(key, default)


def opted_out(pod, key):
    """True when the pod's annotation `key` says "false" (podmutate.io/<feature>: "false")."""
    return str(annotation(pod, key, "")).strip().lower() == "false"


def spec(pod):
    return _mapping(pod, "spec")


def containers(pod):
    return spec(pod).get("containers") or []


def all_containers(pod):
    """Every container of the pod: init, regular and ephemeral."""
    pod_spec = pod.get("spec") or {}
    return [container for field in CONTAINER_LISTS for container in pod_spec.get(field) or []
            if isinstance(container, dict)]


def container_name_taken(pod, name):
    """Whether any container of the pod (init, regular or ephemeral) is called `name`."""
    return any(container.get("name") == name for container in all_containers(pod))


def main_container(pod):
    """The container named `main`, else the first one; None for a pod without containers."""
    found = containers(pod)
    for container in found:
        if container.get("name") == MAIN_CONTAINER:
            return container
    return found[0] if found else None


def volume(pod, name):
    """The pod volume called `name`, or None."""
    for candidate in spec(pod).get("volumes") or []:
        if candidate.get("name") == name:
            return candidate
    return None


def add_volume(pod, new_volume):
    """Append `new_volume` unless a volume of that name exists; return the one in the pod."""
    existing = volume(pod, new_volume["name"])
    if existing is not None:
        return existing
    pod_spec = spec(pod)
    if pod_spec.get("volumes") is None:
        pod_spec["volumes"] = []
    pod_spec["volumes"].append(new_volume)
    return new_volume


def clean_path(path):
    """A container path in one spelling: `/tmp/`, `//tmp` and `/tmp/.` are all `/tmp`."""
    return _clean_path(path) if isinstance(path, str) and path else ""


@functools.lru_cache(maxsize=4096)
def _clean_path(path):
    return posixpath.normpath("/" + path)


def mount_at(container, path):
    """The volume mount of `container` at `path` (in any spelling), or None."""
    wanted = clean_path(path)
    for mount in container.get("volumeMounts") or []:
        if clean_path(mount.get("mountPath", "")) == wanted:
            return mount
    return None


def path_in_use(container, path):
    """Whether `container` already uses `path`, as a volume mount or as a block device."""
    wanted = clean_path(path)
    return mount_at(container, path) is not None or any(
        clean_path(device.get("devicePath", "")) == wanted for device in container.get("volumeDevices") or [])


def mount_of(container, volume_name):
    """The first mount of the volume `volume_name` in `container`, or None."""
    for mount in container.get("volumeMounts") or []:
        if mount.get("name") == volume_name:
            return mount
    return None


def add_mount(container, volume_name, path):
    """Mount `volume_name` at `path` unless the container uses that path already (mount or device)."""
    if path_in_use(container, path):
        return
    if container.get("volumeMounts") is None:
        container["volumeMounts"] = []
    container["volumeMounts"].append({"name": volume_name, "mountPath": path})


def init_container(pod, name):
    for container in spec(pod).get("initContainers") or []:
        if container.get("name") == name:
            return container
    return None


def add_init_container(pod, container):
    """Append `container` to the init containers unless a container of that name exists (of any kind).

    Appended, never inserted: the init containers already there (Airbyte's own `init` among
    them, which its launcher reads as `initContainerStatuses[0]`) keep their places.
    """
    if container_name_taken(pod, container["name"]):
        return False
    pod_spec = spec(pod)
    if pod_spec.get("initContainers") is None:
        pod_spec["initContainers"] = []
    pod_spec["initContainers"].append(container)
    return True


def env_value(container, name):
    """The literal value of env var `name` in `container` (None when unset or from a ref)."""
    for variable in container.get("env") or []:
        if variable.get("name") == name:
            return variable.get("value")
    return None
