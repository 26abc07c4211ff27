"""Settings: file, environment overrides, and one-line errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from license_server.settings import ENV_ONLY, Settings, SettingsError, load_settings

REPO_SETTINGS = Path(__file__).resolve().parent.parent / "settings.toml"


def test_shipped_settings_file_equals_the_defaults():
    # settings.toml documents every default; drift between the two would mislead operators.
    assert load_settings(REPO_SETTINGS, environ={}) == Settings()


def test_every_setting_is_documented_in_settings_toml():
    text = REPO_SETTINGS.read_text()
    for name in Settings.model_fields:
        documented = f"LICENSE_SERVER_{name.upper()}" if name in ENV_ONLY else name
        assert documented in text, f"{name} is not documented in settings.toml"


def test_file_values_are_read(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('port = 9000\nhost = "0.0.0.0"\n')
    settings = load_settings(path, environ={})
    assert (settings.host, settings.port) == ("0.0.0.0", 9000)


def test_environment_overrides_the_file(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("port = 9000\n")
    environ = {
        "LICENSE_SERVER_PORT": "9100",
        "LICENSE_SERVER_HOST": "::1",
        "LICENSE_SERVER_DATABASE": "/tmp/x.db",
        "LICENSE_SERVER_KEYS_DIR": "/tmp/k",
    }
    settings = load_settings(path, environ=environ)
    assert settings.port == 9100
    assert settings.host == "::1"
    assert settings.database == Path("/tmp/x.db")
    assert settings.keys_dir == Path("/tmp/k")


def test_secrets_come_from_the_environment_only(tmp_path):
    settings = load_settings(None, environ={"LICENSE_SERVER_DATA_KEY": "abc"})
    assert settings.data_key.get_secret_value() == "abc"
    assert "abc" not in repr(settings)
    path = tmp_path / "s.toml"
    path.write_text('data_key = "abc"\n')
    with pytest.raises(SettingsError, match="LICENSE_SERVER_DATA_KEY"):
        load_settings(path, environ={})


@pytest.mark.parametrize(
    ("content", "environ", "expected"),
    [
        ("port = 99999\n", {}, r"setting 'port'.*65535.*s\.toml"),
        ("", {"LICENSE_SERVER_PORT": "eighty"}, r"setting 'port'.*LICENSE_SERVER_PORT"),
        ("prot = 8080\n", {}, r"unknown setting 'prot'"),
        ('log_level = "LOUD"\n', {}, r"setting 'log_level'"),
        ("", {"LICENSE_SERVER_EVENT_LOOP": "tokio"}, r"setting 'event_loop'.*EVENT_LOOP"),
        ("port = \n", {}, r"not valid TOML"),
    ],
)
def test_bad_values_give_one_line_naming_the_setting(tmp_path, content, environ, expected):
    path = tmp_path / "s.toml"
    path.write_text(content)
    with pytest.raises(SettingsError, match=expected) as info:
        load_settings(path, environ=environ)
    assert "\n" not in str(info.value)


def test_an_explicit_missing_file_is_an_error(tmp_path):
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


# -- the database and Redis URLs (issue #17) ---------------------------------------------------


def test_a_postgresql_url_selects_postgresql_and_never_prints_its_password():
    settings = load_settings(
        path=None,
        environ={"LICENSE_SERVER_DATABASE": "postgresql://app:hunter2@db.internal:5432/lic"},
    )
    assert settings.database_location() == "postgresql://app:hunter2@db.internal:5432/lic"
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.database)
    from license_server.db.database import open_database

    db = open_database(settings.database_location())
    assert db.backend == "postgresql"
    assert db.describe() == "PostgreSQL db.internal:5432/lic"


@pytest.mark.parametrize(
    "url", ["mysql://root:hunter2@db/lic", "sqlite:///tmp/x.db", "postgresql://"]
)
def test_a_url_the_server_does_not_serve_is_one_line_without_the_value(url):
    with pytest.raises(SettingsError) as caught:
        load_settings(path=None, environ={"LICENSE_SERVER_DATABASE": url})
    message = str(caught.value)
    assert message.startswith("setting 'database':") and "\n" not in message
    assert "hunter2" not in message


def test_a_file_path_stays_sqlite():
    settings = load_settings(path=None, environ={"LICENSE_SERVER_DATABASE": "data/x.db"})
    assert settings.database_location() == Path("data/x.db")


def test_rate_limits_follow_redis_url_unless_set_on_their_own():
    followed = load_settings(  # with the shipped settings.toml, which says memory://
        REPO_SETTINGS, environ={"LICENSE_SERVER_REDIS_URL": "redis://:pw@127.0.0.1:6379/0"}
    )
    assert followed.rate_limit.storage_uri == "async+redis://:pw@127.0.0.1:6379/0"
    assert "pw@" not in repr(followed.redis_url)
    own = load_settings(
        path=None,
        environ={
            "LICENSE_SERVER_REDIS_URL": "redis://127.0.0.1:6379/0",
            "LICENSE_SERVER_RATE_LIMIT_STORAGE_URI": "async+redis://10.0.0.9:6379/1",
        },
    )
    assert own.rate_limit.storage_uri == "async+redis://10.0.0.9:6379/1"
    with pytest.raises(SettingsError) as caught:
        load_settings(path=None, environ={"LICENSE_SERVER_REDIS_URL": "http://user:pw@x"})
    assert "pw@" not in str(caught.value)
