"""Small helpers for plugins that edit a pod dict: find, add once, never duplicate."""

MAIN_CONTAINER = "main"


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


def mount_at(container, path):
    """The volume mount of `container` at `path` (trailing slashes ignored), or None."""
    wanted = path.rstrip("/") or "/"
    for mount in container.get("volumeMounts") or []:
        if (mount.get("mountPath", "").rstrip("/") or "/") == wanted:
            return mount
    return None


def mount_of(container, volume_name):
    """The first mount of the volume `volume_name` in `container`, or None."""
    for mount in container.get("volumeMounts") or []:
        if mount.get("name") == volume_name:
            return mount
    return None


def add_mount(container, volume_name, path):
    """Mount `volume_name` at `path` unless something is mounted there already."""
    if mount_at(container, path) is not None:
        return
    if container.get("volumeMounts") is None:
        container["volumeMounts"] = []
    container["volumeMounts"].append({"name": volume_name, "mountPath": path})


def init_container(pod, name):
    for container in spec(pod).get("initContainers") or []:
        if container.get("name") == name:
            return container
    return None


def add_init_container(pod, container, *, first=False):
    """Add `container` to the init containers (first or last) unless one of that name exists."""
    if init_container(pod, container["name"]) is not None:
        return False
    pod_spec = spec(pod)
    if pod_spec.get("initContainers") is None:
        pod_spec["initContainers"] = []
    if first:
        pod_spec["initContainers"].insert(0, container)
    else:
        pod_spec["initContainers"].append(container)
    return True


def env_value(container, name):
    """The literal value of env var `name` in `container` (None when unset or from a ref)."""
    for variable in container.get("env") or []:
        if variable.get("name") == name:
            return variable.get("value")
    return None
