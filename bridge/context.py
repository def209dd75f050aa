"""What the core passes to plugin hooks: the validated config, no globals."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bridge.config import BridgeConfig
from bridge.metrics import Metrics


@dataclass(frozen=True)
class PluginContext:
    """Handed to register_* hooks; a plugin reads only its own section.

    metrics: the bridge's metric families (and its registry), which sources and sinks
    record into; one per bridge, so several bridges in one process never collide.
    """

    config: BridgeConfig
    metrics: Metrics = field(default_factory=Metrics)

    def plugin_config(self, name: str) -> Any:
        """The validated `plugins.<name>` section, or None."""
        return self.config.plugin(name)

    def enabled(self, name: str) -> bool:
        """Whether the config names plugin `name`."""
        return name in self.config.plugins
