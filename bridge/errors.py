"""Domain errors; the CLI turns each into a one-line message and a non-zero exit."""


class BridgeError(Exception):
    """Base for errors shown to the person running the bridge."""


class ConfigError(BridgeError):
    """The config file is invalid; the message names the key path and the fix."""


class PluginError(BridgeError):
    """A plugin is missing, duplicated or broken; seen at startup."""


class SchemaError(BridgeError):
    """The buffer database was written by a newer Chatbridge than this one."""


class BufferUnavailable(BridgeError):
    """The buffer file cannot be opened or written (the message says which file and why)."""


class BufferClosed(BridgeError):
    """The buffer is not open (startup not finished, or shutting down)."""


class LeaseLost(BridgeError):
    """A batch's lease expired and another drain took it; the result was not recorded."""


class ListenError(BridgeError):
    """`bridge run` cannot listen on its address (a busy port, no permission)."""
