"""Per-job-type pod settings: scheduling, resources, pull settings, metadata and default env.

Every setting of a job type's profile falls back to the `default` profile when the type does
not set it, as Airbyte's WorkerConfigs fall back to the JOB_KUBE_* variables.
"""

from dataclasses import dataclass

from webhook import ConfigError, hookimpl
from webhook import kube
from webhook.kube import RESOURCE_KINDS, RESOURCE_NAMES
from webhook.pods import annotations, containers, labels, main_container, spec

STATUS_CHECK_ANNOTATION = "podmutate.io/status-check-interval"
MODES = ("fill", "override")
SETTINGS = ("mode", "node_selector", "tolerations", "resources", "container_resources", "image_pull_secrets",
            "image_pull_policy", "annotations", "labels", "env", "status_check_interval")

# Airbyte's environment variables: which job types have their own, under which prefix.
SELECTOR_PREFIXES = {"spec": "SPEC", "check": "CHECK", "discover": "DISCOVER"}
LABEL_PREFIXES = {"spec": "SPEC", "check": "CHECK", "discover": "DISCOVER", "sync": "REPLICATION"}
RESOURCE_PREFIXES = {"default": "JOB_MAIN_CONTAINER", "check": "CHECK_JOB_MAIN_CONTAINER",
                     "normalization": "NORMALIZATION_JOB_MAIN_CONTAINER", "orchestrator": "REPLICATION_ORCHESTRATOR"}
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


@hookimpl
def config_defaults():
    fast = {"status_check_interval": 1}
    return {"job_types": {"default": {"mode": "fill", "status_check_interval": 30},
                          "spec": fast, "check": dict(fast), "discover": dict(fast)}}


@hookimpl
def config_from_environ(environ):
    job_types = {}

    def put(job_type, setting, value):
        if value is not None:
            job_types.setdefault(job_type, {})[setting] = value

    put("default", "node_selector", key_values(environ, "JOB_KUBE_NODE_SELECTORS"))
    put("default", "annotations", key_values(environ, "JOB_KUBE_ANNOTATIONS"))
    put("default", "labels", key_values(environ, "JOB_KUBE_LABELS"))
    put("default", "tolerations", tolerations(environ, "JOB_KUBE_TOLERATIONS"))
    for job_type, prefix in SELECTOR_PREFIXES.items():
        put(job_type, "node_selector", key_values(environ, f"{prefix}_JOB_KUBE_NODE_SELECTORS"))
        put(job_type, "annotations", key_values(environ, f"{prefix}_JOB_KUBE_ANNOTATIONS"))
    for job_type, prefix in LABEL_PREFIXES.items():
        put(job_type, "labels", key_values(environ, f"{prefix}_JOB_KUBE_LABELS"))
        put(job_type, "tolerations", tolerations(environ, f"{prefix}_JOB_KUBE_TOLERATIONS"))
    for job_type, prefix in RESOURCE_PREFIXES.items():
        put(job_type, "resources", resources(environ, prefix))
    secrets = environ.get("JOB_KUBE_MAIN_CONTAINER_IMAGE_PULL_SECRET", "")
    names = [name.strip() for name in secrets.split(",") if name.strip()]
    for name in names:
        kube.check_object_name("JOB_KUBE_MAIN_CONTAINER_IMAGE_PULL_SECRET", name)
    put("default", "image_pull_secrets", names or None)
    policy = environ.get("JOB_KUBE_MAIN_CONTAINER_IMAGE_PULL_POLICY") or None
    if policy is not None and policy not in kube.PULL_POLICIES:
        raise ConfigError("JOB_KUBE_MAIN_CONTAINER_IMAGE_PULL_POLICY", policy, " or ".join(kube.PULL_POLICIES))
    put("default", "image_pull_policy", policy)
    env = {name[len(DEFAULT_ENV_PREFIX):]: value for name, value in environ.items()
           if name.startswith(DEFAULT_ENV_PREFIX) and len(name) > len(DEFAULT_ENV_PREFIX)}
    put("default", "env", env or None)
    return {"job_types": job_types} if job_types else None


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
        parsed.append(kube.check_toleration(f"{variable}[{index}]", fields))
    return parsed or None


def resources(environ, prefix):
    requests, limits = {}, {}
    for name in RESOURCE_NAMES:
        for kind, target in (("REQUEST", requests), ("LIMIT", limits)):
            variable = f"{prefix}_{name.upper()}_{kind}"
            if environ.get(variable):
                target[name] = kube.check_quantity(variable, environ[variable])
    found = {kind: values for kind, values in (("requests", requests), ("limits", limits)) if values}
    return found or None


@hookimpl
def parse_config(config):
    raw = config.raw["job_types"]
    default = check_profile("default", raw["default"])
    profiles = {}
    for job_type in config.job_types:
        own = check_profile(job_type, raw.get(job_type) or {})
        profiles[job_type] = resolve(job_type, own, default)
    return {"profiles": profiles}


def check_profile(job_type, raw):
    """Check one profile as written; return its settings with unset ones as None."""
    key = f"job_types.{job_type}"
    unknown = sorted(set(raw) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", raw[unknown[0]], f"one of the settings {list(SETTINGS)}")
    checked = dict.fromkeys(SETTINGS)
    if raw.get("mode") is not None:
        if raw["mode"] not in MODES:
            raise ConfigError(f"{key}.mode", raw["mode"], " or ".join(MODES))
        checked["mode"] = raw["mode"]
    if raw.get("node_selector") is not None:
        checked["node_selector"] = kube.check_labels(f"{key}.node_selector", raw["node_selector"])
    if raw.get("tolerations") is not None:
        if not isinstance(raw["tolerations"], list):
            raise ConfigError(f"{key}.tolerations", raw["tolerations"], "a list of tolerations")
        checked["tolerations"] = [kube.check_toleration(f"{key}.tolerations[{index}]", toleration)
                                  for index, toleration in enumerate(raw["tolerations"])]
    if raw.get("resources") is not None:
        checked["resources"] = kube.check_resources(f"{key}.resources", raw["resources"])
    if raw.get("container_resources") is not None:
        per_container = raw["container_resources"]
        if not isinstance(per_container, dict) or not all(isinstance(name, str) for name in per_container):
            raise ConfigError(f"{key}.container_resources", per_container,
                              "a mapping of container names (orchestrator, source, ...) to resources")
        checked["container_resources"] = {
            name: kube.check_resources(f"{key}.container_resources.{name}", value)
            for name, value in per_container.items() if value is not None}
    if raw.get("image_pull_secrets") is not None:
        secrets = raw["image_pull_secrets"]
        if not isinstance(secrets, list):
            raise ConfigError(f"{key}.image_pull_secrets", secrets, "a list of Secret names")
        checked["image_pull_secrets"] = [kube.check_object_name(f"{key}.image_pull_secrets", name)
                                         for name in secrets]
    if raw.get("image_pull_policy") is not None:
        if raw["image_pull_policy"] not in kube.PULL_POLICIES:
            raise ConfigError(f"{key}.image_pull_policy", raw["image_pull_policy"], " or ".join(kube.PULL_POLICIES))
        checked["image_pull_policy"] = raw["image_pull_policy"]
    if raw.get("annotations") is not None:
        checked["annotations"] = kube.check_annotations(f"{key}.annotations", raw["annotations"])
    if raw.get("labels") is not None:
        checked["labels"] = kube.check_labels(f"{key}.labels", raw["labels"])
    if raw.get("env") is not None:
        env = kube.check_string_map(f"{key}.env", raw["env"])
        for name in env:
            kube.check_env_name(f"{key}.env", name)
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
        name: merge_resources(f"{key}.container_resources.{name}", default_containers.get(name),
                              own_containers.get(name))
        for name in {**default_containers, **own_containers}} or None
    settings["mode"] = settings["mode"] or "fill"
    return Profile(**settings)


def merge_resources(key, default, own):
    """`own` over `default`, value by value; a request above its limit is a ConfigError."""
    default, own = default or {}, own or {}
    resolved = {kind: {**default.get(kind, {}), **own.get(kind, {})} for kind in RESOURCE_KINDS}
    for name in RESOURCE_NAMES:
        request, limit = resolved["requests"].get(name), resolved["limits"].get(name)
        if request is not None and limit is not None and kube.quantity(request) > kube.quantity(limit):
            raise ConfigError(f"{key}.requests.{name}", request, f"a request no larger than the limit {limit}")
    return {kind: values for kind, values in resolved.items() if values} or None


@hookimpl
def mutate_pod(pod, job_type, config, request):
    profile = config.settings["profiles"][job_type]
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
        request.warn("podmutate: container resources left as they are: the pod sets pod-level resources, "
                     "which bound every container's")
        return
    per_container = profile.container_resources or {}
    for container in containers(pod):
        wanted = per_container.get(container.get("name"))
        if wanted is None and container is main:
            wanted = profile.resources
        if wanted:
            set_resources(container, wanted, override, request)


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
        if request_value is None or limit is None or kube.quantity(request_value) <= kube.quantity(limit):
            continue
        # Keep the pod's own value and drop the profile's, which conflicts with it.
        ours = "limits" if (current.get("requests") or {}).get(name) == request_value else "requests"
        theirs = "requests" if ours == "limits" else "limits"
        previous = (current.get(ours) or {}).get(name)
        if previous is None:
            del result[ours][name]
        else:
            result[ours][name] = previous
        request.warn(f"podmutate: {name} {ours} from the profile not set: it conflicts with the pod's "
                     f"{name} {theirs} {result[theirs][name]}")
    if result != {kind: dict(current.get(kind) or {}) for kind in RESOURCE_KINDS}:
        container["resources"] = {**current, **{kind: values for kind, values in result.items() if values}}
