"""Config: interpolation, validation, and errors that name the key path and the fix."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bridge.config import interpolate
from bridge.errors import ConfigError
from bridge.plugins import get_plugin_manager, load_config
from tests.helpers import CorePlugin, free_port


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


def test_missing_required_key_names_the_path(pm, write):
    with pytest.raises(ConfigError) as err:
        load(pm, write("plugins:\n  testsource: {}\n"))
    assert str(err.value) == ("plugins.testsource.token: required key is missing "
                              "(add it to the config file)")


def test_unknown_key_names_the_path_and_allowed_keys(pm, write):
    with pytest.raises(ConfigError) as err:
        load(pm, write("server:\n  prot: 80\n"))
    assert str(err.value) == ("server.prot: unknown key (check the spelling; allowed: "
                              "admin_token, host, port, timezone)")


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
