"""Connection labels on every job pod, so every pod of a connection can be found and killed.

Each id is taken from, in order: the pod's label, its annotation podmutate.io/<id>, or the
env var of that name in any container (literal values only).
"""

from webhook import ConfigError, Denied, formats, hookimpl
from webhook.contract import CONNECTION_ID, DEFAULT_LABEL_KEYS
from webhook.contract import CONNECTION_IDS as IDS
from webhook.patch import pointer_token
from webhook.pods import annotation, containers, env_value, label, labels, spec


@hookimpl
def config_defaults():
    return {
        "connection_labels": {
            "enabled": True,
            "keys": dict(DEFAULT_LABEL_KEYS),
            # Per job type, with `default` as the fallback: deny a pod with no connection id,
            # or warn about it. Spec, check and discover jobs belong to no connection.
            "required": {"default": False},
            "warn_missing": {"default": True, "spec": False, "check": False, "discover": False},
        }
    }


@hookimpl
def parse_config(config):
    raw = formats.check_keys(
        "connection_labels", config.section("connection_labels"), config_defaults()["connection_labels"]
    )
    formats.check_flag("connection_labels.enabled", raw["enabled"])
    keys = raw["keys"]
    if not isinstance(keys, dict) or set(keys) - set(IDS):
        raise ConfigError("connection_labels.keys", keys, f"a mapping from {sorted(IDS)} to label keys")
    for name, key in keys.items():
        problem = formats.qualified_name_problem(key)
        if problem:
            raise ConfigError(f"connection_labels.keys.{name}", key, problem.replace("must be", "that is"))
    per_type = {}
    for setting in ("required", "warn_missing"):
        values = raw[setting]
        if not isinstance(values, dict) or "default" not in values:
            raise ConfigError(
                f"connection_labels.{setting}", values, "a mapping of job type to true/false, with default"
            )
        for job_type, value in values.items():
            formats.check_flag(f"connection_labels.{setting}.{job_type}", value)
        per_type[setting] = {job_type: values.get(job_type, values["default"]) for job_type in config.job_types}
    return {"enabled": raw["enabled"], "keys": {**config_defaults()["connection_labels"]["keys"], **keys}, **per_type}


@hookimpl(tryfirst=True)  # a pod it denies costs no other plugin's work; the others see the labels
def mutate_pod(pod, job_type, config, request):
    if job_type not in config.job_types:
        return  # another plugin's kind of pod, not a job pod
    settings = config.settings["connection_labels"]
    if not settings["enabled"]:
        return
    for name, (annotation_key, env_name) in IDS.items():
        key = settings["keys"][name]
        if label(pod, key) is not None:
            continue
        value = annotation(pod, annotation_key)
        if value is None:
            value = next(
                (
                    found
                    for container in containers(pod) + (spec(pod).get("initContainers") or [])
                    if (found := env_value(container, env_name)) is not None
                ),
                None,
            )
        if value is None:
            continue
        problem = formats.label_value_problem(value)
        if problem:
            request.warn(f"podmutate: label {key}={value!r} not added: {problem}")
            continue
        labels(pod)[key] = value
        if request.sources is not None:  # podmutate mutate --explain
            request.explain(
                f"/metadata/labels/{pointer_token(key)}",
                f"annotation {annotation_key}" if annotation(pod, annotation_key) is not None else f"env {env_name}",
            )
    if label(pod, settings["keys"][CONNECTION_ID]) is not None:
        return
    if settings["required"][job_type]:
        annotation_key, env_name = IDS[CONNECTION_ID]
        raise Denied(
            f"podmutate: {job_type} pods must carry a connection id (label "
            f"{settings['keys'][CONNECTION_ID]}, annotation {annotation_key} "
            f"or env {env_name}) so every pod of a connection can be found and killed"
        )
    if settings["warn_missing"][job_type]:
        request.warn(f"podmutate: this {job_type} pod has no connection id: it cannot be found by connection")
