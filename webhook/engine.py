"""The host: a loaded configuration and the plugins it enables, replaced whole when the file changes.

Plugins are given the read-only Config; the plugin manager stays here, with the host.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

import pluggy

from webhook import metrics
from webhook.config import (
    BUILT_IN,
    CONFIG_ENV,
    ENVIRONMENT,
    HOST_DEFAULTS,
    OVERRIDE,
    Config,
    check_host_keys,
    digest,
    freeze,
    merge,
    parse_config_file,
    read_config_file,
)
from webhook.errors import ConfigError, clipped
from webhook.files import write_atomically
from webhook.plugins import make_plugin_manager, mutator_identity, one_plugin_at_a_time
from webhook.watch import FileWatcher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Engine:
    """A checked configuration and the plugin manager of the plugins it enables."""

    config: Config
    plugins: pluggy.PluginManager
    source: bytes = b""  # the configuration file as it was read (b"" without one): what is kept as the last good
    overrides: Mapping[str, Any] = field(default_factory=dict)  # the top layer it was loaded with: a reload keeps it

    @cached_property
    def mutators(self) -> list[tuple[str, Any]]:
        """(plugin name, its mutate_pod alone), in calling order: each plugin is run, timed and blamed alone."""
        return one_plugin_at_a_time(self.plugins)

    @cached_property
    def mutated_by(self) -> str:
        """The value of the mutated-by annotation (webhook.plugins.mutator_identity)."""
        return mutator_identity(self.plugins, self.config.digest)


def load_engine(
    path: str | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    read_from: str | None = None,
) -> Engine:
    """Load, merge and check the configuration; raise ConfigError naming the first bad key.

    Layers, each over the one before: the built-in defaults of the host and of every plugin,
    the YAML file (`path`, else $PODMUTATE_CONFIG), the environment variables plugins read
    (Airbyte's names), then `overrides`. Every section and key is checked by its plugin, a
    disabled plugin's too: a misspelling must not pass because some plugin happens to be off.
    With `read_from`, the file's content is read from that path instead (a kept copy of `path`).
    """
    environ = os.environ if environ is None else environ
    path = path or environ.get(CONFIG_ENV) or None
    source = read_config_file(read_from or path) if path else b""
    from_file = parse_config_file(path, source) if path else {}
    overrides = overrides or {}
    disabled = overrides.get("disable_plugins", from_file.get("disable_plugins", []))
    if not isinstance(disabled, list) or not all(isinstance(name, str) for name in disabled):
        raise ConfigError("disable_plugins", disabled, "a list of plugin names")
    everything = make_plugin_manager((), environ=environ)
    raw, layers = assemble(everything, from_file, environ, overrides, path)
    sections, origins, settings_digest = freeze(raw), MappingProxyType(layers), digest(raw)
    config = Config(sections=sections, path=path, origins=origins, digest=settings_digest)
    settings = parse_settings(everything, config)
    plugins = everything
    if disabled:
        plugins = make_plugin_manager(disabled, environ=environ)
        settings = {name: parsed for name, parsed in settings.items() if not plugins.is_blocked(name)}
    return Engine(
        dataclasses.replace(config, settings=MappingProxyType(settings)), plugins, source, MappingProxyType(overrides)
    )


def assemble(
    pm: pluggy.PluginManager,
    from_file: Mapping[str, Any],
    environ: Mapping[str, str],
    overrides: Mapping[str, Any],
    path: str | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The layers merged, with the sections checked against the plugins of `pm`; and the origin
    of every key (dotted) — the layer that set it last."""
    origins: dict[str, str] = {}
    raw = copy.deepcopy(HOST_DEFAULTS)
    for defaults in reversed(pm.hook.config_defaults()):
        raw = merge(raw, defaults)
    record(origins, raw, BUILT_IN)
    known_sections = set(raw)
    raw = merge(raw, from_file)
    record(origins, from_file, str(path))
    for from_environ in reversed(pm.hook.config_from_environ(environ=environ)):
        raw = merge(raw, from_environ or {})
        record(origins, from_environ or {}, ENVIRONMENT)
    raw = merge(raw, overrides)
    record(origins, overrides, OVERRIDE)
    unknown = sorted(set(raw) - known_sections)
    if unknown:
        raise ConfigError(unknown[0], raw[unknown[0]], f"one of the sections {sorted(known_sections)}")
    check_host_keys(raw)
    return raw, origins


def record(origins: dict[str, str], layer: Mapping[str, Any], origin: str, prefix: str = "") -> None:
    """Note `origin` as where every key of `layer` (and below) came from."""
    for key, value in layer.items():
        origins[f"{prefix}{key}"] = origin
        if isinstance(value, Mapping):
            record(origins, value, origin, f"{prefix}{key}.")


def parse_settings(pm: pluggy.PluginManager, config: Config) -> dict[str, Any]:
    """Each plugin's parsed settings, under its own name: no plugin can overwrite another's."""
    settings = {}
    for impl in pm.hook.parse_config.get_hookimpls():
        parsed = impl.function(*[config for _ in impl.argnames])  # the hook's one argument, if declared
        if parsed is not None:
            settings[impl.plugin_name] = parsed
    return settings


def load_engine_or_last_good(
    path: str | None, *, last_good: str | None, environ: Mapping[str, str] | None = None
) -> tuple[Engine, bool]:
    """The engine of the configuration file, or, when that is refused and a copy of the last good
    one is kept at `last_good`, the engine of that copy (still named after `path`); and whether
    the file was refused. A process started while the file is bad serves what was last good."""
    try:
        return load_engine(path, environ=environ), False
    except ConfigError as error:
        if not (path and last_good and os.path.exists(last_good)):
            raise
        log.error("configuration %s refused, starting from the last good one: %s", path, clipped(str(error)))
        return load_engine(path, environ=environ, read_from=last_good), True


def keep_last_good(engine: Engine, last_good: str | None) -> None:
    """Keep the configuration file `engine` was loaded from at `last_good`, for processes started later."""
    if last_good and engine.source:
        write_atomically(last_good, engine.source, mode=0o600)


class EngineWatcher:
    """Holds the engine in force and loads it again when its configuration file changes.

    A new version that fails to load is refused with a logged error; the last good one stays, and
    with `last_good` (a path) each version taken is kept there too. `refused`: the file on disk
    was refused already (the engine given is the last good one). A reload keeps the overrides the
    engine was loaded with, unless `overrides` are given.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        interval: float = 1.0,
        last_good: str | None = None,
        refused: bool = False,
    ) -> None:
        path = engine.config.path
        overrides = engine.overrides if overrides is None else overrides
        self._last_good = last_good
        if not refused:
            keep_last_good(engine, last_good)
        self._watcher = FileWatcher(
            [path] if path else [],
            lambda: load_engine(path, overrides=overrides, environ=environ),
            engine,
            what=f"configuration {path}",
            refused=(ConfigError,),
            interval=interval,
            on_change=[self._in_force],
            reloads=metrics.CONFIG_RELOADS,
            last_ok=metrics.CONFIG_LAST_RELOAD_OK,
            started_ok=not refused,
        )
        self._digest = engine.config.digest
        metrics.config_in_force(self._digest)

    def _in_force(self, engine: Engine) -> None:
        metrics.config_in_force(engine.config.digest, previous=self._digest)
        self._digest = engine.config.digest
        keep_last_good(engine, self._last_good)

    def current(self) -> Engine:
        """The engine in force. Never reads the file: reloads happen off the request path (watch)."""
        return self._watcher.current()

    def check(self) -> bool:
        """Reload now if the file changed; True when a new configuration took effect."""
        return self._watcher.check()

    def watch(self) -> None:
        """Check the file once per interval from a daemon thread."""
        if self._watcher.paths:
            self._watcher.watch("podmutate-config-watch")

    def alive(self) -> bool:
        """False when the thread of `watch()` no longer checks the file."""
        return self._watcher.alive()
