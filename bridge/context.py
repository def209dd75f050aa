"""What the core passes to plugin hooks: the validated config, no globals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.config import BridgeConfig


@dataclass(frozen=True)
class PluginContext:
    """Handed to register_* hooks; a plugin reads only its own section."""

    config: BridgeConfig

    def plugin_config(self, name: str) -> Any:
        """The validated `plugins.<name>` section, or None."""
        return self.config.plugin(name)

    def enabled(self, name: str) -> bool:
        """Whether the config names plugin `name`."""
        return name in self.config.plugins
