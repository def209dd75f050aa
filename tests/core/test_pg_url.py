"""A PostgreSQL buffer URL (issue 25, point 7): every form of password is kept out of what
the bridge prints (`bridge check`, errors, logs), and a schema name is checked by one
function, so config validation, `bridge check` and `bridge run` refuse the same names the
same way, before anything is created on the server."""

from __future__ import annotations

import logging
import subprocess
import sys

import asyncpg
import pytest

from bridge.buffer import Buffer
from bridge.buffer.pgurl import SCHEMA_PATTERN, redact, url_problem
from bridge.errors import BufferUnavailable, ConfigError
from bridge.logs import TextFormatter, register_secrets
from tests.backends import POSTGRES, needs_postgres

SECRET = "Hunter2-s3cret"
# every way a URL can carry a password (asyncpg reads them all)
FORMS = {
    "userinfo": f"postgresql://bridge:{SECRET}@{{host}}/db",
    "?password=": f"postgresql://bridge@{{host}}/db?password={SECRET}",
    "&password=": f"postgresql://bridge@{{host}}/db?sslmode=disable&password={SECRET}",
    "sslpassword": f"postgresql://bridge@{{host}}/db?sslpassword={SECRET}&sslmode=disable",
    "encoded name": f"postgresql://bridge@{{host}}/db?pass%77ord={SECRET}",
    "both": f"postgresql://bridge:{SECRET}@{{host}}/db?password={SECRET}x",
}
BAD_SCHEMAS = ['a"b', "MixedCase", "9lives", "with-dash", "x" * 64, "", "a b"]


def bridge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def config_file(tmp_path, url: str):
    path = tmp_path / "config.yaml"
    path.write_text(f"buffer:\n  url: '{url}'\n  path: {tmp_path / 'b.db'}\n")
    return path


def with_schema(base: str, schema: str) -> str:
    from urllib.parse import quote

    return f"{base}{'&' if '?' in base else '?'}schema={quote(schema)}"


# -- redaction ------------------------------------------------------------------------------

@pytest.mark.parametrize("form", FORMS)
def test_redact_masks_every_form_of_password(form):
    url = FORMS[form].format(host="db.internal:5432")
    shown = redact(url)
    assert SECRET not in shown and "***" in shown
    assert "db.internal:5432/db" in shown and shown.startswith("postgresql://bridge")


def test_redact_leaves_the_rest_of_the_url_as_it_was():
    url = "postgresql://bridge@h1:5432,h2:5433/db?sslmode=require&schema=crm&application_name=x"
    assert redact(url) == url


@pytest.mark.parametrize("form", FORMS)
def test_check_never_prints_the_password_when_the_server_is_out_of_reach(tmp_path, form):
    done = bridge("check", "-c", str(config_file(tmp_path, FORMS[form].format(
        host="127.0.0.1:1"))))
    assert done.returncode == 1
    assert "cannot connect" in done.stderr
    assert SECRET not in done.stdout + done.stderr


@needs_postgres
@pytest.mark.parametrize("form", ["?password=", "&password=", "sslpassword", "encoded name"])
def test_check_never_prints_the_password_of_a_server_it_reached(tmp_path, form):
    from urllib.parse import urlsplit

    server = urlsplit(POSTGRES)  # trust authentication here: any password is accepted
    url = FORMS[form].format(host=f"{server.hostname}:{server.port or 5432}")
    url = url.replace("bridge", server.username or "postgres", 1).replace("/db", server.path)
    done = bridge("check", "-c", str(config_file(tmp_path, url)))
    assert done.returncode == 0, done.stderr
    assert "buffer OK: postgresql://" in done.stdout
    assert SECRET not in done.stdout + done.stderr


@pytest.mark.parametrize("form", FORMS)
async def test_an_unreachable_server_error_names_the_url_without_its_password(form):
    with pytest.raises(BufferUnavailable) as caught:
        await Buffer.open(FORMS[form].format(host="127.0.0.1:1"))
    text = str(caught.value)
    assert text.startswith("buffer.url postgresql://") and "\n" not in text
    assert SECRET not in text


@pytest.mark.parametrize("form", FORMS)
def test_log_lines_never_carry_the_password(form):
    url = FORMS[form].format(host="db.internal:5432")
    from bridge.buffer.pgurl import secrets_of

    register_secrets(secrets_of(url))  # as `bridge run` does with its buffer.url
    record = logging.LogRecord("bridge", logging.WARNING, __file__, 1, "lost %s: %s", (
        url, f"the server said: {SECRET} is wrong"), None)
    assert SECRET not in TextFormatter().format(record)


def test_logs_mask_a_userinfo_password_even_when_nobody_registered_it():
    record = logging.LogRecord("bridge", logging.WARNING, __file__, 1, "lost %s", (
        "postgresql://bridge:Unregistered-pw9@db:5432/x",), None)
    line = TextFormatter().format(record)
    assert "Unregistered-pw9" not in line and "postgresql://bridge:***@db:5432/x" in line


# -- the schema name ------------------------------------------------------------------------

@pytest.mark.parametrize("schema", BAD_SCHEMAS)
def test_config_refuses_a_schema_name_outside_the_pattern_in_one_line(tmp_path, schema):
    from bridge.cli import load

    url = with_schema("postgresql://bridge@127.0.0.1:1/db", schema)
    with pytest.raises(ConfigError) as caught:
        load(str(config_file(tmp_path, url)))
    text = str(caught.value)
    assert text.startswith("buffer.url: schema ") and "\n" not in text
    assert SCHEMA_PATTERN in text and "e.g. ?schema=" in text
    fix = text.rsplit("?schema=", 1)[1]
    assert url_problem(with_schema("postgresql://bridge@h/db", fix)) is None  # the fix works


@pytest.mark.parametrize("schema", ["chatbridge", "_x", "crm_2", "a" * 63])
def test_a_schema_name_inside_the_pattern_is_accepted(tmp_path, schema):
    from bridge.cli import load

    config = load(str(config_file(tmp_path, with_schema("postgresql://u@h:5432/db", schema))))[0]
    assert config.buffer.postgres


@pytest.mark.parametrize("schema", ['a"b', "MixedCase"])
def test_check_and_run_refuse_a_bad_schema_alike_without_a_traceback(tmp_path, schema):
    url = with_schema("postgresql://bridge@127.0.0.1:1/db", schema)
    config = str(config_file(tmp_path, url))
    checked, ran = bridge("check", "-c", config), bridge("run", "-c", config)
    for done in (checked, ran):
        assert done.returncode == 1
        assert "Traceback" not in done.stderr
        assert done.stderr.strip() == f"Error: {url_problem(url)}"


@pytest.mark.parametrize("schema", ['a"b', "MixedCase"])
async def test_opening_a_bad_schema_says_the_same_before_connecting(schema):
    url = with_schema("postgresql://bridge@127.0.0.1:1/db", schema)
    with pytest.raises(ConfigError) as caught:  # not "cannot connect": nothing was tried
        await Buffer.open(url)
    assert str(caught.value) == url_problem(url)


@needs_postgres
@pytest.mark.parametrize("schema", ["MixedCase", 'a"b'])
async def test_a_bad_schema_leaves_no_stray_schema_on_the_server(schema):
    url = with_schema(POSTGRES, schema)
    with pytest.raises(ConfigError, match="buffer.url: schema"):
        await Buffer.open(url)
    conn = await asyncpg.connect(POSTGRES)
    try:
        found = await conn.fetch("SELECT nspname FROM pg_namespace WHERE lower(nspname) = $1",
                                 schema.lower())
    finally:
        await conn.close()
    assert found == []


def test_the_pattern_is_the_one_the_readme_documents():
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert SCHEMA_PATTERN in readme



@needs_postgres
async def test_a_server_lost_while_running_is_reported_without_the_password():
    from urllib.parse import urlsplit

    from tests.backends import drop_schema, new_schema, postgres_url
    from tests.cluster.test_outage import Proxy, through

    schema = new_schema()
    server = urlsplit(POSTGRES)
    proxy = Proxy(server.hostname, server.port or 5432)
    await proxy.start()
    url = through(postgres_url(schema), proxy.port) + f"&password={SECRET}"
    buffer = await Buffer.open(url)  # trust authentication here: any password is accepted
    try:
        assert SECRET not in buffer.path
        await proxy.cut()
        with pytest.raises(BufferUnavailable) as caught:
            await buffer.heartbeat()
        assert str(caught.value).startswith("buffer.url postgresql://")
        assert SECRET not in str(caught.value)
    finally:
        await buffer.close()
        await drop_schema(schema)


@pytest.mark.parametrize("url", [
    "postgresql:///chatbridge?host=/var/run/postgresql",
    "postgresql:///chatbridge?host=/var/run/postgresql&password=" + SECRET,
    "postgresql:///chatbridge?host=/var/run/postgresql&schema=crm"])
def test_a_url_without_a_host_part_is_shown_and_used_as_written(url):
    """A unix-socket URL (host in ?host=, nothing between '//' and the path) keeps its
    '//' when shown and when handed to the driver (was 'postgresql:/chatbridge?...',
    another URL: a path where the database name was)."""
    from bridge.buffer.pgurl import split_schema

    assert redact(url).startswith("postgresql:///chatbridge?host=/var/run/postgresql")
    assert SECRET not in redact(url)
    assert split_schema(url)[0].startswith("postgresql:///chatbridge?host=")


@pytest.mark.parametrize("char", ["/", "?", "#"])
def test_a_password_holding_a_character_that_ends_the_host_is_refused_unprinted(
        tmp_path, char):
    """A generated password with '/', '?' or '#' not percent-encoded ends the URL's host
    part early: the driver reads the password as the port. `bridge check` printed the whole
    URL, password and all ('cannot connect (invalid literal for int()...: ...)'). Now it is
    refused before connecting, saying to percent-encode it, and never shown."""
    url = f"postgresql://bridge:{SECRET}{char}xY9@127.0.0.1:1/db"
    assert SECRET not in redact(url)
    problem = url_problem(url)
    assert problem is not None and "percent-encode" in problem and SECRET not in problem
    done = bridge("check", "-c", str(config_file(tmp_path, url)))
    assert done.returncode == 1 and "percent-encode" in done.stderr
    assert SECRET not in done.stdout + done.stderr
