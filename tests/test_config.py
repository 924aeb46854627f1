"""Settings: the file, the environment and overrides, and messages for bad values."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from strongroom.config import Settings, load_settings
from strongroom.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No STRONGROOM_* variable from the outside; the current folder is empty."""
    for name in list(os.environ):
        if name.startswith("STRONGROOM_"):
            monkeypatch.delenv(name)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def write_config(folder: Path, text: str, name: str = "strongroom.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


SPACE = """
[[spaces]]
name = "docs"
path = "/srv/docs"
users = ["*"]
"""


def config_error(text: str, tmp_path: Path) -> str:
    """Load a file with `text` and return the ConfigError message."""
    path = write_config(tmp_path / "etc", text)
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path))
    return str(caught.value)


# Layers


def test_defaults_need_no_file_and_no_variables(clean_env: Path) -> None:
    settings = load_settings(None)

    assert settings.data_dir == clean_env / "data"
    assert settings.database_url == f"sqlite:///{clean_env}/data/strongroom.db"
    assert (settings.token_ttl_seconds, settings.max_upload_bytes) == (900, 10 * 2**30)
    assert (settings.host, settings.port, settings.log_format) == (
        "127.0.0.1",
        8000,
        "text",
    )
    assert settings.spaces == ()


def test_file_values_are_read(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "etc",
        'data_dir = "/var/lib/sr"\nport = 9001\nlog_format = "json"\n'
        'token_ttl_seconds = 60\nmax_upload_bytes = 1024\nhost = "0.0.0.0"\n',
    )

    settings = load_settings(str(path))

    assert settings.data_dir == Path("/var/lib/sr")
    assert settings.database_url == "sqlite:////var/lib/sr/strongroom.db"
    assert (settings.port, settings.log_format, settings.host) == (
        9001,
        "json",
        "0.0.0.0",
    )
    assert (settings.token_ttl_seconds, settings.max_upload_bytes) == (60, 1024)


def test_variables_override_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path / "etc", "port = 9001\ntoken_ttl_seconds = 60\n")
    monkeypatch.setenv("STRONGROOM_PORT", "9002")

    settings = load_settings(str(path))

    assert (settings.port, settings.token_ttl_seconds) == (9002, 60)


def test_overrides_beat_variables_and_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path / "etc", "port = 9001\n")
    monkeypatch.setenv("STRONGROOM_PORT", "9002")

    settings = load_settings(str(path), {"port": 9003, "host": "::1"})

    assert (settings.port, settings.host) == (9003, "::1")


def test_strongroom_config_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path / "etc", "port = 9001\n")
    monkeypatch.setenv("STRONGROOM_CONFIG", str(path))

    assert load_settings(None).port == 9001


def test_config_argument_wins_over_strongroom_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_env = write_config(tmp_path / "a", "port = 9001\n")
    from_flag = write_config(tmp_path / "b", "port = 9002\n")
    monkeypatch.setenv("STRONGROOM_CONFIG", str(from_env))

    assert load_settings(str(from_flag)).port == 9002


def test_variables_are_not_read_at_import() -> None:
    bad_env = {**os.environ, "STRONGROOM_PORT": "not a port"}

    imported = subprocess.run(
        [sys.executable, "-c", "import strongroom.config, strongroom.cli"],
        env=bad_env,
        capture_output=True,
        check=False,
    )

    assert imported.returncode == 0, imported.stderr


# Paths


def test_relative_data_dir_resolves_against_the_current_folder(
    tmp_path: Path, clean_env: Path
) -> None:
    path = write_config(tmp_path / "etc", 'data_dir = "state/sr"\n')

    assert load_settings(str(path)).data_dir == clean_env / "state" / "sr"


def test_relative_space_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "etc",
        '[[spaces]]\nname = "docs"\npath = "shared/docs"\nusers = ["*"]\n',
    )

    (space,) = load_settings(str(path)).spaces

    assert space.path == tmp_path / "etc" / "shared" / "docs"


def test_space_defaults_are_the_safe_choices(tmp_path: Path) -> None:
    path = write_config(tmp_path / "etc", SPACE)

    (space,) = load_settings(str(path)).spaces

    assert (space.mode, space.symlinks, space.hardlinks) == ("ro", "deny", "deny")
    assert space.users == ("*",)


def test_a_full_space_table_is_read(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "etc",
        '[[spaces]]\nname = "team_2"\npath = "/srv/t"\nmode = "rw"\n'
        'symlinks = "within"\nhardlinks = "allow"\n'
        'users = ["alice", "role:admin", "bob.smith"]\n',
    )

    (space,) = load_settings(str(path)).spaces

    assert (space.name, space.mode, space.symlinks, space.hardlinks) == (
        "team_2",
        "rw",
        "within",
        "allow",
    )
    assert space.users == ("alice", "role:admin", "bob.smith")


# Bad values


def test_a_bad_mode_names_key_value_and_choices(tmp_path: Path) -> None:
    message = config_error(
        SPACE.replace('users = ["*"]', 'users = ["*"]\nmode = "rw+"'), tmp_path
    )

    assert message == "spaces[0].mode = 'rw+' is not accepted; use 'ro' or 'rw'"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            'symlinks = "follow"',
            "spaces[0].symlinks = 'follow' is not accepted; use 'deny' or 'within'",
        ),
        (
            'hardlinks = "yes"',
            "spaces[0].hardlinks = 'yes' is not accepted; use 'deny' or 'allow'",
        ),
        (
            'name = "home"',
            "spaces[0].name = 'home' is not accepted; 'home' is reserved",
        ),
        (
            'name = "Docs"',
            "spaces[0].name = 'Docs' is not accepted; use 1-64 lowercase",
        ),
        ('name = "a/b"', "spaces[0].name = 'a/b' is not accepted; use 1-64 lowercase"),
        ('name = ""', "spaces[0].name = '' is not accepted; use 1-64 lowercase"),
        (f'name = "{"x" * 65}"', "is not accepted; use 1-64 lowercase"),
        ("users = []", "spaces[0].users = [] is not accepted; list at least one"),
        ('users = ["Bob Smith"]', "entry 'Bob Smith' is neither a user name"),
        ('users = ["role:root"]', "entry 'role:root' is neither"),
        ('users = "*"', "spaces[0].users = '*' is not accepted; use a list"),
        ("path = 7", "spaces[0].path = 7 is not accepted; use a folder path"),
        ("colour = 1", "spaces[0].colour is not a setting"),
    ],
    ids=lambda value: value.split(" = ")[0] if " = " in value else None,
)
def test_bad_space_values_name_key_value_and_what_is_accepted(
    tmp_path: Path, line: str, expected: str
) -> None:
    key = line.split(" = ")[0]
    lines = [x for x in SPACE.splitlines() if not x.startswith(f"{key} =")]

    message = config_error("\n".join([*lines, line]), tmp_path)

    assert expected in message


def test_a_missing_space_key_is_named(tmp_path: Path) -> None:
    message = config_error('[[spaces]]\nname = "docs"\nusers = ["*"]\n', tmp_path)

    assert message == "spaces[0].path is missing; use a folder path"


def test_a_duplicate_space_name_names_both_spaces(tmp_path: Path) -> None:
    message = config_error(SPACE + SPACE.replace("/srv/docs", "/srv/other"), tmp_path)

    assert message == (
        "spaces[1].name = 'docs' is not accepted; each space needs its own name; "
        "spaces[0] already uses it"
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("port = 0", "port = 0 is not accepted; use a whole number from 1 to 65535"),
        ("port = 70000", "port = 70000 is not accepted; use a whole number from 1"),
        ('port = "http"', "port = 'http' is not accepted; use a whole number"),
        ("port = true", "port = True is not accepted"),
        ("port = 80.5", "port = 80.5 is not accepted"),
        ("token_ttl_seconds = 0", "token_ttl_seconds = 0 is not accepted; use a whole"),
        ("token_ttl_seconds = 604801", "token_ttl_seconds = 604801 is not accepted"),
        ("max_upload_bytes = 0", "max_upload_bytes = 0 is not accepted; use a whole"),
        (
            'log_format = "xml"',
            "log_format = 'xml' is not accepted; use 'text' or 'json'",
        ),
        ('host = ""', "host = '' is not accepted; use a host name or IP address"),
        (
            'resolver = "fast"',
            "resolver = 'fast' is not accepted; use 'auto', 'openat2'",
        ),
        (
            'database_url = "mysql://x/y"',
            "database_url = 'mysql://x/y' is not accepted",
        ),
        ('database_url = "sqlite:///"', "use sqlite:///PATH or postgresql://"),
        ("spaces = 3", "spaces = 3 is not accepted; use [[spaces]] tables"),
    ],
    ids=lambda value: value if len(value) < 30 else None,
)
def test_bad_scalar_values_name_key_value_and_range(
    tmp_path: Path, line: str, expected: str
) -> None:
    assert expected in config_error(line + "\n", tmp_path)


def test_a_bad_variable_is_reported_by_its_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STRONGROOM_MAX_UPLOAD_BYTES", "lots")

    with pytest.raises(ConfigError, match="max_upload_bytes = 'lots' is not accepted"):
        load_settings(None)


def test_every_bad_value_is_reported_at_once(tmp_path: Path) -> None:
    message = config_error('port = 0\nlog_format = "xml"\n', tmp_path)

    assert "port = 0" in message and "log_format = 'xml'" in message


def test_an_unknown_key_is_named(tmp_path: Path) -> None:
    message = config_error("prot = 8000\n", tmp_path)

    assert message.startswith("'prot' is not a setting; the settings are data_dir, ")


def test_a_private_pydantic_argument_cannot_come_from_the_file(tmp_path: Path) -> None:
    """`_env_file` would make pydantic-settings read another file; it is no key."""
    assert "'_env_file' is not a setting" in config_error(
        '_env_file = "/x"\n', tmp_path
    )


def test_a_database_password_never_appears_in_a_message(tmp_path: Path) -> None:
    message = config_error('database_url = "mysql://user:hunter2@db/x"\n', tmp_path)

    assert "hunter2" not in message and "user:***@db" in message


def test_a_database_password_is_not_in_the_settings_repr(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "etc", 'database_url = "postgresql://u:hunter2@h/d"\n'
    )

    assert "hunter2" not in repr(load_settings(str(path)))


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist; check --config"):
        load_settings(str(tmp_path / "nope.toml"))


def test_a_file_that_is_not_toml_is_reported(tmp_path: Path) -> None:
    assert "is not valid TOML" in config_error("port = = 1\n", tmp_path)


def test_settings_are_immutable() -> None:
    settings = load_settings(None)

    with pytest.raises(ValueError):
        settings.port = 1  # type: ignore[misc]


def test_settings_can_be_built_directly_for_tests(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, port=8123)

    assert settings.database_url == f"sqlite:///{tmp_path}/strongroom.db"


# Spaces never expose the service's own files


def separation_error(tmp_path: Path, space_path: Path, extra: str = "") -> str:
    """Load a config whose one space is `space_path`; return the error message."""
    data = tmp_path / "srv" / "data"
    data.mkdir(parents=True, exist_ok=True)
    text = (f'data_dir = "{data}"\n{extra}\n[[spaces]]\nname = "all"\n'
            f'path = "{space_path}"\nusers = ["*"]\n')
    return config_error(text, tmp_path)


def test_a_space_over_the_data_folder_is_refused(tmp_path: Path) -> None:
    # A reviewer served data_dir's parent to everyone and downloaded the token
    # secret and the database through the space.
    message = separation_error(tmp_path, tmp_path / "srv")

    assert "'all'" in message and "data_dir" in message


def test_a_space_inside_the_data_folder_is_refused(tmp_path: Path) -> None:
    inside = tmp_path / "srv" / "data" / "blobs"
    inside.mkdir(parents=True)

    assert "inside data_dir" in separation_error(tmp_path, inside)


def test_a_space_that_reaches_the_data_folder_through_a_link_is_refused(
    tmp_path: Path,
) -> None:
    (tmp_path / "srv").mkdir()
    (tmp_path / "innocent").symlink_to(tmp_path / "srv")

    assert "data_dir" in separation_error(tmp_path, tmp_path / "innocent")


def test_a_space_over_the_key_or_config_file_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    key_message = separation_error(
        tmp_path, keys, f'token_key_file = "{keys / "jwt.secret"}"')
    # config_error writes the file into tmp_path/etc.
    config_message = separation_error(tmp_path, tmp_path / "etc")

    assert "token_key_file" in key_message
    assert "the config file" in config_message


def test_sibling_folders_are_fine(tmp_path: Path) -> None:
    (tmp_path / "srv" / "data").mkdir(parents=True)
    (tmp_path / "srv" / "docs").mkdir()
    path = write_config(
        tmp_path / "etc",
        f'data_dir = "{tmp_path / "srv" / "data"}"\n[[spaces]]\nname = "docs"\n'
        f'path = "{tmp_path / "srv" / "docs"}"\nusers = ["*"]\n',
    )

    assert load_settings(str(path)).spaces[0].name == "docs"


# Config files and values that are not what they seem


@pytest.mark.parametrize("kind", ["fifo", "device", "huge"])
def test_a_config_file_that_is_not_a_small_regular_file_is_refused(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "strongroom.toml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "huge":
        path.write_text("# " + "x" * (2 << 20) + "\n")
    else:
        path = Path("/dev/zero")
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            load_settings(str(path))
        except BaseException as exc:  # noqa: BLE001 (handed to the test thread)
            outcome.append(exc)
        else:
            outcome.append(None)

    # A FIFO with no writer used to block the command forever.
    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    loader.join(5)
    assert outcome, "loading the config file did not return"
    assert isinstance(outcome[0], ConfigError), outcome
    assert str(path) in str(outcome[0])


@pytest.mark.parametrize(
    "text",
    ['data_dir = ""', 'data_dir = "a\\u0000b"',
     '[[spaces]]\nname = "x"\npath = "/srv/a\\u0000b"\nusers = ["*"]'],
    ids=["empty-data-dir", "nul-data-dir", "nul-space-path"],
)
def test_paths_that_cannot_be_meant_are_refused(tmp_path: Path, text: str) -> None:
    message = config_error(text, tmp_path)

    assert "current folder" in message or "NUL" in message


def test_a_list_variable_that_is_not_json_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STRONGROOM_TRUSTED_PROXIES", "10.0.0.1")

    with pytest.raises(ConfigError, match="trusted_proxies.*JSON"):
        load_settings(None)


def test_a_password_with_at_signs_is_hidden_whole(tmp_path: Path) -> None:
    message = config_error(
        'database_url = "mysql://admin:p@ss/w@rd@db.example/x"', tmp_path)

    assert "p@ss" not in message and "ss/w" not in message and "rd@" not in message
    assert "admin:***@db.example" in message


def test_a_pattern_in_a_message_keeps_its_case(tmp_path: Path) -> None:
    message = config_error('offload_prefix = "/bad prefix"', tmp_path)

    assert "A-Za-z0-9" in message


def test_spaces_from_a_variable_are_refused_not_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Spaces come only from the file; a variable that looks like it sets them
    # must not leave an admin believing it did.
    monkeypatch.setenv("STRONGROOM_SPACES", '[{"name": "x"}]')

    with pytest.raises(ConfigError, match="only as \\[\\[spaces\\]\\] tables"):
        load_settings(None)
