"""The `strongroom` command, through `main(argv)` and the installed entry point."""

from __future__ import annotations

import io
import logging
import os
import pty
import queue
import re
import select
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from strongroom.auth.keys import ROTATED_DIR_NAME, load_key_set
from strongroom.auth.passwords import PasswordHasher
from strongroom.auth.throttle import FREE_FAILURES
from strongroom.cli import main
from strongroom.storage import open_metadata_store
from strongroom.storage.blobs import BLOBS_DIR_NAME, LocalBlobStore

STRONGROOM = Path(sys.executable).with_name("strongroom")
PASSWORD = "a fine password"  # noqa: S105 (test fixture)
# Bounds for the tests that start a real server or a terminal session.
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0


@pytest.fixture(autouse=True)
def clean_process_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No STRONGROOM_* variables; the root logger as it was after each test."""
    for name in list(os.environ):
        if name.startswith("STRONGROOM_"):
            monkeypatch.delenv(name)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def config_file(tmp_path: Path, data_dir: Path) -> Path:
    path = tmp_path / "strongroom.toml"
    path.write_text(f'data_dir = "{data_dir}"\n')
    return path


class Cli:
    """Runs `main` in this process with given standard input; keeps the output."""

    def __init__(
        self, config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch
    ) -> None:
        self.config_file = config_file
        self.capsys = capsys
        self.monkeypatch = monkeypatch
        self.out = self.err = ""

    def __call__(self, *args: str, stdin: str = "") -> int:
        self.monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(["--config", str(self.config_file), *args])
        self.out, self.err = self.capsys.readouterr()
        return code


@pytest.fixture
def cli(
    config_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Cli:
    return Cli(config_file, capsys, monkeypatch)


def database(data_dir: Path):  # type: ignore[no-untyped-def]
    return open_metadata_store(f"sqlite:///{data_dir}/strongroom.db")


# user add


def test_user_add_creates_a_user_whose_password_verifies(
    cli: Cli, data_dir: Path
) -> None:
    code = cli("user", "add", "alice", "--password-stdin", stdin=PASSWORD + "\n")

    assert code == 0
    assert "created user 'alice'" in cli.out and "role user" in cli.out
    store = database(data_dir)
    user = store.get_user_by_name("alice")
    store.close()
    assert user is not None and user.role == "user"
    assert PasswordHasher().verify(user.password_hash, PASSWORD).ok


def test_user_add_with_admin_gives_the_admin_role(cli: Cli) -> None:
    cli("user", "add", "root-ish", "--admin", "--password-stdin", stdin=PASSWORD)

    assert "role admin" in cli.out


def test_user_add_keeps_everything_but_the_line_ending(
    cli: Cli, data_dir: Path
) -> None:
    cli(
        "user",
        "add",
        "carol",
        "--password-stdin",
        stdin="  spaced out  \r\nnext line\n",
    )

    store = database(data_dir)
    user = store.get_user_by_name("carol")
    store.close()
    assert user is not None
    assert PasswordHasher().verify(user.password_hash, "  spaced out  ").ok


def test_user_add_creates_a_private_data_folder(cli: Cli, data_dir: Path) -> None:
    cli("user", "add", "alice", "--password-stdin", stdin=PASSWORD)

    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


def test_user_add_of_a_taken_name_is_a_user_error(cli: Cli) -> None:
    cli("user", "add", "alice", "--password-stdin", stdin=PASSWORD)

    code = cli("user", "add", "alice", "--password-stdin", stdin=PASSWORD)

    assert code == 1 and "user 'alice' already exists" in cli.err


@pytest.mark.parametrize(
    "name", ["Alice", "bob smith", "role:admin", "*", "_x", "x" * 65, ""]
)
def test_user_add_refuses_a_bad_name(cli: Cli, name: str) -> None:
    code = cli("user", "add", name, "--password-stdin", stdin=PASSWORD)

    assert code == 1 and "is not accepted" in cli.err


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("", "no password on standard input"),
        ("short\n", "too short"),
        ("x" * 1025, "too long"),
    ],
    ids=["empty", "short", "long"],
)
def test_user_add_refuses_a_bad_password(cli: Cli, stdin: str, message: str) -> None:
    code = cli("user", "add", "alice", "--password-stdin", stdin=stdin)

    assert code == 1 and message in cli.err
    assert cli("user", "list") == 0 and "no users yet" in cli.out


# user list, passwd, remove


def test_user_list_prints_each_user(cli: Cli) -> None:
    cli("user", "add", "zoe", "--password-stdin", stdin=PASSWORD)
    cli("user", "add", "adam", "--admin", "--password-stdin", stdin=PASSWORD)

    code = cli("user", "list")

    lines = cli.out.splitlines()
    assert code == 0 and lines[0].split() == ["id", "name", "role", "active", "created"]
    assert [line.split()[1:3] for line in lines[1:]] == [
        ["adam", "admin"],
        ["zoe", "user"],
    ]


def test_user_list_of_no_users_says_how_to_add_one(cli: Cli) -> None:
    assert cli("user", "list") == 0
    assert "strongroom user add NAME" in cli.out


def test_user_passwd_sets_a_new_password_and_revokes_tokens(
    cli: Cli, data_dir: Path
) -> None:
    cli("user", "add", "alice", "--password-stdin", stdin=PASSWORD)
    store = database(data_dir)
    before = store.get_user_by_name("alice")

    code = cli("user", "passwd", "alice", "--password-stdin", stdin="another password")

    after = store.get_user_by_name("alice")
    store.close()
    assert code == 0 and "password changed for 'alice'" in cli.out
    assert before is not None and after is not None
    assert PasswordHasher().verify(after.password_hash, "another password").ok
    assert after.tokens_valid_after > before.tokens_valid_after


def start_session(data_dir: Path, name: str) -> tuple[int, str]:
    """Open a session for `name` straight in the database; return (user id, sid)."""
    store = database(data_dir)
    try:
        user = store.get_user_by_name(name)
        assert user is not None
        sid = store.sessions.start(
            user, "0" * 64, scope="files:read", absolute_seconds=60,
            idle_seconds=60,
        )
        assert sid is not None
        return user.id, sid
    finally:
        store.close()


def is_live(data_dir: Path, user_id: int, sid: str) -> tuple[bool, datetime]:
    store = database(data_dir)
    try:
        user, live = store.get_user_in_session(user_id, sid)
        assert user is not None
        return live, user.tokens_valid_after
    finally:
        store.close()


@pytest.mark.parametrize(
    "command",
    [("token", "revoke", "--user", "alice"), ("user", "role", "alice", "admin"),
     ("user", "disable", "alice")],
    ids=["token-revoke", "user-role", "user-disable"],
)
def test_revoking_commands_end_every_session_and_older_token(
    cli: Cli, data_dir: Path, command: tuple[str, ...]
) -> None:
    cli("user", "add", "alice", "--password-stdin", stdin=PASSWORD)
    user_id, sid = start_session(data_dir, "alice")
    _, before = is_live(data_dir, user_id, sid)

    code = cli(*command)

    live, after = is_live(data_dir, user_id, sid)
    assert code == 0, cli.err
    assert not live
    assert after > before


def test_user_role_and_enable_change_the_account(cli: Cli, data_dir: Path) -> None:
    cli("user", "add", "alice", "--password-stdin", stdin=PASSWORD)

    codes = [cli("user", "role", "alice", "admin"), cli("user", "disable", "alice")]
    store = database(data_dir)
    disabled = store.get_user_by_name("alice")
    store.close()
    codes.append(cli("user", "enable", "alice"))
    store = database(data_dir)
    enabled = store.get_user_by_name("alice")
    store.close()

    assert codes == [0, 0, 0]
    assert disabled is not None and disabled.role == "admin" and not disabled.active
    assert enabled is not None and enabled.active


@pytest.mark.parametrize(
    "command",
    [("token", "revoke", "--user", "ghost"), ("user", "role", "ghost", "user"),
     ("user", "enable", "ghost")],
)
def test_account_commands_on_an_unknown_user_are_user_errors(
    cli: Cli, command: tuple[str, ...]
) -> None:
    assert cli(*command) == 1 and "there is no user 'ghost'" in cli.err


@pytest.mark.parametrize(
    "command", [("user", "role", "root", "user"), ("user", "disable", "root"),
                ("user", "remove", "root")],
    ids=["demote", "disable", "remove"],
)
def test_losing_the_last_admin_is_done_but_said(
    cli: Cli, command: tuple[str, ...]
) -> None:
    # The command line is where an admin is given back, so it does what it is
    # told; but nobody should find out later that no admin was left.
    cli("user", "add", "root", "--admin", "--password-stdin", stdin=PASSWORD)
    cli("user", "add", "alice", "--password-stdin", stdin=PASSWORD)
    assert cli("user", "role", "alice", "user") == 0
    assert "no active admin" not in cli.err

    assert cli(*command) == 0

    assert "no active admin is left" in cli.err
    assert "strongroom user role NAME admin" in cli.err


def test_user_role_refuses_an_unknown_role(cli: Cli) -> None:
    cli("user", "add", "alice", "--password-stdin", stdin=PASSWORD)

    assert cli("user", "role", "alice", "root") == 1
    assert "invalid choice" in cli.err


def test_user_passwd_of_an_unknown_user_is_a_user_error(cli: Cli) -> None:
    code = cli("user", "passwd", "ghost", "--password-stdin", stdin=PASSWORD)

    assert code == 1 and "there is no user 'ghost'" in cli.err


def test_user_remove_deletes_the_user_and_their_blobs(cli: Cli, data_dir: Path) -> None:
    cli("user", "add", "alice", "--password-stdin", stdin=PASSWORD)
    store = database(data_dir)
    alice = store.get_user_by_name("alice")
    assert alice is not None
    blobs = LocalBlobStore.open_dir(data_dir / BLOBS_DIR_NAME)
    info = blobs.write_blob([b"alice's file"])
    store.put_file(
        alice.id,
        "notes.txt",
        blob_id=info.blob_id,
        size=info.size,
        sha256=info.sha256,
        content_type="text/plain",
    )

    code = cli("user", "remove", "alice")

    assert code == 0 and "removed user 'alice' and 1 files" in cli.out
    assert store.get_user_by_name("alice") is None
    assert [p for p in (data_dir / BLOBS_DIR_NAME).rglob("*") if p.is_file()] == []
    store.close()
    blobs.close()


def test_user_remove_of_an_unknown_user_is_a_user_error(cli: Cli) -> None:
    assert cli("user", "remove", "ghost") == 1
    assert "there is no user 'ghost'" in cli.err


# Arguments, configuration and exit codes


def test_config_may_follow_the_command(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["user", "list", "--config", str(config_file)])

    assert code == 0 and "no users yet" in capsys.readouterr().out


def test_strongroom_config_variable_names_the_file(
    config_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STRONGROOM_CONFIG", str(config_file))

    assert main(["user", "list"]) == 0


def test_a_bad_setting_exits_with_code_2_and_names_it(
    cli: Cli, config_file: Path
) -> None:
    config_file.write_text("port = 0\n")

    code = cli("user", "list")

    assert code == 2
    assert "configuration error: port = 0 is not accepted" in cli.err


def test_an_unreachable_database_exits_with_code_1_and_says_why(
    cli: Cli, config_file: Path
) -> None:
    config_file.write_text(
        config_file.read_text() + 'database_url = "postgresql://127.0.0.1:1/x"\n'
    )

    code = cli("user", "list")

    assert code == 1 and "the metadata database failed" in cli.err
    assert "Connection refused" in cli.err or "connection failed" in cli.err
    assert "Traceback" not in cli.err


@pytest.mark.parametrize("kind", ["garbage", "folder"])
def test_a_database_file_that_is_not_one_is_named_in_one_line(
    cli: Cli, data_dir: Path, kind: str
) -> None:
    data_dir.mkdir(mode=0o700, exist_ok=True)
    database_file = data_dir / "strongroom.db"
    if kind == "garbage":
        database_file.write_bytes(b"this is not an SQLite file, not at all" * 100)
    else:
        database_file.mkdir()

    code = cli("user", "list")

    assert code == 1, cli.err
    assert "Traceback" not in cli.err
    assert len(cli.err.strip().splitlines()) == 1, cli.err
    said = cli.err.lower()
    assert "not a database" in said or "unable to open" in said, cli.err

    # The details are one option away, and only the level asked for changes.
    assert cli("user", "list", "--log-level", "debug") == 1
    assert "Traceback" in cli.err


def test_a_missing_config_file_exits_with_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--config", str(tmp_path / "nope.toml"), "user", "list"])

    assert code == 2 and "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [[], ["user"], ["fly"], ["user", "add"], ["serve", "--port", "http"]],
    ids=["nothing", "no-action", "unknown", "no-name", "bad-port"],
)
def test_usage_errors_exit_with_code_1(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    assert "usage: strongroom" in capsys.readouterr().err


def test_help_exits_with_code_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "serve" in capsys.readouterr().out


def test_python_dash_m_runs_the_same_commands() -> None:
    done = subprocess.run([sys.executable, "-m", "strongroom", "--help"],
                          capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: strongroom ")
    assert "serve" in done.stdout


def test_serve_with_a_readable_signing_secret_stops_with_code_2(
    cli: Cli, data_dir: Path
) -> None:
    data_dir.mkdir(mode=0o700)
    secret = data_dir / "jwt.secret"
    secret.write_bytes(os.urandom(64))
    secret.chmod(0o644)

    code = cli("serve")

    assert code == 2 and "chmod 600" in cli.err
    assert "password" not in cli.out  # no admin was made before the refusal


def test_serve_port_out_of_range_is_a_config_error(cli: Cli) -> None:
    assert cli("serve", "--port", "70000") == 2
    assert "port = 70000 is not accepted" in cli.err


# Through the installed entry point


def test_entry_point_adds_and_lists_users(config_file: Path) -> None:
    added = subprocess.run(
        [
            STRONGROOM,
            "--config",
            config_file,
            "user",
            "add",
            "dora",
            "--password-stdin",
        ],
        input=PASSWORD,
        capture_output=True,
        text=True,
        check=False,
    )
    listed = subprocess.run(
        [STRONGROOM, "--config", config_file, "user", "list"],
        capture_output=True,
        text=True,
        check=False,
    )

    assert added.returncode == 0, added.stderr
    assert listed.returncode == 0 and "dora" in listed.stdout


def run_in_terminal(argv: list[str], answers: list[str]) -> tuple[int, str]:
    """Run `argv` on a real pseudo-terminal, typing one answer per prompt."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty
        os.execv(argv[0], argv)
    transcript = unanswered = ""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 1024).decode(errors="replace")
        except OSError:  # EIO: the child has exited and closed the terminal
            break
        transcript += chunk
        unanswered += chunk
        # Answer each prompt once: only output since the last answer counts.
        if answers and unanswered.rstrip().endswith(":"):
            os.write(fd, (answers.pop(0) + "\n").encode())
            unanswered = ""
    exited = os.pidfd_open(pid)
    if not select.select([exited], [], [], STOP_TIMEOUT_SECONDS)[0]:
        os.kill(pid, signal.SIGKILL)  # hung past every bound
    os.close(exited)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), transcript


def test_user_add_prompts_twice_on_a_terminal(
    config_file: Path, data_dir: Path
) -> None:
    code, transcript = run_in_terminal(
        [str(STRONGROOM), "--config", str(config_file), "user", "add", "erin"],
        [PASSWORD, PASSWORD],
    )

    assert code == 0, transcript
    assert "New password:" in transcript and "Repeat the new password:" in transcript
    assert PASSWORD not in transcript  # getpass does not echo
    store = database(data_dir)
    user = store.get_user_by_name("erin")
    store.close()
    assert user is not None and PasswordHasher().verify(user.password_hash, PASSWORD).ok


def test_user_add_refuses_two_different_passwords(config_file: Path) -> None:
    code, transcript = run_in_terminal(
        [str(STRONGROOM), "--config", str(config_file), "user", "add", "erin"],
        [PASSWORD, PASSWORD + "!"],
    )

    assert code == 1 and "the two passwords differ" in transcript


class ServeProcess:
    """`strongroom serve` in a child process, its stdout read by a thread."""

    def __init__(self, config_file: Path, port: int) -> None:
        self.port = port
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout = ""
        self.process = subprocess.Popen(
            [STRONGROOM, "--config", config_file, "serve", "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_until_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            self._drain()
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited early:\n{self.stdout}")
            try:
                if httpx.get(self.url("/healthz"), timeout=1).status_code == 200:
                    self._drain()
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)  # polling a starting server; bounded by the deadline
        raise AssertionError(f"serve did not answer in time:\n{self.stdout}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._drain()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _drain(self) -> None:
        while not self.lines.empty():
            self.stdout += self.lines.get()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def api_available() -> None:
    try:
        import strongroom.api.app  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"the API of issue #2 is not importable yet: {exc}")


@pytest.mark.slow
@pytest.mark.usefixtures("api_available")
def test_first_serve_creates_an_admin_and_prints_the_password_once(
    config_file: Path,
) -> None:
    first = ServeProcess(config_file, free_port())
    try:
        first.wait_until_healthy()
        match = re.search(r"password:\s+(\S+)", first.stdout)
        assert match, first.stdout
        login = httpx.post(
            first.url("/api/v1/token"),
            data={"username": "admin", "password": match.group(1)},
            timeout=10,
        )
    finally:
        first.stop()
    second = ServeProcess(config_file, free_port())
    try:
        second.wait_until_healthy()
    finally:
        second.stop()

    assert login.status_code == 200 and login.json()["token_type"] == "bearer"
    # The advice reaches the same database when pasted from any folder.
    assert f"strongroom --config {config_file} user passwd admin" in first.stdout
    assert "Created the first user, 'admin'" not in second.stdout
    assert match.group(1) not in second.stdout


@pytest.mark.usefixtures("api_available")
def test_serve_on_a_taken_port_stops_before_touching_the_data(
    config_file: Path, data_dir: Path
) -> None:
    """A second server (a service started twice) must not migrate, sweep or
    resume anything in the data of the one already serving."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [STRONGROOM, "--config", config_file, "serve", "--port", str(port)],
            capture_output=True, text=True, timeout=START_TIMEOUT_SECONDS,
            check=False,
        )

    assert done.returncode == 3, done.stdout + done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert not data_dir.exists()  # no database, key or first admin was made


@pytest.mark.slow
@pytest.mark.usefixtures("api_available")
@pytest.mark.parametrize("trusted", [False, True], ids=["no-proxy", "proxy"])
def test_serve_believes_x_forwarded_for_only_from_trusted_proxies(
    config_file: Path, trusted: bool
) -> None:
    """A local client must not pick the address the login throttle counts."""
    if trusted:
        config_file.write_text(
            'trusted_proxies = ["127.0.0.1"]\n' + config_file.read_text())
    server = ServeProcess(config_file, free_port())
    try:
        server.wait_until_healthy()
        statuses = [
            httpx.post(
                server.url("/api/v1/token"),
                data={"username": f"nobody{n}", "password": "wrong-password"},
                headers={"X-Forwarded-For": f"203.0.113.{n}"},
                timeout=30,
            ).status_code
            for n in range(FREE_FAILURES + 2)
        ]
    finally:
        server.stop()

    # Untrusted: every attempt is 127.0.0.1's, and the address is throttled.
    # Trusted: each attempt is a different client, none throttled.
    assert (429 in statuses) is not trusted, statuses


def test_keys_rotate_makes_a_new_signing_key_and_keeps_the_old_one(
    cli: Cli, data_dir: Path
) -> None:
    data_dir.mkdir()
    old_kid = load_key_set("HS256", data_dir).active.kid

    code = cli("keys", "rotate")

    keys = load_key_set("HS256", data_dir)
    assert code == 0 and keys.active.kid != old_kid
    assert keys.kids()[1] == old_kid
    assert f"{old_kid} now verifies only" in cli.out
    assert len(list((data_dir / ROTATED_DIR_NAME).iterdir())) == 1


def test_keys_rotate_refuses_keys_named_in_the_settings(
    cli: Cli, config_file: Path, tmp_path: Path
) -> None:
    config_file.write_text(
        config_file.read_text() + f'token_key_file = "{tmp_path / "k.secret"}"\n')

    code = cli("keys", "rotate")

    assert code == 1 and "token_verify_key_files" in cli.err
