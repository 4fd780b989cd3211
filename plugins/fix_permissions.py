"""Volume ownership for pods that run as non-root: an init container chowns named volumes.

Unlike the chart it comes from, the container is not privileged: it runs as root with every
capability dropped but CHOWN. Pod Security `restricted` admits no such container, so for a pod
written for it (runAsNonRoot everywhere) the pod's fsGroup is set instead, which makes the
kubelet give the volumes to that group.
"""

from webhook import formats, hookimpl
from webhook.contract import FIX_PERMISSIONS_ANNOTATION as ANNOTATION
from webhook.contract import HELPER_IMAGE
from webhook.pods import (
    INJECTED_RESOURCES,
    add_init_container,
    annotation,
    container_name_taken,
    containers,
    helper_resources,
    init_container,
    run_as,
    runs_restricted,
    spec,
)

CONTAINER_NAME = "fix-permissions"
VOLUMES_DIR = "/volumes"  # each volume is mounted at VOLUMES_DIR/<name>: one path per volume, always


@hookimpl
def config_defaults():
    return {"fix_permissions": {"image": HELPER_IMAGE, "resources": INJECTED_RESOURCES}}


@hookimpl
def parse_config(config):
    raw = formats.check_keys("fix_permissions", config.section("fix_permissions"), config_defaults()["fix_permissions"])
    return {
        "image": formats.check_image("fix_permissions.image", raw["image"]),
        "resources": formats.check_resources("fix_permissions.resources", raw["resources"]),
    }


@hookimpl(trylast=True)  # its init container goes after `init`, whose status Airbyte's launcher reads first
def mutate_pod(pod, config, request):
    wanted = annotation(pod, ANNOTATION)
    if not wanted or init_container(pod, CONTAINER_NAME):
        return
    uid, gid = run_as(pod)
    if uid is None or gid is None:
        request.warn(f"podmutate: {ANNOTATION} ignored: the pod sets no runAsUser and runAsGroup")
        return
    # Indexes, not a search per name: the annotation may name thousands of volumes.
    volumes = {entry.get("name") for entry in spec(pod).get("volumes") or []}
    mounted = {mount.get("name") for container in containers(pod) for mount in container.get("volumeMounts") or []}
    names = []
    for name in dict.fromkeys(name.strip() for name in str(wanted).split(",") if name.strip()):
        if name not in volumes or name not in mounted:
            request.warn(f"podmutate: {ANNOTATION}: volume {name!r} is not a mounted volume of this pod; skipped")
        else:
            names.append(name)
    if not names:
        return
    if runs_restricted(pod):
        give_volumes_to_group(pod, gid, request)
        return
    if container_name_taken(pod, CONTAINER_NAME):
        request.warn(f"podmutate: {ANNOTATION} ignored: the pod already has a container named {CONTAINER_NAME!r}")
        return
    settings = config.settings["fix_permissions"]
    add_init_container(
        pod,
        {
            "name": CONTAINER_NAME,
            "image": settings["image"],
            "command": ["chown", "-R", f"{uid}:{gid}", *(f"{VOLUMES_DIR}/{name}" for name in names)],
            "securityContext": {
                "runAsUser": 0,
                "runAsNonRoot": False,
                "privileged": False,
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
            },
            **helper_resources(pod, settings["resources"]),
            "volumeMounts": [{"name": name, "mountPath": f"{VOLUMES_DIR}/{name}"} for name in names],
        },
    )


def give_volumes_to_group(pod, gid, request):
    """The restricted way: fsGroup, which Pod Security `restricted` admits (a root container it does not)."""
    pod_spec = spec(pod)
    if pod_spec.get("securityContext") is None:
        pod_spec["securityContext"] = {}
    context = pod_spec["securityContext"]
    if context.get("fsGroup") not in (None, gid):
        request.warn(
            f"podmutate: {ANNOTATION} ignored: the pod runs as non-root only, where a root chown "
            f"container is refused, and its fsGroup {context['fsGroup']} is not its runAsGroup {gid}"
        )
        return
    if context.get("fsGroup") is None:
        context["fsGroup"] = gid
        request.warn(
            f"podmutate: {ANNOTATION}: the pod runs as non-root only, where a root chown container "
            f"is refused; fsGroup {gid} set instead (the kubelet gives supported volumes to that group)"
        )
