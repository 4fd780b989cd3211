"""Keycloak pods, clustered at admission as Airbyte's chart did by hand.

Keycloak replicas share sessions through an Infinispan cache whose members find each other with
JGroups' DNS discovery: a DNS query for a headless Service returns every replica's address, and
the members talk on port 7800. For each pod the selector picks, this plugin adds to the
Keycloak container what the chart wrote into its Deployment:

- ``JAVA_OPTS_APPEND`` with ``-Djgroups.dns.query=<headless service>``;
- ``KC_CACHE=ispn`` and ``KC_CACHE_STACK=kubernetes`` (the image's ``--cache=ispn
  --cache-stack=kubernetes``);
- containerPort 7800 named ``jgroups``;
- the probe timings that leave time to join the cluster, on the probes the container has.

The headless Service itself is a manifest (``manifests/headless-service.yaml``).
"""

from webhook import ConfigError, formats, hookimpl, pods

PLUGIN_NAME = "keycloak"  # the entry point's name, under which podmutate keeps this plugin's settings
SECTION = "keycloak"
JOB_TYPE = "keycloak"  # not an Airbyte job type: podmutate's job-pod plugins leave these pods alone
JGROUPS_PORT = 7800
JGROUPS_PORT_NAME = "jgroups"
DNS_QUERY_OPTION = "-Djgroups.dns.query="
PROBE_FIELDS = ("initialDelaySeconds", "periodSeconds", "timeoutSeconds", "failureThreshold", "successThreshold")
PROBES = {"liveness": "livenessProbe", "readiness": "readinessProbe"}
HEADLESS_SERVICE_ENV = "KEYCLOAK_HEADLESS_SERVICE"
DEFAULT_SELECTOR = {"app.kubernetes.io/name": "keycloak"}


@hookimpl
def config_defaults():
    return {
        SECTION: {
            "selector": None,  # labels a Keycloak pod carries; DEFAULT_SELECTOR unless set (set, it replaces it whole)
            "container": "keycloak",
            "headless_service": "keycloak-headless",
            "cache": "ispn",
            "cache_stack": "kubernetes",
            # Airbyte's chart (b0640f43f8): longer delays and more failures while a replica joins the cluster.
            "probes": {
                "liveness": {
                    "initialDelaySeconds": 60,
                    "periodSeconds": 5,
                    "timeoutSeconds": 5,
                    "failureThreshold": 3,
                    "successThreshold": 1,
                },
                "readiness": {
                    "initialDelaySeconds": 30,
                    "periodSeconds": 5,
                    "timeoutSeconds": 5,
                    "failureThreshold": 10,
                    "successThreshold": 1,
                },
            },
        }
    }


@hookimpl
def config_from_environ(environ):
    service = environ.get(HEADLESS_SERVICE_ENV)
    return {SECTION: {"headless_service": service}} if service else None


@hookimpl
def parse_config(config):
    raw = formats.check_keys(SECTION, config.section(SECTION), config_defaults()[SECTION])
    selector = formats.check_labels(f"{SECTION}.selector", raw["selector"] or DEFAULT_SELECTOR)
    if not selector:
        raise ConfigError(f"{SECTION}.selector", selector, "at least one label that Keycloak pods carry")
    formats.check_object_name(f"{SECTION}.headless_service", raw["headless_service"])
    for key in ("container", "cache", "cache_stack"):
        if not isinstance(raw[key], str) or not raw[key]:
            raise ConfigError(f"{SECTION}.{key}", raw[key], "a non-empty string")
    probes = formats.check_keys(f"{SECTION}.probes", raw["probes"], PROBES)
    for name, timings in probes.items():
        formats.check_keys(f"{SECTION}.probes.{name}", timings, PROBE_FIELDS)
        for field, value in timings.items():
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < (0 if field == "initialDelaySeconds" else 1)
            ):
                raise ConfigError(f"{SECTION}.probes.{name}.{field}", value, "a whole number of seconds (or times)")
        if name == "liveness" and timings.get("successThreshold", 1) != 1:
            # The API server refuses a liveness probe that must succeed more than once.
            raise ConfigError(f"{SECTION}.probes.liveness.successThreshold", timings["successThreshold"], "1")
    return {**raw, "selector": selector, "probes": {PROBES[name]: timings for name, timings in probes.items()}}


@hookimpl
def classify_pod(pod, config):
    selector = config.settings[PLUGIN_NAME]["selector"]
    return JOB_TYPE if all(pods.label(pod, key) == value for key, value in selector.items()) else None


@hookimpl
def mutate_pod(pod, job_type, config, request):
    if job_type != JOB_TYPE:
        return
    own = config.settings[PLUGIN_NAME]
    container = next(
        (c for c in pods.containers(pod) if c.get("name") == own["container"]), None
    ) or pods.main_container(pod)
    if container is None:
        return
    index = pods.containers(pod).index(container)
    set_java_option(container, f"{DNS_QUERY_OPTION}{own['headless_service']}")
    add_env(container, "KC_CACHE", own["cache"])
    add_env(container, "KC_CACHE_STACK", own["cache_stack"])
    add_jgroups_port(container, request)
    for field_name, timings in own["probes"].items():
        if container.get(field_name):
            container[field_name].update(timings)
            request.explain(f"/spec/containers/{index}/{field_name}", f"{SECTION}.probes")
    request.explain(f"/spec/containers/{index}/env", f"{SECTION}.headless_service, cache, cache_stack")


def set_java_option(container, option):
    """Append `option` to JAVA_OPTS_APPEND unless a DNS query is there already (the pod's own wins)."""
    if container.get("env") is None:
        container["env"] = []
    env = container["env"]
    current = next((variable for variable in env if variable.get("name") == "JAVA_OPTS_APPEND"), None)
    if current is None:
        env.append({"name": "JAVA_OPTS_APPEND", "value": option})
    elif "valueFrom" not in current and DNS_QUERY_OPTION not in current.get("value", ""):
        current["value"] = f"{current.get('value', '')} {option}".strip()


def add_env(container, name, value):
    """Set env `name` unless the container sets it (by value or from a reference)."""
    if all(variable.get("name") != name for variable in container.get("env") or []):
        container["env"].append({"name": name, "value": value})


def add_jgroups_port(container, request):
    ports = container.get("ports") or []
    if any(port.get("containerPort") == JGROUPS_PORT for port in ports):
        return
    taken = next((port for port in ports if port.get("name") == JGROUPS_PORT_NAME), None)
    if taken is not None:
        request.warn(
            f"podmutate-keycloak: port {JGROUPS_PORT} not added: the port name "
            f"{JGROUPS_PORT_NAME!r} is taken by port {taken.get('containerPort')}"
        )
        return
    container["ports"] = [*ports, {"name": JGROUPS_PORT_NAME, "containerPort": JGROUPS_PORT, "protocol": "TCP"}]
