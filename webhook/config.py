"""Configuration: built-in defaults, the YAML file and the environment, merged and checked once."""

import copy
import hashlib
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson
import yaml

from webhook.errors import ConfigError

log = logging.getLogger(__name__)

CONFIG_ENV = "PODMUTATE_CONFIG"
FAILURE_MODES = ("ignore", "fail")
# Where a value came from (Config.origins), besides the configuration file's path.
BUILT_IN = "built-in default"
ENVIRONMENT = "environment"
OVERRIDE = "override"
MAX_FILE_BYTES = 1024 * 1024  # a configuration is a few KiB; a larger file is a mistake, not a config

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
}


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
    """12 hex digits of the SHA-256 of the merged settings, keys sorted."""
    return hashlib.sha256(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()[:12]


def merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Return `base` with `overlay` merged in: mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_config_file(path: str) -> dict[str, Any]:
    """Return the mapping in the YAML file at `path`.

    Bounded in time and size: the file is opened without blocking and must be a regular file
    (a FIFO or a device would hang the reader) of at most MAX_FILE_BYTES. An empty file is an
    error, not "all defaults": a file truncated by a bad deploy must not reset every profile.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise ConfigFileError(path, error.strerror or str(error)) from None
    with os.fdopen(descriptor, "rb") as stream:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise ConfigFileError(path, "not a regular file")
        text = stream.read(MAX_FILE_BYTES + 1)
    if len(text) > MAX_FILE_BYTES:
        raise ConfigFileError(path, f"larger than {MAX_FILE_BYTES} bytes")
    try:
        loaded = yaml.safe_load(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigFileError(path, "not UTF-8 text") from None
    except yaml.YAMLError as error:
        raise ConfigFileError(path, yaml_problem(error)) from None
    if loaded is None:
        raise ConfigFileError(path, "the file is empty (no setting at all); write {} to run on the defaults")
    if not isinstance(loaded, dict):
        raise ConfigFileError(path, f"expected a mapping of sections, got {type(loaded).__name__}")
    return loaded


def yaml_problem(error: yaml.YAMLError) -> str:
    """One line for a YAML error: where and what."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    if mark is None:
        return problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def check_host_keys(raw: dict[str, Any]) -> None:
    """Check the host's own keys; raise ConfigError naming the first bad one."""
    if raw["failure_mode"] not in FAILURE_MODES:
        raise ConfigError("failure_mode", raw["failure_mode"], " or ".join(FAILURE_MODES))
    cap = raw["max_body_bytes"]
    if not isinstance(cap, int) or isinstance(cap, bool) or cap <= 0:
        raise ConfigError("max_body_bytes", cap, "a positive whole number of bytes")
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
