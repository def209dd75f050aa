"""The pluggy plugin host: entry points of group "bridge", enabled by the config."""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy
from pydantic import BaseModel

from bridge import config as config_mod
from bridge import hookspecs
from bridge.config import BridgeConfig
from bridge.contracts import SinkSettings
from bridge.errors import PluginError

GROUP = "bridge"
FIX = "fix the plugin or uninstall it (pip uninstall), then start again"


def get_plugin_manager(load_entrypoints: bool = True,
                       on_broken: Callable[[str], None] | None = None) -> pluggy.PluginManager:
    """A fresh manager with every installed plugin loaded and checked. A plugin that cannot
    be imported, a name two distributions claim, a hook name that is not in bridge.hookspecs
    (a typo) or a hook taking an argument the hook does not pass is a PluginError naming
    the plugin; with `on_broken`, each is reported through it instead and the rest load."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    dists: dict[str, str] = {}
    if load_entrypoints:
        dists = _preload(pm, on_broken)
    try:
        if load_entrypoints:
            pm.load_setuptools_entrypoints(GROUP)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(_invalid_plugin(pm, exc, dists)) from None
    for name in dists:
        _check_marked(pm, name, dists[name], on_broken)
    return pm


def _check_marked(pm: pluggy.PluginManager, name: str, dist: str,
                  on_broken: Callable[[str], None] | None) -> None:
    """A hook function without @hookimpl is never called: pluggy ignores it, so the plugin
    would be enabled and do nothing (and its settings would be refused as 'takes none')."""
    plugin = pm.get_plugin(name)
    if plugin is None:
        return
    for hook in (h for h in dir(hookspecs) if h.startswith("register_")):
        if callable(getattr(plugin, hook, None)) and pm.parse_hookimpl_opts(plugin, hook) is None:
            _broken(pm, on_broken, name, f"plugin {name!r} ({dist}): {hook} is not marked "
                    f"@hookimpl, so it would never be called (from bridge import hookimpl, "
                    f"then put @hookimpl above it); {FIX}")
            return


def _preload(pm: pluggy.PluginManager, on_broken: Callable[[str], None] | None
             ) -> dict[str, str]:
    """Import every `bridge` entry point before pluggy does, so that one that fails to import
    or a name claimed by two distributions is a one-line error (pluggy would show a
    traceback, or silently keep whichever it met first); {name: 'dist version'}."""
    claims: dict[str, tuple[str, str]] = {}  # name -> (distribution, entry point value)
    for dist in importlib.metadata.distributions():
        found = dist.entry_points.select(group=GROUP)
        if not found:  # most: reading a distribution's METADATA (email parser) is the cost
            continue
        label = f"{dist.metadata['Name']} {dist.version}"
        for ep in found:
            if ep.name in claims:
                if claims[ep.name][0].split()[0] != label.split()[0]:  # not one dist seen twice
                    _broken(pm, on_broken, ep.name, f"plugin {ep.name!r} is installed twice, by "
                            f"{claims[ep.name][0]} ({claims[ep.name][1]}) and by {label} "
                            f"({ep.value}); pip uninstall one of them, then start again")
                continue
            claims[ep.name] = (label, ep.value)
            try:
                ep.load()
            except Exception as exc:
                _broken(pm, on_broken, ep.name, f"plugin {ep.name!r} ({label}) cannot be "
                        f"imported ({ep.value}): {type(exc).__name__}: {exc}; {FIX}")
    return {name: label for name, (label, _) in claims.items()}


def _broken(pm: pluggy.PluginManager, on_broken: Callable[[str], None] | None, name: str,
            problem: str) -> None:
    if on_broken is None:
        raise PluginError(problem)
    on_broken(problem)
    pm.set_blocked(name)


def _invalid_plugin(pm: pluggy.PluginManager, exc: pluggy.PluginValidationError,
                    dists: dict[str, str]) -> str:
    """'plugin NAME (DIST VERSION): what is wrong; did you mean ...; what to do'."""
    text = str(exc)
    named = re.match(r"Plugin '([^']+)'", text)
    name = pm.get_name(exc.plugin) or (named[1] if named else None) or getattr(
        exc.plugin, "__name__", repr(exc.plugin))
    dist = f" ({dists[name]})" if name in dists else ""
    unknown = re.search(r"unknown hook '(\w+)'", text)
    extra = re.search(r"hookimpl definition: (\w+)(\(.*\))\s*Argument\(s\) (\{.*\}) are declared",
                      text)
    if unknown:
        hooks = [h for h in dir(hookspecs) if h.startswith("register_")]
        close = difflib.get_close_matches(unknown[1], hooks, n=1)
        text = f"{unknown[1]} is not a bridge hook" + (f" (did you mean {close[0]}?)"
                                                       if close else "")
    elif extra:
        spec = inspect.signature(getattr(hookspecs, extra[1]))
        text = (f"{extra[1]}{extra[2]} asks for {extra[3]}, which the hook does not pass; "
                f"its signature is {extra[1]}{_params(spec)}")
    return f"plugin {name!r}{dist}: {' '.join(text.split())}; {FIX}"


def _params(signature: inspect.Signature) -> str:
    """'(context)' for a hook spec: the argument names only."""
    return f"({', '.join(signature.parameters)})"


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
    for impl in reversed(pm.hook.register_config_sections.get_hookimpls()):  # pluggy's order
        for name, model in _sections_of(impl.plugin_name, impl.function()).items():
            if name in sections:
                raise PluginError(f"two plugins register a config section named {name!r}")
            sections[name] = model
    return sections


def _sections_of(plugin: str, result: Any) -> dict[str, Any]:
    """A register_config_sections result, checked: {name: a pydantic model class}."""
    where = f"plugin {plugin!r}: register_config_sections"
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()
        raise PluginError(f"{where} is async; hooks are synchronous factories (make it a "
                          "plain def returning {section name: model})")
    if result is None:
        return {}
    if not isinstance(result, dict):
        raise PluginError(f"{where} returned {type(result).__name__}, not a dict of section "
                          "name to pydantic model (return {\"mycrm\": MyCrmConfig})")
    for name, model in result.items():
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise PluginError(f"{where}: section {name!r} is {model!r}, not a pydantic model "
                              "class (a sink's extends bridge.SinkSettings)")
    return result


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


# What each register_* hook's objects must have (docs/plugins.md, the contracts):
# coroutine methods, plain methods.
_MEMBERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sink": (("start", "deliver", "close"), ()),
    "source": ((), ("routes",)),
    "filter": ((), ("apply",)),
}


def build(pm: pluggy.PluginManager, hook: str, what: str, **kwargs: Any) -> list[Any]:
    """Call `hook` of each enabled plugin, check what it returns, and flatten it with
    collect(): a hook that is async, returns something other than a list, or returns an
    object lacking the contract's members is a PluginError naming the plugin."""
    results = []
    for impl in reversed(getattr(pm.hook, hook).get_hookimpls()):  # pluggy's order
        result = impl.function(*[kwargs[arg] for arg in impl.argnames])
        results.append(_checked(f"plugin {impl.plugin_name!r}: {hook}", what, result))
    return collect(results, what)


def _checked(where: str, what: str, result: Any) -> list[Any]:
    """The hook's list, or a PluginError saying what is wrong with it and the fix."""
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()  # never awaited on purpose: no "never awaited" warning
        raise PluginError(f"{where} is async; hooks are synchronous factories (make it a "
                          f"plain def returning a list; await in the {what}'s own methods)")
    if result is None:
        return []
    if not isinstance(result, list | tuple):
        raise PluginError(f"{where} returned {type(result).__name__}, not a list of {what}s "
                          f"(return [{what}] or [])")
    for item in result:
        _check_member(where, what, item)
    return list(result)


def _check_member(where: str, what: str, item: Any) -> None:
    name = getattr(item, "name", None)
    kind = type(item).__name__
    if not isinstance(name, str) or not name:
        raise PluginError(f"{where} returned a {kind} without a name (give the {what} a "
                          "`name` string attribute)")
    coroutines, methods = _MEMBERS[what]
    for member in coroutines:
        if not inspect.iscoroutinefunction(getattr(item, member, None)):
            raise PluginError(f"{where}: {what} {name!r} ({kind}) needs `async def {member}` "
                              f"(see the {what.capitalize()} contract in docs/plugins.md)")
    for member in methods:
        if not callable(getattr(item, member, None)):
            raise PluginError(f"{where}: {what} {name!r} ({kind}) has no {member}() method "
                              f"(see docs/plugins.md)")
    if what == "sink" and not isinstance(getattr(item, "settings", None), SinkSettings):
        raise PluginError(f"{where}: sink {name!r} ({kind}) needs `settings`, its validated "
                          "config section (a model extending bridge.SinkSettings)")


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
