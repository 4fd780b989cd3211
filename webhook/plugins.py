"""The plugin manager: built-in plugins, third-party ones from entry points, and what is loaded."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import Any

import orjson
import pluggy

from webhook import hookspecs
from webhook.errors import ConfigError

log = logging.getLogger(__name__)

# Built-in plugins, registered exactly like third-party ones, before them. Where the order of
# mutate_pod matters, each plugin says so with pluggy's own markers: connection_labels is
# tryfirst, fix_permissions trylast; the rest touch nothing another reads, in any order.
BUILTIN_PLUGINS = (
    "plugins.classify",
    "plugins.connection_labels",
    "plugins.fix_permissions",
    "plugins.init_container",
    "plugins.tmp_volume",
    "plugins.profiles",
)

TRACE_ENV = "PODMUTATE_TRACE_HOOKS"


def builtin_name(module_name: str) -> str:
    """The name a built-in plugin goes by: its module name without the package."""
    return module_name.rpartition(".")[2]


def make_plugin_manager(disabled: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> pluggy.PluginManager:
    """Return a checked plugin manager with every built-in and installed plugin not in `disabled`.

    Raises ConfigError when `disabled` names a plugin that does not exist.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    builtin = {builtin_name(module_name): module_name for module_name in BUILTIN_PLUGINS}
    installed = {entry_point.name for entry_point in metadata.entry_points(group=hookspecs.PROJECT_NAME)}
    unknown = sorted(set(disabled) - set(builtin) - installed)
    if unknown:
        raise ConfigError("disable_plugins", unknown, f"names of plugins: {sorted(set(builtin) | installed)}")
    for name in disabled:
        pm.set_blocked(name)
    for name, module_name in builtin.items():
        if not pm.is_blocked(name):
            pm.register(importlib.import_module(module_name), name=name)
    pm.load_setuptools_entrypoints(hookspecs.PROJECT_NAME)
    pm.check_pending()
    if (environ if environ is not None else os.environ).get(TRACE_ENV):
        pm.trace.root.setwriter(log.debug)
        pm.enable_tracing()
    return pm


def plugin_rows(pm: pluggy.PluginManager, disabled: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Describe every plugin: name, version, hooks and whether it is enabled."""
    import webhook

    versions = {pm.get_name(plugin): dist.version for plugin, dist in pm.list_plugin_distinfo()}
    builtin = {builtin_name(module_name) for module_name in BUILTIN_PLUGINS}
    rows = [
        {
            "name": name,
            "version": versions.get(name, webhook.__version__),
            "builtin": name in builtin,
            "hooks": sorted(caller.name for caller in pm.get_hookcallers(plugin) or ()),
            "enabled": True,
        }
        for name, plugin in pm.list_name_plugin()
        if plugin is not None  # a blocked (disabled) plugin is listed with no object
    ]
    rows += [
        {"name": name, "version": None, "builtin": name in builtin, "hooks": [], "enabled": False} for name in disabled
    ]
    return sorted(rows, key=lambda row: (not row["builtin"], row["name"]))


def one_plugin_at_a_time(pm: pluggy.PluginManager) -> list[tuple[str, Any]]:
    """(name, hook caller of that plugin alone) for every mutate_pod implementation, in calling order."""
    impls = pm.hook.mutate_pod.get_hookimpls()
    return [
        (
            impl.plugin_name,
            pm.subset_hook_caller("mutate_pod", remove_plugins=[other.plugin for other in impls if other is not impl]),
        )
        for impl in reversed(impls)
    ]  # pluggy calls the last registered first


def mutator_identity(pm: pluggy.PluginManager, config_digest: str) -> str:
    """What podmutate names on a pod it changed: its version, the plugins that mutate and theirs, and
    the configuration's digest; compact JSON, the same for every pod while nothing is reloaded."""
    import webhook

    mutating = {impl.plugin_name for impl in pm.hook.mutate_pod.get_hookimpls()}
    plugins = {row["name"]: row["version"] for row in plugin_rows(pm) if row["name"] in mutating}
    described = {"podmutate": webhook.__version__, "plugins": plugins, "config": config_digest}
    return orjson.dumps(described, option=orjson.OPT_SORT_KEYS).decode()
