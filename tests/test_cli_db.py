"""`strongroom db upgrade` and `db current`, and `db_auto_upgrade` at start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect

from strongroom.api.app import create_app
from strongroom.cli import main
from strongroom.config import load_settings
from strongroom.storage._engine import create_store_engine
from strongroom.storage._schema import metadata
from strongroom.storage.migrate import SchemaVersionError, head_revision

STRONGROOM = Path(sys.executable).with_name("strongroom")
# `serve` must stop before it listens; if it starts instead, this ends the test.
SERVE_TIMEOUT_SECONDS = 60.0


@pytest.fixture(autouse=True)
def no_strongroom_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sets the STRONGROOM_* variables it means."""
    for name in list(os.environ):
        if name.startswith("STRONGROOM_"):
            monkeypatch.delenv(name)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def config_file(tmp_path: Path, data_dir: Path) -> Path:
    path = tmp_path / "strongroom.toml"
    path.write_text(f'data_dir = "{data_dir}"\n')
    return path


@pytest.fixture
def database_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir}/strongroom.db"


@pytest.fixture
def made_before_migrations(data_dir: Path, database_url: str) -> Iterator[None]:
    """The database as a build before migrations left it (create_all, no stamp)."""
    data_dir.mkdir()
    engine = create_store_engine(database_url)
    metadata.create_all(engine)
    engine.dispose()
    yield


def run(
    config_file: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    code = main(["--config", str(config_file), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_db_current_of_a_new_database_says_none_and_exits_1(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(config_file, capsys, "db", "current")

    assert code == 1
    assert out == f"current: none\nhead:    {head_revision()}\n"
    assert "run: strongroom db upgrade" in err


def test_db_upgrade_prints_both_revisions_and_db_current_then_exits_0(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    upgraded = run(config_file, capsys, "db", "upgrade")
    current = run(config_file, capsys, "db", "current")

    head = head_revision()
    assert upgraded == (0, f"before: none\nafter:  {head}\n", "")
    assert current == (0, f"current: {head}\nhead:    {head}\n", "")


def test_db_upgrade_at_head_says_so_and_exits_0(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(config_file, capsys, "db", "upgrade")

    code, out, _ = run(config_file, capsys, "db", "upgrade")

    assert (code, out) == (0, f"before: {head_revision()}\nafter:  {head_revision()}\n")


def test_db_current_and_upgrade_of_a_database_from_a_newer_build_say_so(
    config_file: Path, capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    run(config_file, capsys, "db", "upgrade")
    engine = create_store_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    engine.dispose()

    current = run(config_file, capsys, "db", "current")
    upgraded = run(config_file, capsys, "db", "upgrade")

    assert current[:2] == (1, f"current: 9999\nhead:    {head_revision()}\n")
    assert "a newer Strongroom has upgraded the database" in current[2]
    assert upgraded[:2] == (2, "")
    assert "revision '9999', which this build does not know" in upgraded[2]


@pytest.mark.usefixtures("made_before_migrations")
def test_db_upgrade_stamps_a_database_made_before_migrations(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(config_file, capsys, "db", "upgrade")

    assert (code, out) == (0, f"before: none\nafter:  {head_revision()}\n")


@pytest.mark.usefixtures("made_before_migrations")
def test_db_upgrade_of_a_database_lacking_a_table_exits_2_and_lists_it(
    config_file: Path, capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    engine = create_store_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE shares")
    engine.dispose()

    code, out, err = run(config_file, capsys, "db", "upgrade")

    assert (code, out) == (2, "")
    assert "from before schema migrations" in err and "lacks table shares" in err
    assert "Traceback" not in err


@pytest.mark.usefixtures("made_before_migrations")
def test_without_auto_upgrade_a_command_refuses_an_unmigrated_database(
    config_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    monkeypatch.setenv("STRONGROOM_DB_AUTO_UPGRADE", "false")

    refused = run(config_file, capsys, "user", "list")
    tables = _table_names(database_url)
    run(config_file, capsys, "db", "upgrade")
    listed = run(config_file, capsys, "user", "list")

    assert refused[0] == 2
    assert "db_auto_upgrade is false" in refused[2]
    assert "'strongroom db upgrade'" in refused[2]
    assert "alembic_version" not in tables
    assert listed[0] == 0


def test_without_auto_upgrade_serve_refuses_to_start(
    tmp_path: Path, data_dir: Path
) -> None:
    config = tmp_path / "serve.toml"
    config.write_text(f'data_dir = "{data_dir}"\ndb_auto_upgrade = false\nport = 1\n')

    done = subprocess.run(
        [STRONGROOM, "--config", str(config), "serve"],
        capture_output=True, text=True, timeout=SERVE_TIMEOUT_SECONDS,
        env={k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")},
    )

    assert done.returncode == 2, done.stderr
    assert "run 'strongroom db upgrade'" in done.stderr
    assert "Created the first user" not in done.stdout


def test_without_auto_upgrade_the_app_refuses_to_start(data_dir: Path) -> None:
    settings = load_settings(None, {"data_dir": data_dir, "db_auto_upgrade": False})

    with pytest.raises(SchemaVersionError, match="strongroom db upgrade"):
        create_app(settings)


@pytest.mark.parametrize(
    ("value", "expected"), [("false", False), ("0", False), ("true", True)]
)
def test_db_auto_upgrade_is_read_from_its_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv("STRONGROOM_DB_AUTO_UPGRADE", value)

    assert load_settings(None).db_auto_upgrade is expected


def test_a_bad_db_auto_upgrade_value_exits_2_and_names_it(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file.write_text(config_file.read_text() + 'db_auto_upgrade = "maybe"\n')

    code, _, err = run(config_file, capsys, "db", "current")

    assert code == 2
    assert "db_auto_upgrade = 'maybe' is not accepted; use true or false" in err


def _table_names(database_url: str) -> list[str]:
    engine = create_store_engine(database_url)
    try:
        with engine.connect() as conn:
            return sorted(inspect(conn).get_table_names())
    finally:
        engine.dispose()
