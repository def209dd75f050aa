"""Load the YAML config, resolve ${VAR}, validate into typed objects; errors name key paths."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bridge.buffer.location import is_postgres, sqlite_path
from bridge.buffer.pgurl import check_url
from bridge.contracts import MOST
from bridge.durations import Duration, format_duration
from bridge.errors import ConfigError
from bridge.limits import Limits, problems
from bridge.logs import SECRET_NAME
from bridge.sizes import Size, format_size

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}")
ADMIN_TOKEN_LONGEST = 4096  # characters the sign-in form takes (bridge/page.py)
MEDIA_ID_LIFE = 7 * 86400.0  # also how long Meta retries an unanswered webhook
HIDDEN = "the value (not shown: it is a secret)"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerConfig(_Section):
    """server: where the webhook and admin endpoints listen."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    admin_token: str | None = None
    timezone: str | None = None
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"

    @field_validator("admin_token")
    @classmethod
    def _admin_token(cls, value: str | None) -> str | None:
        if value is None or value == "":
            # `${BRIDGE_ADMIN_TOKEN:-}` (the sample config) means: no token, loopback only
            return None
        if not value.strip():
            raise ValueError("is only spaces (set a long random token, e.g. from `openssl "
                             "rand -hex 32`, or leave it empty to keep admin loopback-only)")
        if value != value.strip():
            raise ValueError("has spaces around it: HTTP drops them from a header, so no "
                             "client could send it (remove them)")
        if len(value) > ADMIN_TOKEN_LONGEST:
            raise ValueError(f"is longer than {ADMIN_TOKEN_LONGEST} characters (the sign-in "
                             "form takes no more; use a shorter random token)")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        from zoneinfo import ZoneInfo

        if value:
            try:
                ZoneInfo(value)
            except (ValueError, KeyError):
                raise ValueError(f"{value!r} is not a timezone (use an IANA name such as "
                                 "Asia/Kolkata or Europe/Berlin)") from None
        return value or None


class BufferConfig(_Section):
    """buffer: the durable outbox (SQLite file or PostgreSQL), and the media files fetched.

    url: sqlite:///chatbridge.db (the default: the file buffer.path names) or
    postgresql://user:password@host:5432/db (shared by several bridge processes);
    media_path: directory of fetched media (default: media/ beside buffer.path);
    media_max_bytes: largest file fetched (a larger one is a dead letter saying so);
    media_max_total: bytes of media stored in all, media_min_free: free space the media
    disk keeps (a download that would pass either is refused before it writes, a dead
    letter naming the key: media never fills the disk the buffer needs);
    media_retry_base/media_retry_cap/media_max_attempts: backoff of failed fetches.
    """

    url: str | None = None
    path: str = "chatbridge.db"
    retention: Annotated[Duration, Limits(
        MEDIA_ID_LIFE, why_low="Meta retries a webhook for up to 7 days: a message pruned "
        "sooner would be stored and posted again", example="30d")] = 30 * 86400.0
    synchronous: Literal["full", "normal"] = "full"
    media_path: str | None = None
    media_max_bytes: Annotated[Size, Limits(
        64 * 1024, why_low="nearly every photo and document is larger, so would be refused",
        example="100MB", duration=False)] = Field(100 * 1024 * 1024, ge=1)
    media_max_total: Annotated[Size, Limits(
        1024 * 1024, why_low="a few photos would fill it, and every later file be refused",
        example="2GB", duration=False)] = 2 * 1024**3
    media_min_free: Annotated[Size, Limits(
        64 * 1024 * 1024, why_low="the buffer needs room on its disk: SQLite grows its "
        "write-ahead log before each checkpoint, and media could take the last of it and "
        "stop ingest", example="1GB", duration=False)] = 1024**3
    media_retry_base: Annotated[Duration, Limits(
        0.1, 86400.0, why_low="a failed fetch would be retried without pause",
        why_high="a media id lives 7 days: the first retry would use a day of them",
        example="30s")] = 30.0
    media_retry_cap: Annotated[Duration, Limits(
        0.1, 86400.0, why_low="a failed fetch would be retried without pause",
        why_high="a media id lives 7 days: too few tries would fit", example="1h")] = 3600.0
    # 7 days is how long a webhook's media id lives: 1 h apart at the cap, ~170 tries fit
    media_max_attempts: Annotated[int, Limits(
        1, MOST, why_high="past any retry schedule", example="170",
        duration=False)] = Field(170, ge=1)

    def limit_checks(self) -> Iterator[tuple[str, str]]:
        """Rules between keys, checked with the bounds (see bridge/limits.py)."""
        if self.media_max_total < self.media_max_bytes:
            yield ("media_max_total", f"{format_size(self.media_max_total)} is smaller than "
                   f"media_max_bytes ({format_size(self.media_max_bytes)}), the largest file: "
                   "such a file could never be stored (use at least media_max_bytes, e.g. 2GB)")
        if self.media_retry_cap < self.media_retry_base:
            yield ("media_retry_cap", f"{format_duration(self.media_retry_cap)} is shorter "
                   f"than media_retry_base ({format_duration(self.media_retry_base)}), the first "
                   f"delay it caps (use at least {format_duration(self.media_retry_base)}, "
                   "e.g. 1h)")

    @property
    def target(self) -> str:
        """What Buffer.open takes: the PostgreSQL URL, or the SQLite file's path."""
        return self.url if self.url and is_postgres(self.url) else self.path

    @property
    def postgres(self) -> bool:
        return bool(self.url) and is_postgres(self.url)

    @property
    def media_dir(self) -> str:
        """Where fetched media live: media_path, or media/ beside the buffer file."""
        return self.media_path or str(Path(self.path).parent / "media")


class BridgeConfig(_Section):
    """The whole config file; `plugins` holds each enabled plugin's validated section."""

    server: ServerConfig = ServerConfig()
    buffer: BufferConfig = BufferConfig()
    plugins: dict[str, Any] = Field(default_factory=dict)

    def plugin(self, name: str) -> Any:
        """The validated section of plugin `name` (None if it has no section model)."""
        return self.plugins.get(name)


def interpolate(node: Any, path: str = "") -> Any:
    """Replace ${VAR}, ${VAR:-default} and ${VAR:?what to do} in every string of a parsed
    YAML tree. Every unset variable without a default is named in one error line; the
    `:?` form (as in the shell) gives the fix, e.g. what to set or which command to run.
    As in the shell, the two forms with ':' treat a variable set to '' as unset (an
    `export PORT=` left in a .env file), while a bare ${VAR} gives the empty value."""
    missing: list[tuple[str, str, str | None]] = []
    value = _interpolate(node, path, missing)
    if missing:
        raise ConfigError(_unset(missing))
    return value


def _interpolate(node: Any, path: str, missing: list[tuple[str, str, str | None]]) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, _join(path, str(k)), missing) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, f"{path}[{i}]", missing) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match[str]) -> str:
        name, kind, text = match.group(1), match.group(2), match.group(3)
        value = os.environ.get(name)
        if value is not None and (value or not kind):  # as in the shell, ':' takes an
            return value                                # empty value for an unset one
        if kind == ":-":
            return text
        missing.append((path, name, text.strip() or None if kind == ":?" else None))
        return ""

    return _VAR.sub(substitute, node)


def _unset(missing: list[tuple[str, str, str | None]]) -> str:
    """One line naming every unset variable, where it is used, and what to do."""
    names = list(dict.fromkeys(name for _, name, _ in missing))
    paths = ", ".join(dict.fromkeys(path for path, _, _ in missing))
    hints = list(dict.fromkeys(hint for _, _, hint in missing if hint))
    if hints:
        return f"set {_and(names)} ({paths}): {'; '.join(hints)}"
    if len(missing) == 1:
        ((path, name, _),) = missing
        return (f"{path}: environment variable {name} is not set "
                f"(export {name}=..., or write ${{{name}:-default}})")
    return (f"environment variables {_and(names)} are not set ({paths}): export them, "
            "or write ${VAR:-default} in the config")


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


class _Loader(yaml.SafeLoader):
    """YAML as safe_load reads it, but a number written with a leading 0 stays text.

    YAML 1.1 takes `0061234567012` as octal (6617755146): an owners key written as a
    phone number with its international prefix (or a trunk 0) would become another
    number and silently match no chat. YAML 1.2 has no such octal; as text, a setting that
    wants a number still reads it in decimal."""


def _integer(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    text = str(node.value).replace("_", "")
    digits = text.lstrip("+-")
    if len(digits) > 1 and digits.startswith("0") and digits.isdigit():
        return node.value  # as written (YAML 1.1 would read it as octal)
    return yaml.SafeLoader.construct_yaml_int(loader, node)


_Loader.add_constructor("tag:yaml.org,2002:int", _integer)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Parse the file into a mapping, with a clear error for each way it can fail."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file (pass -c PATH)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise ConfigError(f"{path}:{where} not valid YAML ({problem})") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of 5,000 digits
        reason = str(exc).split(";")[0][:120] or type(exc).__name__
        raise ConfigError(f"{path}: a value could not be read ({reason})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def validate(data: dict[str, Any], sections: dict[str, type[BaseModel]],
             base_dir: Path | None = None) -> BridgeConfig:
    """Validate the core sections, then each plugin section with its own model."""
    data = interpolate(data)
    # a section with every key commented out (`server:` alone) reads as null: its defaults
    data = {k: {} if v is None and k in BridgeConfig.model_fields else v
            for k, v in data.items()}
    config = _validated(BridgeConfig, data, "")
    plugins = config.plugins or {}
    if not isinstance(plugins, dict):
        raise ConfigError("plugins: must be a mapping of plugin name to its settings")
    validated: dict[str, Any] = {}
    for name, section in plugins.items():
        model = sections.get(name)
        if model is None:
            if section not in (None, {}):
                raise ConfigError(f"plugins.{name}: this plugin takes no settings (leave it empty)")
            validated[name] = None
            continue
        validated[name] = _validated(model, section or {}, f"plugins.{name}")
    config.plugins = validated
    _check_limits(config)
    _settle_buffer_url(config.buffer, data.get("buffer") or {})
    if base_dir is not None and not Path(config.buffer.path).is_absolute():
        config.buffer.path = str(base_dir / config.buffer.path)
    if (base_dir is not None and config.buffer.media_path
            and not Path(config.buffer.media_path).is_absolute()):
        config.buffer.media_path = str(base_dir / config.buffer.media_path)
    if Path(config.buffer.media_dir).is_file():
        raise ConfigError(f"buffer.media_path: {config.buffer.media_dir} is a file (name a "
                          "directory for fetched media, e.g. media/)")
    if Path(config.buffer.path).is_dir():
        raise ConfigError(f"buffer.path: {config.buffer.path} is a directory (name a file in "
                          f"it, e.g. {Path(config.buffer.path) / 'chatbridge.db'})")
    return config


def _settle_buffer_url(buffer: BufferConfig, given: dict[str, Any]) -> None:
    """buffer.url: sqlite:///FILE sets buffer.path; postgresql://... is kept as it is."""
    url = buffer.url
    if url is None:
        return
    if is_postgres(url):
        check_url(url)  # the same check as `bridge check`'s and `bridge run`'s
        return
    if not url.startswith("sqlite:///"):
        raise ConfigError("buffer.url: use sqlite:///chatbridge.db (a file) or "
                          "postgresql://user:password@host:5432/db (a server)")
    path = sqlite_path(url)
    if "path" in given and given["path"] != path:
        raise ConfigError(f"buffer.url names {path!r} but buffer.path says {given['path']!r}: "
                          "keep one of the two")
    buffer.path = path


def _check_limits(config: BridgeConfig) -> None:
    """Every value within its bounds (bridge/limits.py): the same check for check and run."""
    found = [*problems(config.server, "server"), *problems(config.buffer, "buffer")]
    for name, section in config.plugins.items():
        found.extend(problems(section, f"plugins.{name}"))
    if found:
        raise ConfigError("\n".join(found))


def _validated(model: type[BaseModel], data: Any, prefix: str) -> Any:
    try:
        section = model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe(exc, model, prefix)) from None
    found = list(_bools_read_as_numbers(data, section, prefix))
    if found:
        raise ConfigError("\n".join(found))
    return section


def _bools_read_as_numbers(raw: Any, value: Any, path: str) -> Iterator[str]:
    """`key.path: ...` for each YAML true/false that validation read as a number.

    Pydantic's lax mode reads true as 1 for an int or float key (so `max_attempts: true`
    would mean one try); strict mode would also refuse "8" from ${VAR}. So the validated
    section is walked beside what the file said, wherever a number came from a boolean.
    """
    if isinstance(raw, bool):
        if isinstance(value, int | float) and not isinstance(value, bool):
            yield (f"{path}: {str(raw).lower()} is a yes/no value, not a number (write a "
                   "number, e.g. 8)")
    elif isinstance(value, BaseModel) and isinstance(raw, dict):
        for name in type(value).model_fields:
            if name in raw:
                yield from _bools_read_as_numbers(raw[name], getattr(value, name),
                                                  _join(path, name))
    elif isinstance(value, dict) and isinstance(raw, dict):
        for key, item in value.items():
            if key in raw:
                yield from _bools_read_as_numbers(raw[key], item, _join(path, str(key)))
    elif isinstance(value, list | tuple) and isinstance(raw, list | tuple):
        for index, (given, item) in enumerate(zip(raw, value, strict=False)):
            yield from _bools_read_as_numbers(given, item, f"{path}[{index}]")


def describe(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """One line per problem: `key.path: what is wrong (the fix)`."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        if err.get("input", ...) is None and err["type"] != "missing":
            loc = _key_of(model, loc)  # `key:` with nothing after it, whatever its type
            line = f"{_join(prefix, '.'.join(loc)) or '(top level)'}: {_empty(model, loc)}"
        else:
            path = _join(prefix, ".".join(loc)) or "(top level)"
            line = f"{path}: {_explain(err, model, loc)}"
        if line not in lines:  # a union type names each member: one line is enough
            lines.append(line)
    return "\n".join(lines)


def _key_of(model: type[BaseModel], loc: list[str]) -> list[str]:
    """The config keys of an error's location, without the type names pydantic adds for
    each member of a union (`app_secret.str`, `app_secret.list[str]`)."""
    keys: list[str] = []
    current: type[BaseModel] | None = model
    for part in loc:
        if current is not None and part in current.model_fields:
            keys.append(part)
            sub = current.model_fields[part].annotation
            current = sub if isinstance(sub, type) and issubclass(sub, BaseModel) else None
        elif current is None and (part.isdigit() or not keys):
            keys.append(part)
        else:
            break
    return keys or loc


def _empty(model: type[BaseModel], loc: list[str]) -> str:
    """What to do about a key written with no value (`port:`): YAML reads it as null."""
    field = None
    for part in loc:
        field = model.model_fields.get(part) if model is not None else None
        sub = field.annotation if field else None
        model = sub if isinstance(sub, type) and issubclass(sub, BaseModel) else None
    if field is not None and field.is_required():
        return "is empty (this key is required: write its value after the colon)"
    return "is empty (write a value after the colon, or remove the line to use the default)"


def _secret(loc: list[str]) -> bool:
    """Whether the key is a secret: named like one, as bridge.logs masks them."""
    return any(SECRET_NAME.search(part) for part in loc)


def _explain(err: dict[str, Any], model: type[BaseModel], loc: list[str]) -> str:
    kind, msg, value = err["type"], err["msg"], err.get("input")
    if kind == "missing":
        return "required key is missing (add it to the config file)"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        hint = f"allowed: {', '.join(allowed)}" if allowed else "remove it"
        return f"unknown key (check the spelling; {hint})"
    if kind == "value_error":
        text = msg.removeprefix("Value error, ")
        return _scrub(text, value) if _secret(loc) else text
    shown = HIDDEN if _secret(loc) else _cut(repr(value))
    quotes = " (put it in quotes)" if kind == "string_type" and isinstance(value, int | float) \
        else ""
    return f"{shown} is not valid: {msg}{quotes}"


def _cut(text: str, longest: int = 80) -> str:
    """A shown value cut short: one error line, whatever was written."""
    return text if len(text) <= longest else text[:longest - 3] + "..."


def _scrub(text: str, value: Any) -> str:
    """`text` with every piece of a secret's value masked (a validator may quote it)."""
    pieces = value if isinstance(value, list) else [value]
    for piece in sorted((str(p) for p in pieces if p is not None and len(str(p)) >= 4),
                        key=len, reverse=True):
        text = text.replace(piece, "***")
    return text


def _allowed_keys(model: type[BaseModel], loc: list[str]) -> list[str]:
    for part in loc:
        field = model.model_fields.get(part)
        sub = field.annotation if field else None
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            return []
        model = sub
    return sorted(model.model_fields)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix and key else prefix or key
