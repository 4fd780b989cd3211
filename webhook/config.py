"""Configuration: built-in defaults, the YAML file and the environment, merged and checked once."""

import copy
import hashlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

import orjson
import yaml

from webhook import formats
from webhook.errors import ConfigError, clipped
from webhook.files import FileRefused, read_bounded

log = logging.getLogger(__name__)

CONFIG_ENV = "PODMUTATE_CONFIG"
FAILURE_MODES = ("ignore", "fail")
# Where a value came from (Config.origins), besides the configuration file's path.
BUILT_IN = "built-in default"
ENVIRONMENT = "environment"
OVERRIDE = "override"
MAX_FILE_BYTES = 1024 * 1024  # a configuration is a few KiB; a larger file is a mistake, not a config
# What a YAML document may hold once its aliases are expanded: a configuration is a few hundred
# values a handful of levels deep. A "billion laughs" file of under a kilobyte expands to
# gigabytes; it is refused from the parsed node graph, before anything is built from it.
MAX_YAML_VALUES = 20_000
MAX_YAML_DEPTH = 32
MAX_YAML_BYTES = MAX_FILE_BYTES  # the scalars' text, every alias counted each time it is used
# The largest body a review may have: the API server refuses requests over 3 MiB, and an
# AdmissionReview of a pod is that pod and a little more.
MAX_BODY_BYTES_LIMIT = 16 * 1024 * 1024

# Job pods that got through without podmutate (serve: webhook.ops.safety_net). It changes no pod
# at admission, so it is left out of the digest a mutated pod is named by.
SAFETY_NET_DEFAULTS: dict[str, Any] = {
    "enabled": False,
    "action": "report",  # report, or recreate: delete a Pending pod with a controller, which makes it anew
    "recreate_bare_pods": False,  # with recreate: bare pods too (nothing makes them anew but their creator)
    "max_deletions_per_minute": 10,
    "namespaces": ["jobs"],  # where job pods run, watched
    "exclude_namespaces": ["kube-system"],  # never a pod of these
    "lease": "podmutate-safety-net",  # the Lease, in podmutate's namespace, that elects the one replica
    "webhook_config": "podmutate",  # whose objectSelectors say what a job pod is
}

# Reviews kept for `podmutate replay` (webhook.ops.record), redacted; changes no pod either.
RECORD_DEFAULTS: dict[str, Any] = {
    "enabled": False,
    "per_job_type": 50,  # the last so many reviews of each job type
    "max_bytes_per_job_type": 1024 * 1024,
    "max_bytes": 8 * 1024 * 1024,  # in all: within the manifests' /tmp (an emptyDir of 16 Mi)
    "directory": "",  # files 0600 there; empty: podmutate-recorded in the temporary directory
}

# The host's own keys. `job_types` lists the job types podmutate knows; each is a profile whose
# settings the profiles plugin defines, with `default` as the fallback of every other type.
HOST_DEFAULTS = {
    "failure_mode": "ignore",
    "max_body_bytes": 3 * 1024 * 1024,
    "review_timeout_seconds": 1.0,  # the internal deadline, below the webhook's timeoutSeconds (2)
    "mutated_by_annotation": True,  # name podmutate's plugins and configuration on every pod it changes
    "disable_plugins": [],
    "job_types": {
        name: {} for name in ("default", "spec", "check", "discover", "sync", "normalization", "orchestrator")
    },
    "safety_net": SAFETY_NET_DEFAULTS,
    "record": RECORD_DEFAULTS,
}

NOT_MUTATING = ("safety_net", "record")  # sections that change no pod at admission: not in the digest
SAFETY_NET_ACTIONS = ("report", "recreate")


class ConfigFileError(ConfigError):
    """The configuration file cannot be read or is not YAML."""

    def __init__(self, path: str, problem: str) -> None:
        self.key, self.value, self.expected = path, None, problem
        ValueError.__init__(self, f"{path}: {problem}")


@dataclass(frozen=True)
class Config:
    """A checked configuration, read-only: what every hook is given as `config`.

    `sections` holds the merged layers (defaults, file, environment, overrides) as loaded, and
    `origins` which layer set each key; `settings` holds what each plugin's ``parse_config``
    returned, under the plugin's name.
    A new version replaces the whole Config; nothing edits one.
    """

    sections: Mapping[str, Any]
    settings: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    path: str | None = None
    origins: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    """Dotted key (``job_types.sync.labels``) -> the layer that set it: BUILT_IN, the file's path,
    ENVIRONMENT or OVERRIDE."""
    digest: str = ""
    """What tells one configuration from another (see `digest`): the same settings, however
    written or wherever from, have the same digest."""

    def section(self, name: str) -> Any:
        """A plain, private copy of the section `name` as loaded (a plugin may edit it as it checks it)."""
        return thaw(self.sections[name])

    @property
    def failure_mode(self) -> str:
        return self.sections["failure_mode"]

    @property
    def max_body_bytes(self) -> int:
        return self.sections["max_body_bytes"]

    @property
    def review_timeout_seconds(self) -> float:
        return self.sections["review_timeout_seconds"]

    @property
    def mutated_by_annotation(self) -> bool:
        return self.sections["mutated_by_annotation"]

    @property
    def disabled_plugins(self) -> tuple[str, ...]:
        return tuple(self.sections["disable_plugins"])

    @property
    def safety_net(self) -> Mapping[str, Any]:
        return self.sections["safety_net"]

    @property
    def record(self) -> Mapping[str, Any]:
        return self.sections["record"]

    @cached_property  # every plugin asks, for every pod
    def job_types(self) -> frozenset[str]:
        """The job types a pod can be classified as (every profile but `default`)."""
        return frozenset(self.sections["job_types"]) - {"default"}


def freeze(value: Any) -> Any:
    """`value` made read-only all the way down: mappings become mapping proxies, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    return value


def thaw(value: Any) -> Any:
    """A plain, new copy of a frozen value: dicts and lists again."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [thaw(item) for item in value]
    return value


def digest(raw: Mapping[str, Any]) -> str:
    """12 hex digits of the SHA-256 of the merged settings that mutate pods, keys sorted."""
    mutating = {key: value for key, value in raw.items() if key not in NOT_MUTATING}
    return hashlib.sha256(orjson.dumps(mutating, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()[:12]


def merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Return `base` with `overlay` merged in: mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_config_file(path: str) -> bytes:
    """The bytes of the configuration file at `path`.

    Bounded in time and size: the file is opened without blocking and must be a regular file
    (a FIFO or a device would hang the reader) of at most MAX_FILE_BYTES.
    """
    try:
        return read_bounded(path, MAX_FILE_BYTES)
    except FileRefused as refused:
        raise ConfigFileError(path, str(refused).removeprefix(f"{path}: ")) from None
    except OSError as error:
        raise ConfigFileError(path, error.strerror or str(error)) from None


def parse_config_file(path: str, text: bytes) -> dict[str, Any]:
    """The mapping of sections in `text`, the YAML of the file `path` (named in errors).

    An empty file is an error, not "all defaults": a file truncated by a bad deploy must not
    reset every profile.
    """
    try:
        loaded = load_yaml(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigFileError(path, "not UTF-8 text") from None
    except yaml.YAMLError as error:
        raise ConfigFileError(path, yaml_problem(error)) from None
    except YAMLTooLarge as error:
        raise ConfigFileError(path, str(error)) from None
    if loaded is None:
        raise ConfigFileError(path, "the file is empty (no setting at all); write {} to run on the defaults")
    if not isinstance(loaded, dict):
        raise ConfigFileError(path, f"expected a mapping of sections, got {type(loaded).__name__}")
    check_numbers(loaded)
    return loaded


def check_numbers(document: Any) -> None:
    """Raise ConfigError naming the first number that is not finite or not within 64 bits, or the
    first key that is not a string: no setting takes one, and they break what is computed from a
    configuration (its digest)."""
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:
        key, value = stack.pop()
        if isinstance(value, dict):
            for name in value:
                if not isinstance(name, str):
                    raise ConfigError(f"{key}.{name}" if key else str(name), name, "a string key (quote it in YAML)")
            stack.extend((f"{key}.{name}" if key else str(name), item) for name, item in value.items())
        elif isinstance(value, list):
            stack.extend((f"{key}[{index}]", item) for index, item in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(key, value, "a finite number")
        elif isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            raise ConfigError(key, value, "a number within 64 bits")


class YAMLTooLarge(ValueError):
    """A YAML document beyond what podmutate reads (values, depth or bytes, aliases expanded)."""


def load_yaml(text: str) -> Any:
    """The one YAML document in `text`, safely loaded, within MAX_YAML_VALUES, MAX_YAML_DEPTH and
    MAX_YAML_BYTES with every alias expanded; raises yaml.YAMLError or YAMLTooLarge."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise YAMLTooLarge(f"nested deeper than {MAX_YAML_DEPTH} levels") from None
        if node is None:
            return None
        check_node_graph(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def check_node_graph(root: yaml.Node) -> None:
    """Raise YAMLTooLarge when the document under `root`, aliases expanded, is beyond the bounds.

    An alias is the node it names, shared: the graph is walked once, each node's expanded size
    and depth computed from its children's, so a bomb costs its size in nodes, not its expansion.
    """
    sizes: dict[int, tuple[int, int, int]] = {}  # id(node) -> (values, depth, bytes), expanded
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = node_children(node)
        if not children_done:
            if id(node) in on_path:
                raise YAMLTooLarge("an alias refers to a value that contains it")
            if len(on_path) >= MAX_YAML_DEPTH:
                raise YAMLTooLarge(f"nested deeper than {MAX_YAML_DEPTH} levels")
            on_path.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
            continue
        on_path.discard(id(node))
        parts = [sizes[id(child)] for child in children]
        values = 1 + sum(part[0] for part in parts)
        depth = 1 + max((part[1] for part in parts), default=0)
        text = len(node.value) if isinstance(node, yaml.ScalarNode) else sum(part[2] for part in parts)
        if values > MAX_YAML_VALUES:
            raise YAMLTooLarge(f"more than {MAX_YAML_VALUES} values once its aliases are expanded")
        if depth > MAX_YAML_DEPTH:
            raise YAMLTooLarge(f"nested deeper than {MAX_YAML_DEPTH} levels")
        if text > MAX_YAML_BYTES:
            raise YAMLTooLarge(f"more than {MAX_YAML_BYTES} bytes of text once its aliases are expanded")
        sizes[id(node)] = (values, depth, text)


def node_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def yaml_problem(error: yaml.YAMLError) -> str:
    """One line for a YAML error: where and what."""
    mark = getattr(error, "problem_mark", None)
    problem = clipped(getattr(error, "problem", None) or str(error).splitlines()[0])
    if mark is None:
        return problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def check_host_keys(raw: dict[str, Any]) -> None:
    """Check the host's own keys; raise ConfigError naming the first bad one."""
    if raw["failure_mode"] not in FAILURE_MODES:
        raise ConfigError("failure_mode", raw["failure_mode"], " or ".join(FAILURE_MODES))
    cap = raw["max_body_bytes"]
    if not isinstance(cap, int) or isinstance(cap, bool) or not 0 < cap <= MAX_BODY_BYTES_LIMIT:
        raise ConfigError("max_body_bytes", cap, f"a whole number of bytes from 1 to {MAX_BODY_BYTES_LIMIT}")
    if not isinstance(raw["mutated_by_annotation"], bool):
        raise ConfigError("mutated_by_annotation", raw["mutated_by_annotation"], "true or false")
    budget = raw["review_timeout_seconds"]
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not 0 < budget <= 29:
        raise ConfigError(
            "review_timeout_seconds", budget, "seconds above 0 and below the webhook's timeoutSeconds (at most 29)"
        )
    job_types = raw["job_types"]
    if not isinstance(job_types, dict) or "default" not in job_types:
        raise ConfigError("job_types", job_types, "a mapping of job type to profile, with a `default` profile")
    for name, profile in job_types.items():
        if not isinstance(profile, dict | None):
            raise ConfigError(f"job_types.{name}", profile, "a mapping of profile settings")
        if profile is None:
            job_types[name] = {}
    check_safety_net(raw["safety_net"])
    check_record(raw["record"])


def check_record(section: Any) -> None:
    formats.check_keys("record", section, RECORD_DEFAULTS)
    if not isinstance(section["enabled"], bool):
        raise ConfigError("record.enabled", section["enabled"], "true or false")
    for key, most in (("per_job_type", 10_000), ("max_bytes_per_job_type", 1024**3), ("max_bytes", 1024**3)):
        value = section[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
            raise ConfigError(f"record.{key}", value, f"a whole number from 1 to {most}")
    if not isinstance(section["directory"], str) or (section["directory"] and not section["directory"].startswith("/")):
        raise ConfigError("record.directory", section["directory"], "an absolute path, or empty")


def check_safety_net(section: Any) -> None:
    formats.check_keys("safety_net", section, SAFETY_NET_DEFAULTS)
    for flag in ("enabled", "recreate_bare_pods"):
        if not isinstance(section[flag], bool):
            raise ConfigError(f"safety_net.{flag}", section[flag], "true or false")
    if section["action"] not in SAFETY_NET_ACTIONS:
        raise ConfigError("safety_net.action", section["action"], " or ".join(SAFETY_NET_ACTIONS))
    rate = section["max_deletions_per_minute"]
    if isinstance(rate, bool) or not isinstance(rate, int) or not 1 <= rate <= 600:
        raise ConfigError("safety_net.max_deletions_per_minute", rate, "a whole number from 1 to 600")
    for key in ("namespaces", "exclude_namespaces"):
        if not isinstance(section[key], list):
            raise ConfigError(f"safety_net.{key}", section[key], "a list of namespace names")
        for name in section[key]:
            formats.check_object_name(f"safety_net.{key}", name)
    for key in ("lease", "webhook_config"):
        formats.check_object_name(f"safety_net.{key}", section[key])
