"""What the API server would refuse in a pod, among the rules a mutation can break.

The webhook answers `allowed` with a patch, so a patched pod the API server then refuses fails
the create whatever the failurePolicy says. The admission core compares `problems` of the pod
before and after the plugins: a plugin whose change adds a problem has that change undone.
This is a subset of Kubernetes' pod validation — the part podmutate's edits touch (container
and volume names, mount paths and devices, volume references, requests against limits, and
pod-level resources, the total size of the annotations) — not a second API server; the e2e
suite holds it to the real one.
"""

from collections import Counter
from collections.abc import Collection

from webhook.formats import RESOURCE_KINDS, quantity
from webhook.pods import CONTAINER_LISTS, clean_path

ANNOTATIONS_MAX_BYTES = 256 * 1024  # keys and values together (apimachinery's TotalAnnotationSizeLimitB)


def problems(pod: dict) -> set[str]:
    """One line per rule the pod breaks; empty when none of the checked rules is broken."""
    pod_spec: dict = pod["spec"] if isinstance(pod.get("spec"), dict) else {}
    found: set[str] = set()
    volume_names = [_name(volume) for volume in _dicts(pod_spec.get("volumes"))]
    found.update(f"volume name {name!r} is used {count} times" for name, count in repeated(volume_names))
    known_volumes = set(volume_names)
    container_names = []
    for field in CONTAINER_LISTS:
        for container in _dicts(pod_spec.get(field)):
            container_names.append(_name(container))
            found.update(container_problems(container, known_volumes))
    found.update(f"container name {name!r} is used {count} times" for name, count in repeated(container_names))
    found.update(pod_resource_problems(pod_spec))
    found.update(annotation_problems(pod))
    return found


def repeated(names: list) -> list[tuple[object, int]]:
    """(name, count) of each name `names` holds more than once; the usual answer, none, costs a set."""
    if len(set(names)) == len(names):
        return []
    return [(name, count) for name, count in Counter(names).items() if count > 1]


def annotation_problems(pod: dict) -> set[str]:
    """The annotations, keys and values, over the API server's total of 256 KiB."""
    metadata = pod.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    if not isinstance(annotations, dict):
        return set()
    size = sum(len(str(key).encode()) + len(str(value).encode()) for key, value in annotations.items())
    # Not the size itself: a pod over the limit before the plugins must not count as newly broken
    # for having grown (see `problems`).
    return {f"annotations total over {ANNOTATIONS_MAX_BYTES} bytes"} if size > ANNOTATIONS_MAX_BYTES else set()


def container_problems(container: dict, volume_names: Collection[object]) -> set[str]:
    name = container.get("name")
    found: set[str] = set()
    mounts = _dicts(container.get("volumeMounts"))
    devices = _dicts(container.get("volumeDevices"))
    mount_paths = [clean_path(mount.get("mountPath")) for mount in mounts]
    found.update(f"container {name!r}: {path} is mounted {count} times" for path, count in repeated(mount_paths))
    for device in devices:
        if clean_path(device.get("devicePath")) in mount_paths:
            found.add(f"container {name!r}: {clean_path(device.get('devicePath'))} is both a device and a mount")
    for reference in [*mounts, *devices]:
        if _name(reference) not in volume_names:
            found.add(f"container {name!r}: volume {reference.get('name')!r} is not a volume of the pod")
    resources = container.get("resources")
    if isinstance(resources, dict) and resources.get("requests") and resources.get("limits"):
        requests, limits = (_amounts(resources, kind) for kind in RESOURCE_KINDS)
        for resource, request in requests.items():
            if resource in limits and request > limits[resource]:
                found.add(f"container {name!r}: the {resource} request is above its limit")
    return found


def pod_resource_problems(pod_spec: dict) -> set[str]:
    """Pod-level resources (1.34): no container limit above the pod's, requests within the pod's."""
    if not isinstance(pod_spec.get("resources"), dict):
        return set()
    pod_requests, pod_limits = (_amounts(pod_spec["resources"], kind) for kind in RESOURCE_KINDS)
    found = set()
    everything = [*_dicts(pod_spec.get("initContainers")), *_dicts(pod_spec.get("containers"))]
    for container in everything:
        for resource, limit in _amounts(container.get("resources"), "limits").items():
            if resource in pod_limits and limit > pod_limits[resource]:
                found.add(f"container {container.get('name')!r}: its {resource} limit is above the pod's")
    for resource, total in aggregate_requests(pod_spec).items():
        if resource in pod_requests and total > pod_requests[resource]:
            found.add(f"the containers' {resource} requests add up to more than the pod's")
    return found


def aggregate_requests(pod_spec: dict) -> dict:
    """What the containers request in all, as the scheduler counts it: the running containers
    and sidecars together, or the largest init container with the sidecars started before it."""
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    sidecars: Counter[str] = Counter()
    for container in _dicts(pod_spec.get("initContainers")):
        requests = _amounts(container.get("resources"), "requests")
        if container.get("restartPolicy") == "Always":
            sidecars.update(requests)
            running.update(requests)
        else:
            for resource, amount in requests.items():
                peak[resource] = max(peak[resource], amount + sidecars[resource])
    for container in _dicts(pod_spec.get("containers")):
        running.update(_amounts(container.get("resources"), "requests"))
    return {resource: max(running[resource], peak[resource]) for resource in set(running) | set(peak)}


def _amounts(resources: object, kind: str) -> dict:
    values = (resources or {}).get(kind) if isinstance(resources, dict) else None
    amounts = {}
    for resource, value in (values or {}).items() if isinstance(values, dict) else ():
        try:
            amounts[resource] = quantity(value)
        except (ValueError, TypeError, ArithmeticError):
            continue  # not a quantity: the API server refuses the pod as it came, not for podmutate
    return amounts


def _name(item: dict) -> object:
    """The `name` of a pod part, hashable whatever a malformed pod holds there."""
    name = item.get("name")
    return name if isinstance(name, str) else repr(name)


def _dicts(items: object) -> list:
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []
