"""Config: interpolation, validation, and errors that name the key path and the fix."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bridge.config import interpolate
from bridge.errors import ConfigError
from bridge.plugins import get_plugin_manager, load_config
from tests.helpers import CorePlugin, free_port
from tests.processes import failed_start


@pytest.fixture
def write(tmp_path):
    def write(text: str):
        path = tmp_path / "config.yaml"
        path.write_text(text)
        return path
    return write


def load(pm, path):
    pm.register(CorePlugin(), name="testsource")
    return load_config(path, pm)


def bridge_check(path):
    return subprocess.run([sys.executable, "-m", "bridge", "check", "-c", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_defaults_and_plugin_section(pm, write, tmp_path):
    config = load(pm, write("plugins:\n  testsource:\n    token: abc\n"))
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.buffer.retention == 30 * 86400
    assert config.buffer.path == str(tmp_path / "chatbridge.db")  # relative to the file
    assert config.plugin("testsource").token == "abc"


def test_env_interpolation_with_and_without_default(monkeypatch):
    monkeypatch.setenv("WA_SECRET", "s3cret")
    monkeypatch.delenv("UNSET_VAR", raising=False)
    data = {"a": "${WA_SECRET}", "b": ["x-${UNSET_VAR:-fallback}"], "c": 5}
    assert interpolate(data) == {"a": "s3cret", "b": ["x-fallback"], "c": 5}
    # set but empty: the ':' forms read it as unset, as the shell does; ${VAR} keeps ''
    monkeypatch.setenv("UNSET_VAR", "")
    assert interpolate({"b": "${UNSET_VAR:-fallback}", "e": "${UNSET_VAR}"}) == {
        "b": "fallback", "e": ""}
    with pytest.raises(ConfigError, match=r"^set UNSET_VAR \(k\): run `bridge demo`$"):
        interpolate({"k": "${UNSET_VAR:?run `bridge demo`}"})


def test_missing_required_key_names_the_path(pm, write):
    with pytest.raises(ConfigError) as err:
        load(pm, write("plugins:\n  testsource: {}\n"))
    assert str(err.value) == ("plugins.testsource.token: required key is missing "
                              "(add it to the config file)")


def test_unknown_key_names_the_path_and_allowed_keys(pm, write):
    with pytest.raises(ConfigError) as err:
        load(pm, write("server:\n  prot: 80\n"))
    assert str(err.value) == ("server.prot: unknown key (check the spelling; allowed: "
                              "admin_token, event_loop, host, port, timezone)")


def test_bad_duration_names_the_path_and_the_forms(pm, write):
    with pytest.raises(ConfigError) as err:
        load(pm, write('buffer:\n  retention: "3 minutes"\n'))
    assert str(err.value) == ('buffer.retention: "3 minutes" is not a duration '
                              "(use 180, 180s, 3m or 1h)")


def test_unset_variable_names_the_path_and_variable(pm, write, monkeypatch):
    monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
    with pytest.raises(ConfigError) as err:
        load(pm, write("plugins:\n  testsource:\n    token: ${NO_SUCH_TOKEN}\n"))
    assert str(err.value).startswith(
        "plugins.testsource.token: environment variable NO_SUCH_TOKEN is not set")


def test_unknown_plugin_is_an_error(pm, write):
    with pytest.raises(Exception, match="no installed plugin is called 'nope'"):
        load(pm, write("plugins:\n  nope: {}\n"))


def test_invalid_yaml_says_where(pm, write):
    with pytest.raises(ConfigError, match="line 2: not valid YAML .*'\\\\t'"):
        load(pm, write("server:\n\tport: 80\n"))


@pytest.mark.parametrize(("text", "expected"), [
    ("server:\n  prot: 80\n", "server.prot: unknown key"),
    ('buffer:\n  retention: "3 minutes"\n', 'buffer.retention: "3 minutes" is not a duration'),
    ("server:\n  admin_token: ${CHATBRIDGE_TEST_UNSET}\n",
     "server.admin_token: environment variable CHATBRIDGE_TEST_UNSET is not set"),
    ("server:\n  port: 99999\n", "server.port: 99999 is not valid"),
])
def test_bridge_check_exits_non_zero_with_the_key_path(write, text, expected):
    result = bridge_check(write(text))
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_bridge_check_accepts_a_valid_config(write, tmp_path):
    result = bridge_check(write(f"buffer:\n  path: {tmp_path}/b.db\n"))
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout


WHATSAPP = "plugins:\n  whatsapp:\n    verify_token: verify\n    app_secret: secret\n"
LEADSQUARED = "plugins:\n  leadsquared:\n    access_key: ak\n    secret_key: sk\n"


def load_installed(path):
    """load_config with the installed plugins (whatsapp, leadsquared) loaded."""
    return load_config(path, get_plugin_manager())


@pytest.mark.parametrize(("text", "secret", "key"), [
    ("server:\n  admin_token: 98765432123\n", "98765432123", "server.admin_token"),
    ("plugins:\n  whatsapp:\n    verify_token: 55555555\n    app_secret: s\n", "55555555",
     "plugins.whatsapp.verify_token"),
    ("plugins:\n  whatsapp:\n    verify_token: v\n    app_secret: [12345678901]\n",
     "12345678901", "plugins.whatsapp.app_secret"),
    ("plugins:\n  leadsquared:\n    access_key: 11112222333\n    secret_key: s\n",
     "11112222333", "plugins.leadsquared.access_key"),
    ("plugins:\n  leadsquared:\n    access_key: a\n    secret_key: [hunter2-secret]\n",
     "hunter2-secret", "plugins.leadsquared.secret_key"),
], ids=["admin_token", "verify_token", "app_secret list", "access_key", "secret_key list"])
def test_a_bad_secret_is_named_but_its_value_never_shown(write, text, secret, key):
    with pytest.raises(ConfigError) as err:
        load_installed(write(text))
    assert key in str(err.value) and secret not in str(err.value)
    assert "not shown" in str(err.value)


def test_bridge_check_never_prints_a_secret_value(write):
    result = bridge_check(write("server:\n  admin_token: 98765432123\n"))
    assert result.returncode == 1
    assert "server.admin_token:" in result.stderr and "put it in quotes" in result.stderr
    assert "98765432123" not in result.stderr + result.stdout


def test_a_plain_setting_still_shows_its_bad_value(write):
    with pytest.raises(ConfigError, match="server.port: 99999 is not valid"):
        load_installed(write("server:\n  port: 99999\n"))


@pytest.mark.parametrize("interval", ["0", "0s", "0.01", "50ms"])
def test_a_sync_interval_that_would_spin_is_refused(write, interval):
    with pytest.raises(ConfigError) as err:
        load_installed(write(f"{LEADSQUARED}    sync_interval: {interval}\n"))
    assert str(err.value).startswith("plugins.leadsquared.sync_interval: ")
    assert "too short" in str(err.value) and "at least 100ms" in str(err.value)


def test_the_shortest_sync_interval_is_accepted(write):
    config = load_installed(write(f"{LEADSQUARED}    sync_interval: 100ms\n"))
    assert config.plugin("leadsquared").sync_interval == 0.1


@pytest.mark.parametrize("route", ["/status", "/", "/login", "/healthz", "/dead-letters/requeue"])
def test_a_webhook_path_on_a_core_route_is_refused_with_its_key_path(write, tmp_path, route):
    from bridge.app import create_app

    pm = get_plugin_manager()
    config = load_config(write(f"buffer: {{path: {tmp_path}/b.db}}\n{WHATSAPP}"
                               f"    path: {route}\n"), pm)
    with pytest.raises(ConfigError) as err:
        create_app(config, pm)
    assert str(err.value).startswith(f"plugins.whatsapp.path: {route!r} is a route of the "
                                     "bridge itself")


@pytest.mark.parametrize("command", ["run", "check"])
def test_bridge_refuses_a_webhook_path_that_shadows_status(write, tmp_path, command):
    path = write(f"server: {{port: {free_port()}}}\nbuffer: {{path: {tmp_path}/b.db}}\n"
                 f"{WHATSAPP}    path: /status\n")
    result = subprocess.run([sys.executable, "-m", "bridge", command, "-c", str(path)],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 1
    assert "plugins.whatsapp.path: '/status' is a route of the bridge itself" in result.stderr
    assert "Traceback" not in result.stderr and "listening" not in result.stdout
    assert "config OK" not in result.stdout


@pytest.mark.parametrize(("value", "expected"), [("0", "greater than 0"),
                                                  ("3600", "less than or equal to 300")])
def test_a_body_timeout_that_could_never_or_always_wait_is_refused(write, value, expected):
    with pytest.raises(ConfigError) as err:
        load_installed(write(f"{WHATSAPP}    body_timeout: {value}\n"))
    assert str(err.value).startswith("plugins.whatsapp.body_timeout: ")
    assert expected in str(err.value)


# -- values that cannot work: bounds checked by `bridge check` and `bridge run` alike ----------

LSQ_ = LEADSQUARED + "    "
CANNOT_WORK = [  # (config text, key path, a phrase of the fix)
    (LSQ_ + "deliver_timeout: 0\n", "plugins.leadsquared.deliver_timeout", "at least 1s"),
    (LSQ_ + "deliver_timeout: 500ms\n", "plugins.leadsquared.deliver_timeout", "at least 1s"),
    (LSQ_ + "deliver_timeout: 2h\n", "plugins.leadsquared.deliver_timeout", "at most 1h"),
    (LSQ_ + "timeout: 0\n", "plugins.leadsquared.timeout", "at least 1s"),
    (LSQ_ + "timeout: 10m\n", "plugins.leadsquared.timeout", "at most 5m"),
    (LSQ_ + "sync_interval: 2d\n", "plugins.leadsquared.sync_interval", "at most 1d"),
    (LSQ_ + "lease: 0\n", "plugins.leadsquared.lease", "at least 1s"),
    (LSQ_ + "lease: 1m\n    deliver_timeout: 1m\n", "plugins.leadsquared.lease",
     "use at least 61s"),
    (LSQ_ + "retry_base: 0\n", "plugins.leadsquared.retry_base", "at least 10ms"),
    (LSQ_ + "retry_base: 1m\n    retry_cap: 30s\n", "plugins.leadsquared.retry_cap",
     "use at least 1m"),
    (LSQ_ + "retry_cap: 30d\n", "plugins.leadsquared.retry_cap", "at most 7d"),
    (LSQ_ + "batch_limit: 10000000000000000000000\n", "plugins.leadsquared.batch_limit",
     "at most 100,000"),
    (LSQ_ + "max_attempts: 10000000000000000000000\n", "plugins.leadsquared.max_attempts",
     "at most 100,000"),
    (LSQ_ + "backfill_days: 5000\n", "plugins.leadsquared.backfill_days", "at most 3,650"),
    (LSQ_ + "backfill_days: .inf\n", "plugins.leadsquared.backfill_days", "at most 3,650"),
    (LSQ_ + "lead_directory_refresh: 0\n", "plugins.leadsquared.lead_directory_refresh",
     "at least 10s"),
    (LSQ_ + "opportunity_cache: 2d\n", "plugins.leadsquared.opportunity_cache", "at most 1d"),
    (LSQ_ + "unknown_recheck: 30d\n", "plugins.leadsquared.unknown_recheck", "at most 1d"),
    (LSQ_ + "deliver_timeout: .inf\n", "plugins.leadsquared.deliver_timeout",
     "not a duration"),
    (LSQ_ + "deliver_timeout: .nan\n", "plugins.leadsquared.deliver_timeout",
     "not a duration"),
    (LSQ_ + "retry_cap: 10000000000000000000000000000000000000000\n",
     "plugins.leadsquared.retry_cap", "at most 3650d"),
    ("buffer:\n  retention: 1d\n", "buffer.retention", "at least 7d"),
    ("buffer:\n  media_max_bytes: 1000\n", "buffer.media_max_bytes", "at least 65,536"),
    ("buffer:\n  media_retry_base: 0\n", "buffer.media_retry_base", "at least 100ms"),
    ("buffer:\n  media_retry_base: 2h\n  media_retry_cap: 1h\n", "buffer.media_retry_cap",
     "use at least 2h"),
    ("buffer:\n  media_max_attempts: 1000000000000\n", "buffer.media_max_attempts",
     "at most 100,000"),
    (WHATSAPP + "    body_timeout: 0.5\n", "plugins.whatsapp.body_timeout", "at least 1"),
    (WHATSAPP + "    media_timeout: 0.01\n", "plugins.whatsapp.media_timeout", "at least 1"),
    ("server:\n  admin_token: '   '\n", "server.admin_token", "loopback-only"),
    ("server:\n  admin_token: ' padded-token '\n", "server.admin_token", "remove them"),
]


@pytest.mark.parametrize(("text", "key", "fix"), CANNOT_WORK,
                         ids=[f"{key.rsplit('.', 1)[1]}-{n}" for n, (_, key, _) in
                              enumerate(CANNOT_WORK)])
def test_a_value_that_cannot_work_is_refused_naming_its_key_and_the_fix(write, text, key, fix):
    with pytest.raises(ConfigError) as err:
        load_installed(write(text))
    message = str(err.value)
    assert message.startswith(f"{key}: ") and fix in message, message
    assert "\n" not in message and len(message) < 300, message


@pytest.mark.parametrize("command", ["check", "run"])
def test_check_and_run_refuse_the_reported_zero_timeouts_alike(write, tmp_path, command):
    """deliver_timeout: 0 dead-lettered every message and timeout: 0 delivered nothing,
    both after `bridge check` said OK."""
    path = write(f"server: {{port: {free_port()}}}\nbuffer: {{path: {tmp_path}/b.db}}\n"
                 f"{LSQ_}deliver_timeout: 0\n    timeout: 0\n")
    result = subprocess.run([sys.executable, "-m", "bridge", command, "-c", str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1, result.stdout
    assert "plugins.leadsquared.deliver_timeout: 0s is too short" in result.stderr
    assert "plugins.leadsquared.timeout: 0s is too short" in result.stderr
    assert "Traceback" not in result.stderr and "config OK" not in result.stdout
    assert "listening" not in result.stdout and not (tmp_path / "b.db").exists()


def test_the_bounds_themselves_are_accepted(write, tmp_path):
    shortest = (f"buffer:\n  path: {tmp_path}/b.db\n  retention: 7d\n  media_max_bytes: 65536\n"
                "  media_retry_base: 100ms\n  media_retry_cap: 100ms\n"
                f"{LSQ_}deliver_timeout: 1s\n    lease: 2s\n    timeout: 1s\n"
                "    retry_base: 10ms\n    retry_cap: 10ms\n    sync_interval: 100ms\n"
                "    lead_directory_refresh: 10s\n    opportunity_cache: 0\n"
                "    unknown_recheck: 0\n  whatsapp: {verify_token: v, app_secret: s, "
                "body_timeout: 1, media_timeout: 1}\n")
    config = load_installed(write(shortest))
    assert config.plugin("leadsquared").deliver_timeout == 1.0
    longest = (f"{LSQ_}deliver_timeout: 1h\n    lease: 1d\n    timeout: 5m\n"
               "    sync_interval: 1d\n    batch_limit: 100000\n    max_attempts: 100000\n"
               "    backfill_days: 3650\n    retry_base: 1d\n    retry_cap: 7d\n")
    assert load_installed(write(longest)).plugin("leadsquared").lease == 86400.0


def test_every_number_in_every_config_section_has_a_floor():
    """A duration or count added later without a minimum fails here (0 is where most of
    them stop working): each has Limits with a low bound, or a ge/gt constraint."""
    import annotated_types

    from bridge.config import BufferConfig, ServerConfig
    from bridge.contracts import SinkSettings
    from bridge.limits import Limits
    from plugins.leadsquared.config import LeadSquaredConfig, OpportunityFilter
    from plugins.whatsapp.config import WhatsAppConfig

    missing = []
    for model in (ServerConfig, BufferConfig, SinkSettings, LeadSquaredConfig,
                  OpportunityFilter, WhatsAppConfig):
        for name, field in model.model_fields.items():
            if field.annotation not in (int, float, int | None, float | None):
                continue
            floors = [m for m in field.metadata if isinstance(m, Limits) and m.low is not None
                      or isinstance(m, annotated_types.Ge | annotated_types.Gt)]
            if not floors:
                missing.append(f"{model.__name__}.{name}")
    assert missing == []


def test_an_empty_admin_token_means_none_as_the_sample_config_writes_it(tmp_path):
    """`admin_token: ${BRIDGE_ADMIN_TOKEN:-}` with the variable unset: loopback-only admin."""
    path = tmp_path / "config.yaml"
    path.write_text("server:\n  admin_token: ''\n")
    assert load_installed(path).server.admin_token is None


@pytest.mark.parametrize(("text", "key"), [
    (LEADSQUARED + "    max_attempts: true\n", "plugins.leadsquared.max_attempts"),
    (LEADSQUARED + "    backfill_days: false\n", "plugins.leadsquared.backfill_days"),
    (LEADSQUARED + "    opportunities: {types: [true]}\n", "plugins.leadsquared.opportunities"),
    (LEADSQUARED + "    backfill_share: true\n", "plugins.leadsquared.backfill_share"),
    ("server:\n  port: true\n", "server.port"),
    ("buffer:\n  media_max_bytes: true\n", "buffer.media_max_bytes"),
], ids=["max_attempts", "backfill_days", "opportunity types", "float", "port", "buffer"])
def test_a_yes_no_value_is_never_read_as_a_number(write, text, key):
    """YAML's true is a boolean: pydantic would read it as 1 (max_attempts: true = one try)."""
    with pytest.raises(ConfigError) as err:
        load_installed(write(text))
    said = str(err.value)  # sizes (media_max_bytes: 500MB) say "not a size"
    assert key in said and ("not a number" in said or "not a size" in said), said


def test_bridge_check_refuses_a_boolean_for_a_count(write):
    result = bridge_check(write(LEADSQUARED + "    max_attempts: true\n"))
    assert result.returncode == 1
    assert "plugins.leadsquared.max_attempts: true is a yes/no value, not a number" \
        in result.stderr


@pytest.mark.parametrize("key", ["access_key", "secret_key"])
@pytest.mark.parametrize("value", ["'   '", "'\\t \\n'"])
def test_a_leadsquared_key_of_only_spaces_is_refused_naming_it(write, key, value):
    keys = {"access_key": "ak", "secret_key": "sk", key: value}
    text = "plugins:\n  leadsquared:\n" + "".join(f"    {k}: {v}\n" for k, v in keys.items())
    text = text.replace("'\\t \\n'", '"\\t \\n"')
    with pytest.raises(ConfigError) as err:
        load_installed(write(text))
    assert f"plugins.leadsquared.{key}: is only spaces" in str(err.value)


WA = "plugins:\n  whatsapp:\n    verify_token: vt\n    app_secret: s\n"


@pytest.mark.parametrize(("text", "line"), [
    ("plugins:\n  whatsapp:\n    verify_token: vt\n    app_secret:\n",
     "plugins.whatsapp.app_secret: is empty (this key is required: write its value after "
     "the colon)"),
    ("server:\n  port:\n" + WA,
     "server.port: is empty (write a value after the colon, or remove the line to use the "
     "default)"),
    (WA + "  leadsquared:\n    access_key: a\n    secret_key: b\n    sync_interval:\n",
     "plugins.leadsquared.sync_interval: is empty (write a value after the colon, or remove "
     "the line to use the default)"),
])
def test_a_key_left_empty_is_one_line_naming_it_and_the_fix(tmp_path, text, line):
    """`key:` with nothing after it (YAML null) said `None is not valid: Input should be a
    valid integer`, `"None" is not a duration`, or for app_secret two lines naming pydantic's
    union members (`app_secret.str`, `app_secret.list[str]`) and no fix; `bridge run` must
    refuse it in one line, naming the key and what to write, and start nothing."""
    path = tmp_path / "config.yaml"
    path.write_text(f"buffer:\n  path: {tmp_path}/b.db\n" + text)
    assert failed_start(path) == f"Error: {line}"
    assert not (tmp_path / "b.db").exists()


def test_a_section_with_every_key_commented_out_takes_its_defaults(tmp_path):
    """`server:` alone (its keys commented out) is YAML null: it was refused as `None is not
    valid: Input should be a valid dictionary or instance of ServerConfig`."""
    path = tmp_path / "config.yaml"
    path.write_text(f"server:\n  # port: 9000\nbuffer:\n  path: {tmp_path}/b.db\n" + WA)
    result = bridge_check(path)
    assert result.returncode == 0 and "config OK" in result.stdout, result.stderr
