"""Every hook a Chatbridge plugin may implement; each is a synchronous factory."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pluggy import HookimplMarker, HookspecMarker

if TYPE_CHECKING:
    import click
    from pydantic import BaseModel

    from bridge.context import PluginContext
    from bridge.contracts import Filter, Sink, Source

hookspec = HookspecMarker("bridge")
hookimpl = HookimplMarker("bridge")


@hookspec
def register_config_sections() -> dict[str, type[BaseModel]]:
    """Return {plugin name: pydantic model} validating `plugins.<name>` in the config."""


@hookspec
def register_sources(context: PluginContext) -> list[Source]:
    """Return the message sources (webhook receivers) this plugin provides."""


@hookspec
def register_sinks(context: PluginContext) -> list[Sink]:
    """Return the sinks (CRMs) this plugin provides."""


@hookspec
def register_filters(context: PluginContext) -> list[Filter]:
    """Return filters that drop or redact messages before sinks see them."""


@hookspec
def register_commands() -> list[click.Command]:
    """Return click commands or groups added to the `bridge` CLI (e.g. `bridge <plugin> ...`)."""
