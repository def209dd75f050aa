"""The pluggy plugin host: entry points of group "bridge", enabled by the config."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy

from bridge import config as config_mod
from bridge import hookspecs
from bridge.config import BridgeConfig
from bridge.errors import PluginError

GROUP = "bridge"


def get_plugin_manager(load_entrypoints: bool = True) -> pluggy.PluginManager:
    """A fresh manager with every installed plugin loaded and checked: a hook name that is
    not in bridge.hookspecs (a typo) is a PluginError naming the plugin and the hook."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    try:
        if load_entrypoints:
            pm.load_setuptools_entrypoints(GROUP)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(_invalid_plugin(pm, exc)) from None
    return pm


def _invalid_plugin(pm: pluggy.PluginManager, exc: pluggy.PluginValidationError) -> str:
    """'plugin NAME (DIST VERSION): what is wrong; did you mean ...; what to do'."""
    name = pm.get_name(exc.plugin) or getattr(exc.plugin, "__name__", repr(exc.plugin))
    dist = next((f" ({d.project_name} {d.version})" for p, d in pm.list_plugin_distinfo()
                 if p is exc.plugin), "")
    text = str(exc)
    unknown = re.search(r"unknown hook '(\w+)'", text)
    if unknown:
        hooks = [h for h in dir(hookspecs) if h.startswith("register_")]
        close = difflib.get_close_matches(unknown[1], hooks, n=1)
        text = f"{unknown[1]} is not a bridge hook" + (f" (did you mean {close[0]}?)"
                                                       if close else "")
    return (f"plugin {name!r}{dist}: {text}; fix the plugin or uninstall it "
            "(pip uninstall), then start again")


def installed(pm: pluggy.PluginManager) -> list[str]:
    """Names of registered plugins, sorted."""
    return sorted(name for name, plugin in pm.list_name_plugin() if plugin is not None)


def enable_only(pm: pluggy.PluginManager, names: list[str]) -> None:
    """Block every plugin the config does not name; refuse names that are not installed."""
    known = installed(pm)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise PluginError(
            f"plugins.{unknown[0]}: no installed plugin is called {unknown[0]!r} "
            f"(installed: {', '.join(known) or 'none'}; pip install the plugin or fix the name)"
        )
    for name in known:
        if name not in names:
            pm.set_blocked(name)


def config_sections(pm: pluggy.PluginManager) -> dict[str, Any]:
    """{plugin name: config model} from every plugin; a name claimed twice is an error."""
    sections: dict[str, Any] = {}
    for result in pm.hook.register_config_sections():
        for name, model in (result or {}).items():
            if name in sections:
                raise PluginError(f"two plugins register a config section named {name!r}")
            sections[name] = model
    return sections


def load_config(path: str | Path, pm: pluggy.PluginManager) -> BridgeConfig:
    """Read and validate `path`, enabling only the plugins it names."""
    data = config_mod.read_yaml(path)
    plugins = data.get("plugins")
    names = list(plugins) if isinstance(plugins, dict) else []
    enable_only(pm, names)
    return config_mod.validate(data, config_sections(pm), Path(path).resolve().parent)


@dataclass(frozen=True)
class PluginInfo:
    """One installed plugin as `bridge plugins` and `/status` list it."""

    name: str
    version: str | None
    hooks: list[str]


def describe_plugins(pm: pluggy.PluginManager) -> list[PluginInfo]:
    """Every registered plugin with its distribution version and implemented hooks."""
    versions = {
        pm.get_name(plugin): dist.version for plugin, dist in pm.list_plugin_distinfo()
    }
    infos = []
    for name in installed(pm):
        plugin = pm.get_plugin(name)
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        infos.append(PluginInfo(name, versions.get(name), hooks))
    return infos


def collect(results: list[list[Any] | None], what: str) -> list[Any]:
    """Flatten a register_* hook's results; two objects with one name are an error."""
    seen: dict[str, Any] = {}
    for items in results:
        for item in items or []:
            if item.name in seen:
                raise PluginError(
                    f"two plugins register a {what} named {item.name!r}; "
                    "disable one of them in the config"
                )
            seen[item.name] = item
    return list(seen.values())
