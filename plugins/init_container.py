"""The timed init container: makes the stdin/stdout/stderr pipes and waits for the uploaded config."""

import math
from importlib import resources

from webhook import ConfigError, formats, hookimpl
from webhook.contract import CONFIG_DIR, HELPER_IMAGE, PIPES_DIR, SUCCESS_FILE, USES_STDIN_ANNOTATION
from webhook.contract import INIT_CONTAINER as INIT_CONTAINER_NAME
from webhook.contract import INIT_WAIT_ANNOTATION as OPT_OUT_ANNOTATION
from webhook.pods import (
    INJECTED_RESOURCES,
    add_init_container,
    add_mount,
    add_volume,
    container_name_taken,
    helper_resources,
    init_container,
    main_container,
    opted_in,
    opted_out,
    restricted_security_context,
)

PIPES_VOLUME = {"name": "airbyte-pipes", "emptyDir": {}}
CONFIG_VOLUME = {"name": "airbyte-config", "emptyDir": {"medium": "Memory"}}


def init_script():
    """The init script shipped in the package, without its comment lines (they would bloat every pod)."""
    text = resources.files(__package__).joinpath("init.sh").read_text(encoding="utf-8")
    return "".join(line for line in text.splitlines(keepends=True) if not line.lstrip().startswith("#"))


@hookimpl
def config_defaults():
    return {
        "init_container": {
            "enabled": True,
            "image": HELPER_IMAGE,
            "timeout_minutes": 5,
            "resources": INJECTED_RESOURCES,
        }
    }


@hookimpl
def config_from_environ(environ):
    section = {}
    if environ.get("JOB_KUBE_BUSYBOX_IMAGE"):
        section["image"] = environ["JOB_KUBE_BUSYBOX_IMAGE"]
    if environ.get("SYNC_JOB_INIT_RETRY_TIMEOUT_MINUTES"):
        text = environ["SYNC_JOB_INIT_RETRY_TIMEOUT_MINUTES"]
        try:
            section["timeout_minutes"] = float(text)
        except ValueError:
            raise ConfigError("SYNC_JOB_INIT_RETRY_TIMEOUT_MINUTES", text, "a number of minutes") from None
        if not math.isfinite(section["timeout_minutes"]):  # float() takes "nan" and "inf"
            raise ConfigError("SYNC_JOB_INIT_RETRY_TIMEOUT_MINUTES", text, "a number of minutes")
    return {"init_container": section} if section else None


@hookimpl
def parse_config(config):
    raw = formats.check_keys("init_container", config.section("init_container"), config_defaults()["init_container"])
    formats.check_flag("init_container.enabled", raw["enabled"])
    formats.check_image("init_container.image", raw["image"])
    minutes = raw["timeout_minutes"]
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not 0 < minutes <= 24 * 60:
        raise ConfigError("init_container.timeout_minutes", minutes, "a number of minutes above 0, at most a day")
    return {
        "enabled": raw["enabled"],
        "image": raw["image"],
        "timeout_seconds": math.ceil(minutes * 60),
        "script": init_script(),
        "resources": formats.check_resources("init_container.resources", raw["resources"]),
    }


@hookimpl
def mutate_pod(pod, job_type, config, request):
    if job_type not in config.job_types:
        return  # another plugin's kind of pod, not a job pod
    settings = config.settings["init_container"]
    if not settings["enabled"] or opted_out(pod, OPT_OUT_ANNOTATION) or init_container(pod, INIT_CONTAINER_NAME):
        return  # an `init` init container is ours from an earlier call, or Airbyte's own, which does the same
    if container_name_taken(pod, INIT_CONTAINER_NAME):
        request.warn(
            f"podmutate: no init container added: the pod has a container named {INIT_CONTAINER_NAME!r}, "
            f"the name the launcher waits for"
        )
        return
    pipes = add_volume(pod, dict(PIPES_VOLUME, emptyDir={}))
    config_volume = add_volume(pod, dict(CONFIG_VOLUME, emptyDir=dict(CONFIG_VOLUME["emptyDir"])))
    uses_stdin = opted_in(pod, USES_STDIN_ANNOTATION)
    add_init_container(
        pod,
        {
            "name": INIT_CONTAINER_NAME,
            "image": settings["image"],
            "workingDir": CONFIG_DIR,
            "command": ["sh", "-c", settings["script"]],
            "env": [
                {"name": "PIPES_DIR", "value": PIPES_DIR},
                {"name": "CONFIG_DIR", "value": CONFIG_DIR},
                {"name": "SUCCESS_FILE", "value": SUCCESS_FILE},
                {"name": "USES_STDIN", "value": "true" if uses_stdin else "false"},
                {"name": "TIMEOUT_SECONDS", "value": str(settings["timeout_seconds"])},
            ],
            "volumeMounts": [
                {"name": pipes["name"], "mountPath": PIPES_DIR},
                {"name": config_volume["name"], "mountPath": CONFIG_DIR},
            ],
            **helper_resources(pod, settings["resources"]),
            "securityContext": restricted_security_context(pod),
        },
    )
    main = main_container(pod)
    if main is not None:
        add_mount(main, pipes["name"], PIPES_DIR)
        add_mount(main, config_volume["name"], CONFIG_DIR)
