"""Per-job-type pod settings: scheduling, resources, pull settings, metadata and default env.

Every setting of a job type's profile falls back to the `default` profile when the type does
not set it, as Airbyte's WorkerConfigs fall back to the JOB_KUBE_* variables.
"""

from dataclasses import dataclass, field, replace

from webhook import ConfigError, formats, hookimpl
from webhook.config import ENVIRONMENT
from webhook.contract import STATUS_CHECK_ANNOTATION
from webhook.formats import RESOURCE_KINDS, RESOURCE_NAMES
from webhook.patch import pointer_token
from webhook.pods import annotations, containers, labels, main_container, spec

MODES = ("fill", "override")
SETTINGS = (
    "mode",
    "node_selector",
    "tolerations",
    "resources",
    "container_resources",
    "image_pull_secrets",
    "image_pull_policy",
    "annotations",
    "labels",
    "env",
    "status_check_interval",
)

# Airbyte's environment variables: which job types have their own, under which prefix.
SELECTOR_PREFIXES = {"spec": "SPEC", "check": "CHECK", "discover": "DISCOVER"}
LABEL_PREFIXES = {"spec": "SPEC", "check": "CHECK", "discover": "DISCOVER", "sync": "REPLICATION"}
RESOURCE_PREFIXES = {
    "default": "JOB_MAIN_CONTAINER",
    "check": "CHECK_JOB_MAIN_CONTAINER",
    "normalization": "NORMALIZATION_JOB_MAIN_CONTAINER",
    "orchestrator": "REPLICATION_ORCHESTRATOR",
}
DEFAULT_ENV_PREFIX = "JOB_DEFAULT_ENV_"


@dataclass(frozen=True)
class Profile:
    """The settings one job type's pods get, with the fallbacks to `default` already resolved."""

    mode: str = "fill"
    node_selector: dict | None = None
    tolerations: list | None = None
    resources: dict | None = None
    container_resources: dict | None = None  # container name -> resources, for pods of several workloads
    image_pull_secrets: list | None = None
    image_pull_policy: str | None = None
    annotations: dict | None = None
    labels: dict | None = None
    env: dict | None = None
    status_check_interval: int | None = None
    sources: dict = field(default_factory=dict, compare=False)  # setting -> where it came from (for --explain)


@hookimpl
def config_defaults():
    fast = {"status_check_interval": 1}
    return {
        "job_types": {
            # IfNotPresent on every main container, `:latest` images included: Airbyte's default
            # for JOB_KUBE_MAIN_CONTAINER_IMAGE_PULL_POLICY. `image_pull_policy: null` turns it off.
            "default": {"mode": "fill", "status_check_interval": 30, "image_pull_policy": "IfNotPresent"},
            "spec": fast,
            "check": dict(fast),
            "discover": dict(fast),
        }
    }


PULL_SECRET_VARIABLE = "JOB_KUBE_MAIN_CONTAINER_IMAGE_PULL_SECRET"
PULL_POLICY_VARIABLE = "JOB_KUBE_MAIN_CONTAINER_IMAGE_PULL_POLICY"


def environ_settings():
    """(job type, setting, variable, reader) for every profile setting Airbyte's environment sets."""
    yield "default", "node_selector", "JOB_KUBE_NODE_SELECTORS", key_values
    yield "default", "annotations", "JOB_KUBE_ANNOTATIONS", key_values
    yield "default", "labels", "JOB_KUBE_LABELS", key_values
    yield "default", "tolerations", "JOB_KUBE_TOLERATIONS", tolerations
    for job_type, prefix in SELECTOR_PREFIXES.items():
        yield job_type, "node_selector", f"{prefix}_JOB_KUBE_NODE_SELECTORS", key_values
        yield job_type, "annotations", f"{prefix}_JOB_KUBE_ANNOTATIONS", key_values
    for job_type, prefix in LABEL_PREFIXES.items():
        yield job_type, "labels", f"{prefix}_JOB_KUBE_LABELS", key_values
        yield job_type, "tolerations", f"{prefix}_JOB_KUBE_TOLERATIONS", tolerations
    for job_type, prefix in RESOURCE_PREFIXES.items():
        yield job_type, "resources", f"{prefix}_*", resources
    yield "default", "image_pull_secrets", PULL_SECRET_VARIABLE, pull_secrets
    yield "default", "image_pull_policy", PULL_POLICY_VARIABLE, pull_policy
    yield "default", "env", f"{DEFAULT_ENV_PREFIX}*", default_env


def variable_for(job_type, setting):
    """The environment variable (or pattern) that sets `setting` of `job_type`'s profile, or None."""
    return next(
        (
            variable
            for own_type, own_setting, variable, _ in environ_settings()
            if (own_type, own_setting) == (job_type, setting)
        ),
        None,
    )


@hookimpl
def config_from_environ(environ):
    job_types = {}
    for job_type, setting, variable, read in environ_settings():
        value = read(environ, variable)
        if value is not None:
            job_types.setdefault(job_type, {})[setting] = value
    return {"job_types": job_types} if job_types else None


def pull_secrets(environ, variable):
    names = [name.strip() for name in environ.get(variable, "").split(",") if name.strip()]
    return [formats.check_object_name(variable, name) for name in names] or None


def pull_policy(environ, variable):
    policy = environ.get(variable) or None
    if policy is not None and policy not in formats.PULL_POLICIES:
        raise ConfigError(variable, policy, " or ".join(formats.PULL_POLICIES))
    return policy


def default_env(environ, _pattern):
    env = {
        name[len(DEFAULT_ENV_PREFIX) :]: value
        for name, value in environ.items()
        if name.startswith(DEFAULT_ENV_PREFIX) and len(name) > len(DEFAULT_ENV_PREFIX)
    }
    return env or None


def key_values(environ, variable):
    """Parse Airbyte's `k=v,k2=v2` format; None when unset or empty (so the fallback applies)."""
    text = environ.get(variable, "")
    pairs = {}
    for entry in text.split(","):
        if not entry.strip():
            continue
        key, equals, value = entry.partition("=")
        if not equals or not key.strip():
            raise ConfigError(variable, text, "comma-separated key=value pairs")
        pairs[key.strip()] = value.strip()
    return pairs or None


def tolerations(environ, variable):
    """Parse Airbyte's tolerations: `;` between tolerations, `k=v` fields separated by `,`."""
    text = environ.get(variable, "")
    parsed = []
    for index, entry in enumerate(part for part in text.split(";") if part.strip()):
        fields = {}
        for item in entry.split(","):
            key, equals, value = item.partition("=")
            if not equals:
                raise ConfigError(variable, text, "tolerations like key=k,operator=Exists,effect=NoSchedule;...")
            fields[key.strip()] = value.strip()
        missing = [name for name in ("key", "effect", "operator") if not fields.get(name)]
        if missing:
            raise ConfigError(variable, entry, f"a toleration with key, effect and operator (missing {missing})")
        if "tolerationSeconds" in fields:
            try:
                fields["tolerationSeconds"] = int(fields["tolerationSeconds"])
            except ValueError:
                raise ConfigError(variable, entry, "tolerationSeconds in whole seconds") from None
        parsed.append(formats.check_toleration(f"{variable}[{index}]", fields))
    return parsed or None


def resources(environ, pattern):
    """Requests and limits from <prefix>_CPU_REQUEST, <prefix>_MEMORY_LIMIT... (`pattern` is <prefix>_*)."""
    prefix = pattern.removesuffix("_*")
    requests, limits = {}, {}
    for name in RESOURCE_NAMES:
        for kind, target in (("REQUEST", requests), ("LIMIT", limits)):
            variable = f"{prefix}_{name.upper()}_{kind}"
            if environ.get(variable):
                target[name] = formats.check_quantity(variable, environ[variable])
    found = {kind: values for kind, values in (("requests", requests), ("limits", limits)) if values}
    return found or None


@hookimpl
def parse_config(config):
    raw = config.section("job_types")
    default = check_profile("default", raw["default"])
    profiles = {}
    for job_type in config.job_types:
        own = check_profile(job_type, raw.get(job_type) or {})
        profiles[job_type] = replace(resolve(job_type, own, default), sources=sources(job_type, own, config))
    return profiles


def sources(job_type, own, config):
    """Where each setting of `job_type`'s profile came from: the profile key, and the file, the
    environment variable or the built-in default that set it."""
    described = {}
    for name in SETTINGS:
        profile = job_type if own[name] is not None else "default"
        key = f"job_types.{profile}.{name}"
        origin = config.origins.get(key)
        if origin == ENVIRONMENT:
            origin = f"env {variable_for(profile, name)}"
        described[name] = f"{key} ({origin})" if origin else key
    return described


def check_profile(job_type, raw):
    """Check one profile as written; return its settings with unset ones as None."""
    key = f"job_types.{job_type}"
    formats.check_keys(key, raw, SETTINGS)
    checked = dict.fromkeys(SETTINGS)
    if raw.get("mode") is not None:
        if raw["mode"] not in MODES:
            raise ConfigError(f"{key}.mode", raw["mode"], " or ".join(MODES))
        checked["mode"] = raw["mode"]
    if raw.get("node_selector") is not None:
        checked["node_selector"] = formats.check_labels(f"{key}.node_selector", raw["node_selector"])
    if raw.get("tolerations") is not None:
        if not isinstance(raw["tolerations"], list):
            raise ConfigError(f"{key}.tolerations", raw["tolerations"], "a list of tolerations")
        checked["tolerations"] = [
            formats.check_toleration(f"{key}.tolerations[{index}]", toleration)
            for index, toleration in enumerate(raw["tolerations"])
        ]
    if raw.get("resources") is not None:
        checked["resources"] = formats.check_resources(f"{key}.resources", raw["resources"])
    if raw.get("container_resources") is not None:
        per_container = raw["container_resources"]
        if not isinstance(per_container, dict) or not all(isinstance(name, str) for name in per_container):
            raise ConfigError(
                f"{key}.container_resources",
                per_container,
                "a mapping of container names (orchestrator, source, ...) to resources",
            )
        checked["container_resources"] = {
            name: formats.check_resources(f"{key}.container_resources.{name}", value)
            for name, value in per_container.items()
            if value is not None
        }
    if raw.get("image_pull_secrets") is not None:
        secrets = raw["image_pull_secrets"]
        if not isinstance(secrets, list):
            raise ConfigError(f"{key}.image_pull_secrets", secrets, "a list of Secret names")
        checked["image_pull_secrets"] = [
            formats.check_object_name(f"{key}.image_pull_secrets", name) for name in secrets
        ]
    if raw.get("image_pull_policy") is not None:
        if raw["image_pull_policy"] not in formats.PULL_POLICIES:
            raise ConfigError(f"{key}.image_pull_policy", raw["image_pull_policy"], " or ".join(formats.PULL_POLICIES))
        checked["image_pull_policy"] = raw["image_pull_policy"]
    if raw.get("annotations") is not None:
        checked["annotations"] = formats.check_annotations(f"{key}.annotations", raw["annotations"])
    if raw.get("labels") is not None:
        checked["labels"] = formats.check_labels(f"{key}.labels", raw["labels"])
    if raw.get("env") is not None:
        env = formats.check_string_map(f"{key}.env", raw["env"])
        for name in env:
            formats.check_env_name(f"{key}.env", name)
        checked["env"] = env
    interval = raw.get("status_check_interval")
    if interval is not None:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval <= 0:
            raise ConfigError(f"{key}.status_check_interval", interval, "a positive whole number of seconds")
        checked["status_check_interval"] = interval
    return checked


def resolve(job_type, own, default):
    """Fill what `own` leaves unset from `default`; resources fall back value by value."""
    settings = {name: own[name] if own[name] is not None else default[name] for name in SETTINGS}
    key = f"job_types.{job_type}"
    settings["resources"] = merge_resources(f"{key}.resources", default["resources"], own["resources"])
    own_containers, default_containers = own["container_resources"] or {}, default["container_resources"] or {}
    settings["container_resources"] = {
        name: merge_resources(
            f"{key}.container_resources.{name}", default_containers.get(name), own_containers.get(name)
        )
        for name in {**default_containers, **own_containers}
    } or None
    settings["mode"] = settings["mode"] or "fill"
    return Profile(**settings)


def merge_resources(key, default, own):
    """`own` over `default`, value by value; a request above its limit is a ConfigError."""
    default, own = default or {}, own or {}
    resolved = {kind: {**default.get(kind, {}), **own.get(kind, {})} for kind in RESOURCE_KINDS}
    for name in RESOURCE_NAMES:
        request, limit = resolved["requests"].get(name), resolved["limits"].get(name)
        if request is not None and limit is not None and formats.quantity(request) > formats.quantity(limit):
            raise ConfigError(f"{key}.requests.{name}", request, f"a request no larger than the limit {limit}")
    return {kind: values for kind, values in resolved.items() if values} or None


@hookimpl
def mutate_pod(pod, job_type, config, request):
    if job_type not in config.job_types:
        return  # another plugin's kind of pod, not a job pod
    profile = config.settings["profiles"][job_type]
    if request.sources is not None:  # podmutate mutate --explain
        explain(pod, profile, request)
    override = profile.mode == "override"
    pod_spec = spec(pod)
    if profile.node_selector:
        put_all(pod_spec, "nodeSelector", profile.node_selector, override)
    if profile.tolerations:
        add_missing(pod_spec, "tolerations", profile.tolerations)
    if profile.image_pull_secrets:
        add_missing(pod_spec, "imagePullSecrets", [{"name": name} for name in profile.image_pull_secrets])
    if profile.annotations:
        merge_into(annotations(pod), profile.annotations, override)
    if profile.labels:
        merge_into(labels(pod), profile.labels, override)
    if profile.status_check_interval is not None:
        merge_into(annotations(pod), {STATUS_CHECK_ANNOTATION: str(profile.status_check_interval)}, override)
    main = main_container(pod)
    if main is None:
        return
    # Always, as Airbyte did: the API server defaults imagePullPolicy before admission, so a
    # policy the pod "sets" cannot be told from the default, and `fill` would never apply it.
    if profile.image_pull_policy:
        main["imagePullPolicy"] = profile.image_pull_policy
    if profile.env:
        set_env(main, profile.env, override)
    if not (profile.resources or profile.container_resources):
        return
    if pod_spec.get("resources") is not None:
        request.warn(
            "podmutate: container resources left as they are: the pod sets pod-level resources, "
            "which bound every container's"
        )
        return
    per_container = profile.container_resources or {}
    for container in containers(pod):
        wanted = per_container.get(container.get("name"))
        if wanted is None and container is main:
            wanted = profile.resources
        if wanted:
            set_resources(container, wanted, override, request)


# Where each pod-level setting lands, as a JSON pointer.
POINTERS = {
    "node_selector": "/spec/nodeSelector",
    "tolerations": "/spec/tolerations",
    "image_pull_secrets": "/spec/imagePullSecrets",
    "labels": "/metadata/labels",
    "status_check_interval": f"/metadata/annotations/{pointer_token(STATUS_CHECK_ANNOTATION)}",
    "annotations": "/metadata/annotations",
}


def explain(pod, profile, request):
    """Tell `request` where the values this profile writes come from."""

    def say(pointer, setting):
        if getattr(profile, setting) is not None:
            request.explain(pointer, profile.sources[setting])

    for setting, pointer in POINTERS.items():
        say(pointer, setting)
    main = main_container(pod)
    per_container = profile.container_resources or {}
    for index, container in enumerate(containers(pod)):
        pointer = f"/spec/containers/{index}"
        if container.get("name") in per_container:
            say(f"{pointer}/resources", "container_resources")
        if container is main:
            for setting, field_name in (
                ("resources", "resources"),
                ("image_pull_policy", "imagePullPolicy"),
                ("env", "env"),
            ):
                say(f"{pointer}/{field_name}", setting)


def put_all(parent, field, values, override):
    if parent.get(field) is None:
        parent[field] = {}
    merge_into(parent[field], values, override)


def merge_into(target, values, override):
    for key, value in values.items():
        if override or key not in target:
            target[key] = value


def add_missing(parent, field, items):
    """Append each of `items` the list `parent[field]` does not hold yet (lists are unions)."""
    if parent.get(field) is None:
        parent[field] = []
    for item in items:
        if item not in parent[field]:
            parent[field].append(dict(item))


def set_env(container, env, override):
    if container.get("env") is None:
        container["env"] = []
    existing = {variable.get("name"): variable for variable in container["env"]}
    for name, value in env.items():
        if name not in existing:
            container["env"].append({"name": name, "value": value})
        elif override and existing[name] != {"name": name, "value": value}:
            existing[name].clear()
            existing[name].update({"name": name, "value": value})


def set_resources(container, wanted, override, request):
    """Set requests and limits, never leaving a request above its limit (the API would refuse)."""
    current = container.get("resources") or {}
    result = {kind: dict(current.get(kind) or {}) for kind in RESOURCE_KINDS}
    for kind in RESOURCE_KINDS:
        for name, value in (wanted.get(kind) or {}).items():
            if override or name not in result[kind]:
                result[kind][name] = value
    for name in RESOURCE_NAMES:
        request_value, limit = result["requests"].get(name), result["limits"].get(name)
        if request_value is None or limit is None or formats.quantity(request_value) <= formats.quantity(limit):
            continue
        # Keep the pod's own value and drop the profile's, which conflicts with it.
        ours = "limits" if (current.get("requests") or {}).get(name) == request_value else "requests"
        theirs = "requests" if ours == "limits" else "limits"
        previous = (current.get(ours) or {}).get(name)
        if previous is None:
            del result[ours][name]
        else:
            result[ours][name] = previous
        request.warn(
            f"podmutate: {name} {ours} from the profile not set: it conflicts with the pod's "
            f"{name} {theirs} {result[theirs][name]}"
        )
    if result != {kind: dict(current.get(kind) or {}) for kind in RESOURCE_KINDS}:
        container["resources"] = {**current, **{kind: values for kind, values in result.items() if values}}
