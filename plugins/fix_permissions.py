"""Volume ownership for pods that run as non-root: a first init container chowns named volumes.

Unlike the chart it comes from, the container is not privileged: it runs as root with every
capability dropped but CHOWN.
"""

from webhook import ConfigError, hookimpl
from webhook.pods import add_init_container, annotation, containers, init_container, main_container, mount_of, \
    volume

ANNOTATION = "podmutate.io/fix-permissions"
CONTAINER_NAME = "fix-permissions"


@hookimpl
def config_defaults():
    return {"fix_permissions": {"image": "busybox:1.35"}}


@hookimpl
def parse_config(config):
    raw = config.raw["fix_permissions"]
    if set(raw) - {"image"}:
        raise ConfigError("fix_permissions", raw, "a mapping with image")
    if not isinstance(raw["image"], str) or not raw["image"].strip():
        raise ConfigError("fix_permissions.image", raw["image"], "an image reference such as busybox:1.35")
    return {"fix_permissions": dict(raw)}


@hookimpl
def mutate_pod(pod, config, request):
    wanted = annotation(pod, ANNOTATION)
    if not wanted or init_container(pod, CONTAINER_NAME):
        return
    names = [name.strip() for name in str(wanted).split(",") if name.strip()]
    owner = run_as(pod)
    if owner is None:
        request.warn(f"podmutate: {ANNOTATION} ignored: the pod sets no runAsUser and runAsGroup")
        return
    mounts = []
    for name in names:
        mount = next((found for container in containers(pod) if (found := mount_of(container, name))), None)
        if volume(pod, name) is None or mount is None:
            request.warn(f"podmutate: {ANNOTATION}: volume {name!r} is not a mounted volume of this pod; skipped")
            continue
        mounts.append({"name": name, "mountPath": mount["mountPath"]})
    if not mounts:
        return
    uid, gid = owner
    add_init_container(pod, {
        "name": CONTAINER_NAME,
        "image": config.settings["fix_permissions"]["image"],
        "command": ["chown", "-R", f"{uid}:{gid}", *(mount["mountPath"] for mount in mounts)],
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
        },
        "volumeMounts": mounts,
    }, first=True)


def run_as(pod):
    """(runAsUser, runAsGroup) of the main container, falling back to the pod's; None if unset."""
    pod_context = (pod.get("spec") or {}).get("securityContext") or {}
    container = main_container(pod) or {}
    context = container.get("securityContext") or {}
    uid = context.get("runAsUser", pod_context.get("runAsUser"))
    gid = context.get("runAsGroup", pod_context.get("runAsGroup"))
    if uid is None or gid is None:
        return None
    return uid, gid
