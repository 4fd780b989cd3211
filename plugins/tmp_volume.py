"""A writable /tmp: an emptyDir mounted at /tmp in containers that do not mount anything there.

Files an image ships under /tmp are hidden by the mount (why Airbyte moved dbt's packages).
"""

from webhook import ConfigError, formats, hookimpl
from webhook.contract import TMP_VOLUME_ANNOTATION as OPT_OUT_ANNOTATION
from webhook.pods import add_mount, add_volume, containers, main_container, mount_at, opted_out, volume

TMP_DIR = "/tmp"
TARGETS = ("all", "main")
MEDIUMS = ("", "Memory")


@hookimpl
def config_defaults():
    return {"tmp_volume": {"enabled": True, "containers": "all", "name": "tmp", "size_limit": None, "medium": ""}}


@hookimpl
def parse_config(config):
    raw = formats.check_keys("tmp_volume", config.section("tmp_volume"), config_defaults()["tmp_volume"])
    formats.check_flag("tmp_volume.enabled", raw["enabled"])
    if raw["containers"] not in TARGETS:
        raise ConfigError("tmp_volume.containers", raw["containers"], " or ".join(TARGETS))
    formats.check_object_name("tmp_volume.name", raw["name"])
    if raw["medium"] not in MEDIUMS:
        raise ConfigError("tmp_volume.medium", raw["medium"], '"" (node disk) or Memory')
    empty_dir = {}
    if raw["medium"]:
        empty_dir["medium"] = raw["medium"]
    if raw["size_limit"] is not None:
        empty_dir["sizeLimit"] = formats.check_quantity("tmp_volume.size_limit", raw["size_limit"])
    return {**raw, "empty_dir": empty_dir}


@hookimpl
def mutate_pod(pod, job_type, config):
    if job_type not in config.job_types:
        return  # another plugin's kind of pod, not a job pod
    settings = config.settings["tmp_volume"]
    if not settings["enabled"] or opted_out(pod, OPT_OUT_ANNOTATION):
        return
    targets = containers(pod) if settings["containers"] == "all" else [main_container(pod)]
    targets = [container for container in targets if container is not None and mount_at(container, TMP_DIR) is None]
    if not targets:
        return
    name = volume_name(pod, settings["name"])
    add_volume(pod, {"name": name, "emptyDir": dict(settings["empty_dir"])})
    for container in targets:
        add_mount(container, name, TMP_DIR)


def volume_name(pod, base):
    """`base`, else `base-1`, `base-2`...: the first name that is free or already an emptyDir.

    An emptyDir of that name is reused (it is ours from an earlier run, or as good as ours);
    any other volume of that name is left alone.
    """
    candidate, number = base, 0
    while (existing := volume(pod, candidate)) is not None and "emptyDir" not in existing:
        number += 1
        candidate = f"{base}-{number}"
    return candidate
