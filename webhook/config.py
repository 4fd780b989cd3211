"""Configuration: built-in defaults, the YAML file and the environment, merged and checked once."""

import copy
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field

import pluggy
import yaml

from webhook.errors import ConfigError
from webhook.plugins import make_plugin_manager

log = logging.getLogger(__name__)

CONFIG_ENV = "PODMUTATE_CONFIG"
FAILURE_MODES = ("ignore", "fail")
MAX_FILE_BYTES = 1024 * 1024  # a configuration is a few KiB; a larger file is a mistake, not a config

# The host's own keys. `job_types` lists the job types podmutate knows; each is a profile whose
# settings the profiles plugin defines, with `default` as the fallback of every other type.
HOST_DEFAULTS = {
    "failure_mode": "ignore",
    "max_body_bytes": 3 * 1024 * 1024,
    "review_timeout_seconds": 1.0,  # the internal deadline, below the webhook's timeoutSeconds (2)
    "disable_plugins": [],
    "job_types": {name: {} for name in ("default", "spec", "check", "discover", "sync", "normalization",
                                        "orchestrator")},
}


class ConfigFileError(ConfigError):
    """The configuration file cannot be read or is not YAML."""

    def __init__(self, path, problem):
        self.key, self.value, self.expected = path, None, problem
        ValueError.__init__(self, f"{path}: {problem}")


@dataclass(frozen=True)
class Config:
    """A checked configuration and the plugins it enables; replaced whole on reload, never edited."""

    raw: dict
    settings: dict
    plugin_manager: pluggy.PluginManager = field(repr=False)
    path: str | None = None

    @property
    def failure_mode(self):
        return self.raw["failure_mode"]

    @property
    def max_body_bytes(self):
        return self.raw["max_body_bytes"]

    @property
    def review_timeout_seconds(self):
        return self.raw["review_timeout_seconds"]

    @property
    def disabled_plugins(self):
        return tuple(self.raw["disable_plugins"])

    @property
    def job_types(self):
        """The job types a pod can be classified as (every profile but `default`)."""
        return frozenset(self.raw["job_types"]) - {"default"}


def merge(base, overlay):
    """Return `base` with `overlay` merged in: mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_config_file(path):
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


def yaml_problem(error):
    """One line for a YAML error: where and what."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    if mark is None:
        return problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def load_config(path=None, *, overrides=None, environ=None):
    """Load, merge and check the configuration; raise ConfigError naming the first bad key.

    Layers, each over the one before: the built-in defaults of the host and of every enabled
    plugin, the YAML file (`path`, else $PODMUTATE_CONFIG), the environment variables plugins
    read (Airbyte's names), then `overrides`.
    """
    environ = os.environ if environ is None else environ
    path = path or environ.get(CONFIG_ENV) or None
    from_file = read_config_file(path) if path else {}
    overrides = overrides or {}
    disabled = overrides.get("disable_plugins", from_file.get("disable_plugins", []))
    if not isinstance(disabled, list) or not all(isinstance(name, str) for name in disabled):
        raise ConfigError("disable_plugins", disabled, "a list of plugin names")
    if disabled:
        # Every section and key is checked, a disabled plugin's too: a misspelling must not pass
        # because some plugin happens to be off.
        assemble(make_plugin_manager((), environ=environ), from_file, environ, overrides, path)
    return assemble(make_plugin_manager(disabled, environ=environ), from_file, environ, overrides, path)


def assemble(pm, from_file, environ, overrides, path):
    """The layers merged and checked with the plugins of `pm`; raises ConfigError naming the first bad key."""
    raw = copy.deepcopy(HOST_DEFAULTS)
    for defaults in reversed(pm.hook.config_defaults()):
        raw = merge(raw, defaults)
    known_sections = set(raw) | {name for name in from_file if name in HOST_DEFAULTS}
    raw = merge(raw, from_file)
    for from_environ in reversed(pm.hook.config_from_environ(environ=environ)):
        raw = merge(raw, from_environ or {})
    raw = merge(raw, overrides)
    unknown = sorted(set(raw) - known_sections)
    if unknown:
        raise ConfigError(unknown[0], raw[unknown[0]], f"one of the sections {sorted(known_sections)}")
    check_host_keys(raw)
    config = Config(raw=raw, settings={}, plugin_manager=pm, path=path)
    for parsed in pm.hook.parse_config(config=config):
        config.settings.update(parsed or {})
    return config


def check_host_keys(raw):
    if raw["failure_mode"] not in FAILURE_MODES:
        raise ConfigError("failure_mode", raw["failure_mode"], " or ".join(FAILURE_MODES))
    cap = raw["max_body_bytes"]
    if not isinstance(cap, int) or isinstance(cap, bool) or cap <= 0:
        raise ConfigError("max_body_bytes", cap, "a positive whole number of bytes")
    budget = raw["review_timeout_seconds"]
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not 0 < budget <= 29:
        raise ConfigError("review_timeout_seconds", budget,
                          "seconds above 0 and below the webhook's timeoutSeconds (at most 29)")
    job_types = raw["job_types"]
    if not isinstance(job_types, dict) or "default" not in job_types:
        raise ConfigError("job_types", job_types, "a mapping of job type to profile, with a `default` profile")
    for name, profile in job_types.items():
        if not isinstance(profile, dict | None):
            raise ConfigError(f"job_types.{name}", profile, "a mapping of profile settings")
        if profile is None:
            job_types[name] = {}


class ConfigWatcher:
    """Holds the configuration in force and reloads it when its file changes on disk.

    A new version that fails to load is refused with a logged error; the last good one stays.
    """

    def __init__(self, config, *, environ=None, overrides=None, interval=1.0):
        self.config = config
        self._environ = environ
        self._overrides = overrides
        self._interval = interval
        self._lock = threading.Lock()
        self._checked_at = time.monotonic()
        self._stamp = self._file_stamp()

    def _file_stamp(self):
        if not self.config.path:
            return None
        try:
            status = os.stat(self.config.path)
        except OSError:
            return None
        return (status.st_mtime_ns, status.st_size, status.st_ino)

    def watch(self):
        """Check the file once per interval from a daemon thread, so a change is seen without traffic."""

        def loop():
            while True:
                time.sleep(self._interval)
                self.check()

        if self.config.path:
            threading.Thread(target=loop, name="podmutate-config-watch", daemon=True).start()

    def current(self):
        """The configuration in force. Never reads the file: reloads happen off the request path (watch)."""
        return self.config

    def check(self):
        """Reload now if the file changed; return True when a new configuration took effect."""
        with self._lock:
            self._checked_at = time.monotonic()
            stamp = self._file_stamp()
            if stamp is None or stamp == self._stamp:
                return False
            self._stamp = stamp
            try:
                config = load_config(self.config.path, overrides=self._overrides, environ=self._environ)
            except ConfigError as error:
                log.error("configuration %s refused, keeping the last good one: %s", self.config.path, error)
                return False
            self.config = config
            log.info("configuration %s reloaded", self.config.path)
            return True
