"""The `strongroom` command: run the service and manage its users.

    strongroom [--config FILE] serve [--host H] [--port P]
    strongroom [--config FILE] user add NAME [--admin] [--password-stdin]
    strongroom [--config FILE] user list
    strongroom [--config FILE] user passwd NAME [--password-stdin]
    strongroom [--config FILE] user remove NAME
    strongroom [--config FILE] keys rotate
    strongroom [--config FILE] db upgrade | current
    strongroom [--config FILE] storage migrate --from URL --to URL [--all]

`--config` may also follow the command (`strongroom user list --config FILE`).
Exit codes: 0 success, 1 a usage or user error (bad name, unknown user, passwords
that differ), 2 a configuration error (a bad setting, an unusable data folder,
database schema or signing secret). Messages go to stderr; results and the first
admin's password to stdout.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import secrets
import shlex
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from strongroom.audit import audit_tree
from strongroom.auth.keys import load_key_set, rotate_default_key
from strongroom.auth.passwords import MAX_PASSWORD_BYTES, PasswordHasher
from strongroom.cli_storage import storage_migrate
from strongroom.config import (
    CONFIG_ENV_VAR,
    Settings,
    is_valid_user_name,
    load_settings,
)
from strongroom.errors import (
    ConfigError,
    StorageError,
    StrongroomError,
    UserExistsError,
    UserNotFoundError,
)
from strongroom.logging import configure_logging
from strongroom.storage import MetadataStore, Role, User, open_metadata_store
from strongroom.storage.blob_stores import local_blob_dir, open_blob_store
from strongroom.storage.check import CheckReport, check_stores
from strongroom.storage.migrate import (
    SchemaVersionError,
    current_revision,
    head_revision,
    is_known_revision,
    upgrade,
)
from strongroom.storage.registry import open_directory_spaces

__all__ = ["EXIT_CONFIG_ERROR", "EXIT_OK", "EXIT_USER_ERROR", "main"]

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_CONFIG_ERROR = 2
# `serve` could not listen, or the server did not start (uvicorn's own code).
EXIT_SERVE_FAILED = 3
# Ctrl-C, as shells report a command killed by SIGINT.
EXIT_INTERRUPTED = 130
# Start-up logs this many audit findings per space; the command shows them all.
MAX_LOGGED_FINDINGS = 50

FIRST_ADMIN_NAME = "admin"

log = logging.getLogger("strongroom.cli")


class _InputError(Exception):
    """The person at the terminal gave something we cannot use."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code (the `strongroom` entry point)."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR

    overrides = {
        key: value
        for key, value in (("host", args.host), ("port", args.port))
        if value is not None
    }
    try:
        settings = load_settings(args.config, overrides)
        level = _LOG_LEVELS.get(getattr(args, "log_level_name", ""), args.log_level)
        configure_logging(settings.log_format, level=level)
        command: Callable[[argparse.Namespace, Settings], int] = args.command
        return command(args, settings)
    except ConfigError as exc:
        return _fail(EXIT_CONFIG_ERROR, f"configuration error: {exc}")
    except SchemaVersionError as exc:
        # The message says what to do; a traceback would only bury it.
        return _fail(EXIT_CONFIG_ERROR, str(exc))
    except StorageError as exc:
        # The driver's own error (chained) says what the operator must fix; the
        # traceback is for --log-level debug, not for every terminal.
        log.debug("cli_storage_failed", exc_info=exc)
        return _fail(EXIT_USER_ERROR, _storage_failure(exc))
    except (_InputError, StrongroomError) as exc:
        return _fail(EXIT_USER_ERROR, str(exc))
    except OSError as exc:
        # A file or folder the configuration names is not what it must be.
        log.debug("cli_os_error", exc_info=exc)
        where = f" ({exc.filename})" if exc.filename else ""
        return _fail(EXIT_CONFIG_ERROR, f"{exc.strerror or exc}{where}")
    except KeyboardInterrupt:
        return _fail(EXIT_INTERRUPTED, "interrupted")
    except Exception:
        # The one place a CLI failure is logged; the traceback goes to the log.
        log.exception("cli_command_failed")
        return _fail(EXIT_USER_ERROR, "the command failed; see the error above")


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    """Audit a tree: exit 0 when clean, 1 with findings, 2 when it cannot be read."""
    try:
        report = audit_tree(args.path)
    except OSError as exc:
        return _fail(
            EXIT_CONFIG_ERROR,
            f"cannot audit {args.path!r}: {exc.strerror or exc}; give a readable "
            "directory",
        )
    if args.json:
        print(json.dumps(report.as_json(), indent=1))
    else:
        print(report.as_table())
    return EXIT_OK if report.clean else EXIT_USER_ERROR


def _check(args: argparse.Namespace, settings: Settings) -> int:
    """Compare rows with blobs: exit 0 when they agree, 1 with findings.

    Exit 2 when the store cannot be read (a missing local folder is refused,
    never created) or a repair is refused because the store looks wrong.
    """
    if args.force and not args.repair:
        return _fail(EXIT_USER_ERROR, "--force only applies to --repair")
    store = _open_store(settings)
    try:
        report = _check_with(store, settings, args)
    except StorageError as exc:
        # One line, with the driver's or the file system's own cause.
        return _fail(EXIT_CONFIG_ERROR,
                     f"the blob store cannot be checked: {_storage_failure(exc)}")
    finally:
        store.close()
    _print_check(report, as_json=args.json)
    if report.refused is not None:
        return _fail(
            EXIT_CONFIG_ERROR,
            f"repair refused, nothing was changed: {report.refused}; check "
            "blob_store_url (and data_dir); if the store really is in this "
            "state, run `strongroom check --repair --force`",
        )
    return EXIT_OK if report.clean else EXIT_USER_ERROR


def _check_with(
    store: MetadataStore, settings: Settings, args: argparse.Namespace
) -> CheckReport:
    # The store must exist already, and opening it changes nothing in it.
    blobs = open_blob_store(settings, create=False, sweep=False)
    try:
        return check_stores(
            store, blobs, verify_hashes=not args.no_hashes, repair=args.repair,
            force=args.force,
        )
    finally:
        blobs.close()


def _print_check(report: CheckReport, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.as_json(), indent=1))
        return
    for finding in report.findings:
        print(f"{finding.kind:<14} {finding.blob_id}  {finding.detail}")
    print(f"{len(report.findings)} findings; {report.rows} rows, "
          f"{report.blobs} blobs; {len(report.removed)} orphans removed, "
          f"{len(report.marked)} rows marked damaged, "
          f"{len(report.cleared)} marks cleared")
    if report.damaged:
        print(f"{report.damaged} files are marked damaged and answer 410: restore "
              "their blobs and run `strongroom check --repair` to clear the marks, "
              "or upload the files again")


def _audit_spaces(settings: Settings) -> None:
    """Warn, at start-up, about every finding in every directory space.

    `audit_tree` opens each configured path as the space's `Root` does (links to
    it followed), so the folder audited is the folder served. Paths are logged
    escaped, as the audit's table shows them: a name's control characters must
    not reach the log's reader.
    """
    for space in settings.spaces:
        try:
            report = audit_tree(space.path)
        except OSError as exc:
            log.warning("space_audit_failed",
                        extra={"space": space.name, "reason": exc.strerror})
            continue
        for finding in report.findings[:MAX_LOGGED_FINDINGS]:
            log.warning(
                "space_audit_finding",
                extra={"space": space.name, "kind": finding.kind,
                       "rel_path": finding.shown_path, "detail": finding.detail},
            )
        if len(report.findings) > MAX_LOGGED_FINDINGS:
            log.warning(
                "space_audit_truncated",
                extra={"space": space.name, "findings": len(report.findings),
                       "hint": f"run 'strongroom audit {space.path}' for all"},
            )


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    """Claim the port, check the spaces, create the first admin, then serve."""
    # The port first: a second `serve` on a taken port (a mistyped command, a
    # service started twice) stops before it migrates, sweeps or resumes
    # anything in the data the running server is using.
    try:
        listener = _listening_socket(settings.host, settings.port)
    except socket.gaierror as exc:
        return _fail(
            EXIT_SERVE_FAILED,
            f"cannot listen on {settings.host}:{settings.port}: the host name does "
            f"not resolve ({exc.strerror}); use an IP address or a known name",
        )
    except OSError as exc:
        return _fail(
            EXIT_SERVE_FAILED,
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}; "
            "is another server using it? Stop it or choose another port",
        )
    with listener:
        return _serve_on(listener, settings, _command_prefix(args))


def _command_prefix(args: argparse.Namespace) -> str:
    """The start of a command that reaches the same data as this one."""
    chosen = args.config or os.environ.get(CONFIG_ENV_VAR)
    if not chosen:
        return "strongroom"
    return f"strongroom --config {shlex.quote(os.path.abspath(chosen))}"


def _listening_socket(host: str, port: int) -> socket.socket:
    """Bind the server's TCP socket, as uvicorn would (it listens once serving)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _serve_on(listener: socket.socket, settings: Settings, command: str) -> int:
    # Open every space root first: a missing directory must stop start-up before
    # anything (database, secret, first admin) is created.
    for _, space in open_directory_spaces(settings.spaces, resolver=settings.resolver):
        space.root.close()
    _audit_spaces(settings)
    store = _open_store(settings)
    try:
        # A missing, unsafe or weak token key stops us here.
        load_key_set(
            settings.token_algorithm,
            settings.data_dir,
            settings.token_key_file,
            settings.token_verify_key_files,
        )
        _create_first_admin(store, command)
    finally:
        store.close()

    import uvicorn

    from strongroom.api.app import create_app  # the web layer loads only here
    from strongroom.api.serving import protocol_for

    app = create_app(settings)
    log.info("server_starting", extra={"host": settings.host, "port": settings.port})
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        # uvicorn's HTTP handler with deadlines for slow and stalled clients.
        http=protocol_for(settings),
        log_config=None,  # our handler, our format, our redaction
        access_log=False,  # the app logs one line per request itself
        # Believe X-Forwarded-For only from configured proxies: uvicorn's
        # default trusts any local peer, which lets a local client choose the
        # address the login throttle counts.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies) or None,
    )
    server = uvicorn.Server(config)
    server.run(sockets=[listener])
    return EXIT_OK if server.started else EXIT_SERVE_FAILED


def _user_add(args: argparse.Namespace, settings: Settings) -> int:
    """Create a user with a password from stdin or the terminal."""
    _check_user_name(args.name)
    password = _read_new_password(args.password_stdin)
    password_hash = PasswordHasher().hash(password)
    role: Role = "admin" if args.admin else "user"

    store = _open_store(settings)
    try:
        user = store.add_user(args.name, password_hash, role=role)
    finally:
        store.close()
    print(f"created user {user.name!r} (id {user.id}, role {user.role})")
    return EXIT_OK


def _user_list(args: argparse.Namespace, settings: Settings) -> int:
    """Print every user, one per line."""
    store = _open_store(settings)
    try:
        users = store.list_users()
    finally:
        store.close()

    if not users:
        print("no users yet; add one with: strongroom user add NAME")
        return EXIT_OK
    width = max(len("name"), *(len(user.name) for user in users))
    print(f"{'id':>6}  {'name':<{width}}  {'role':<5}  {'active':<6}  created")
    for user in users:
        print(_user_line(user, width))
    return EXIT_OK


def _user_passwd(args: argparse.Namespace, settings: Settings) -> int:
    """Set a new password; tokens issued before it stop working."""
    store = _open_store(settings)
    try:
        user = _find_user(store, args.name)
        password = _read_new_password(args.password_stdin)
        store.set_password(user.id, PasswordHasher().hash(password))
    finally:
        store.close()
    print(f"password changed for {user.name!r}; their older tokens are refused")
    return EXIT_OK


def _user_role(args: argparse.Namespace, settings: Settings) -> int:
    """Give a user another role; every token issued before it is refused."""
    user = _change_user(settings, args.name, lambda s, u: s.set_role(u.id, args.role))
    log.warning("tokens_revoked", extra={"user_id": user.id, "reason": "role_change"})
    print(f"{user.name!r} is now {args.role}; their older tokens are refused")
    return EXIT_OK


def _user_set_active(args: argparse.Namespace, settings: Settings) -> int:
    """Disable (revoking every token) or enable an account, keeping its files."""
    user = _change_user(
        settings, args.name, lambda s, u: s.set_active(u.id, args.active)
    )
    if not args.active:
        log.warning("tokens_revoked", extra={"user_id": user.id, "reason": "disabled"})
        print(f"disabled {user.name!r}; their tokens are refused, their files kept")
    else:
        print(f"enabled {user.name!r}; they can log in again")
    return EXIT_OK


def _token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    """Refuse every access and refresh token issued to a user until now."""
    user = _change_user(settings, args.user, lambda s, u: s.revoke_tokens(u.id))
    log.warning("tokens_revoked", extra={"user_id": user.id, "reason": "admin"})
    print(
        f"revoked every token of {user.name!r}; each server refuses them on its "
        "next request"
    )
    return EXIT_OK


def _user_remove(args: argparse.Namespace, settings: Settings) -> int:
    """Delete a user with every file of their home space."""
    store = _open_store(settings)
    try:
        user = _find_user(store, args.name)
        blob_ids = store.remove_user(user.id)
        _note_if_no_admin(store)
    finally:
        store.close()

    if blob_ids:
        blobs = open_blob_store(settings)
        try:
            for blob_id in blob_ids:
                blobs.delete_blob(blob_id)
        finally:
            blobs.close()
    print(f"removed user {user.name!r} and {len(blob_ids)} files of their home")
    return EXIT_OK


def _keys_rotate(args: argparse.Namespace, settings: Settings) -> int:
    """Make a new active token key; keep the old one for verifying only."""
    if settings.token_key_file is not None:
        raise _InputError(
            "token_key_file is set, so its keys are yours to rotate: make a new key "
            "file, point token_key_file at it and add the old one to "
            "token_verify_key_files"
        )
    # A rotated-out key must verify every token it signed until that expires.
    # Share links are signed with keys derived from the same set and live far
    # longer than access tokens, so the longer of the two lifetimes counts.
    longest = max(settings.token_ttl_seconds, settings.share_max_ttl_seconds)
    keep_seconds = longest + settings.token_leeway_seconds
    done = rotate_default_key(
        settings.token_algorithm, settings.data_dir, keep_seconds, time.time()
    )
    log.info("token_key_rotated", extra={"new_kid": done.new_kid,
                                         "old_kid": done.old_kid})
    print(f"new signing key {done.new_kid}; {done.old_kid} now verifies only")
    for kid in done.retired_kids:
        print(f"retired key {kid}: every token it signed has expired")
    print("restart every server process to use the new key")
    return EXIT_OK


def _db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    """Bring the database schema to this build's head; print before and after."""
    _make_data_dir(settings)
    result = upgrade(settings.database_url)
    print(f"before: {result.before or 'none'}")
    print(f"after:  {result.after or 'none'}")
    return EXIT_OK


def _db_current(args: argparse.Namespace, settings: Settings) -> int:
    """Print the database's revision and the head: exit 0 at head, 1 otherwise."""
    _make_data_dir(settings)
    current, head = current_revision(settings.database_url), head_revision()
    print(f"current: {current or 'none'}")
    print(f"head:    {head}")
    if current == head:
        return EXIT_OK
    if current is not None and not is_known_revision(current):
        print("strongroom: a newer Strongroom has upgraded the database past this "
              "build; run that version", file=sys.stderr)
    else:
        print("strongroom: the database is behind this build; run: "
              "strongroom db upgrade", file=sys.stderr)
    return EXIT_USER_ERROR


def _storage_failure(exc: StorageError) -> str:
    """One line for the terminal: our message, then the deepest cause's first line.

    Storage messages are written for HTTP clients ("see the server log"); at
    the terminal the operator is the one who must see what the driver said
    (a locked database, a file that is not a database, a refused connection).
    """
    cause: BaseException = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    ours = str(exc).split(";", 1)[0]
    if cause is exc:
        return ours
    said = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    return f"{ours}: {said}"


def _create_first_admin(store: MetadataStore, command: str) -> None:
    if store.has_users():
        return
    password = secrets.token_urlsafe(18)
    try:
        store.add_user(FIRST_ADMIN_NAME, PasswordHasher().hash(password), role="admin")
    except UserExistsError:
        return  # another process started at the same moment and made it
    log.info("first_admin_created", extra={"user": FIRST_ADMIN_NAME})
    print(
        f"Created the first user, {FIRST_ADMIN_NAME!r} (admin), with the password:\n"
        f"\n    {password}\n\n"
        "It is shown only this once. Change it with: "
        f"{command} user passwd {FIRST_ADMIN_NAME}"
        + ("" if "--config" in command else " (run from this folder)"),
        flush=True,
    )


def _open_store(settings: Settings) -> MetadataStore:
    _make_data_dir(settings)
    return open_metadata_store(
        settings.database_url, auto_upgrade=settings.db_auto_upgrade
    )


def _make_data_dir(settings: Settings) -> None:
    try:
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"data_dir {str(settings.data_dir)!r} cannot be created: {exc.strerror}"
        ) from None


def _change_user(
    settings: Settings, name: str, change: Callable[[MetadataStore, User], None]
) -> User:
    """Find the user `name` and apply `change` to it, with the store closed after."""
    store = _open_store(settings)
    try:
        user = _find_user(store, name)
        change(store, user)
        _note_if_no_admin(store)
    finally:
        store.close()
    return user


def _note_if_no_admin(store: MetadataStore) -> None:
    # The API refuses to lose its last active admin (nobody could undo it
    # there); the command line can always undo it, so it warns instead.
    if not any(u.is_admin and u.active for u in store.list_users()):
        print(
            "note: no active admin is left; give the role back with: "
            "strongroom user role NAME admin",
            file=sys.stderr,
        )


def _find_user(store: MetadataStore, name: str) -> User:
    user = store.get_user_by_name(name)
    if user is None:
        raise UserNotFoundError(
            f"there is no user {name!r}; see the users with: strongroom user list"
        )
    return user


def _check_user_name(name: str) -> None:
    if not is_valid_user_name(name):
        raise _InputError(
            f"user name {name!r} is not accepted; use 1-64 lowercase letters, "
            "digits, '.', '-' or '_', starting with a letter or digit"
        )


def _read_new_password(from_stdin: bool) -> str:
    if from_stdin:
        # One line; only its line ending is removed. The read is bounded so that
        # piping a large file in cannot fill memory; the policy refuses the rest.
        line = sys.stdin.readline(4 * MAX_PASSWORD_BYTES + 2)
        if not line:
            raise _InputError("no password on standard input")
        return line.removesuffix("\n").removesuffix("\r")
    if not sys.stdin.isatty():
        raise _InputError(
            "no terminal to ask for the password; pipe it in with --password-stdin"
        )
    try:
        first = getpass.getpass("New password: ")
        second = getpass.getpass("Repeat the new password: ")
    except EOFError:
        raise _InputError("no password was typed; nothing was changed") from None
    if first != second:
        raise _InputError("the two passwords differ; nothing was changed")
    return first


def _user_line(user: User, width: int) -> str:
    created = user.created.strftime("%Y-%m-%d %H:%M UTC")
    active = "yes" if user.active else "no"
    return f"{user.id:>6}  {user.name:<{width}}  {user.role:<5}  {active:<6}  {created}"


def _fail(code: int, message: str) -> int:
    print(f"strongroom: {message}", file=sys.stderr)
    return code


_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO,
               "warning": logging.WARNING, "error": logging.ERROR}

_EXIT_CODES = f"""exit codes:
  {EXIT_OK}    done (audit, check: nothing found)
  {EXIT_USER_ERROR}    the command was refused or failed (audit, check: findings)
  {EXIT_CONFIG_ERROR}    the configuration, or a file or folder it names, is wrong
       (audit, check: the tree or the store could not be read)
  {EXIT_SERVE_FAILED}    serve could not listen or start
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)"""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors exit with EXIT_USER_ERROR."""

    def error(self, message: str) -> NoReturn:
        """Print the usage and the problem, then exit with code 1."""
        self.print_usage(sys.stderr)
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}\n")


_AUDIT_DESCRIPTION = r"""Walk a directory tree without following links and report
what a file service must not trust: links that leave the tree, absolute, dangling
and looping links, hard-linked files, FIFOs, sockets, devices, world-writable
folders, entries of another owner, names the service refuses (unservable_name)
and entries that could not be read (unreadable). Exit code 0: clean,
1: findings, 2: the tree itself cannot be read.

The table escapes names and link texts: \\ is a backslash, \xNN an ASCII
control character or a byte that is not valid UTF-8, \uNNNN or \UNNNNNNNN any
other character that is not printable (such as U+202E); all else is shown as is.
"""


def _build_parser() -> argparse.ArgumentParser:
    # --config is accepted before or after the command; the later one wins.
    config = _Parser(add_help=False)
    config.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="TOML settings file (default: $STRONGROOM_CONFIG, if set)",
    )
    config.add_argument(
        "--log-level",
        # Its own dest: set_defaults(log_level=...) on one command would change
        # the default of this action, which every command shares.
        dest="log_level_name",
        choices=_LOG_LEVELS,
        type=str.lower,
        default=argparse.SUPPRESS,
        help="what to log: debug adds the details of any failure "
        "(default: warning; info for serve)",
    )
    parser = _Parser(
        prog="strongroom", description="A confined file service.",
        epilog=_EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", help=argparse.SUPPRESS)
    parser.set_defaults(config=None, host=None, port=None, log_level=logging.WARNING)
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", parents=[config], help="run the service")
    serve.add_argument("--host", help="address to listen on (default from settings)")
    serve.add_argument("--port", type=int, help="port to listen on")
    serve.set_defaults(command=_serve, log_level=logging.INFO)

    user = commands.add_parser("user", parents=[config], help="manage users")
    actions = user.add_subparsers(title="actions", required=True, metavar="ACTION")
    add = actions.add_parser("add", parents=[config], help="create a user")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--admin", action="store_true", help="give the admin role")
    _add_password_stdin(add)
    add.set_defaults(command=_user_add)
    listing = actions.add_parser("list", parents=[config], help="list the users")
    listing.set_defaults(command=_user_list)
    passwd = actions.add_parser("passwd", parents=[config], help="set a password")
    passwd.add_argument("name", metavar="NAME")
    _add_password_stdin(passwd)
    passwd.set_defaults(command=_user_passwd)
    remove = actions.add_parser(
        "remove", parents=[config],
        help="delete a user and every file of their home space (no undo)",
    )
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(command=_user_remove)
    role = actions.add_parser("role", parents=[config], help="change a user's role")
    role.add_argument("name", metavar="NAME")
    role.add_argument("role", choices=("user", "admin"))
    role.set_defaults(command=_user_role)
    for action, active, text in (
        ("disable", False, "refuse a user's logins and tokens, keeping the files"),
        ("enable", True, "let a disabled user log in again"),
    ):
        toggle = actions.add_parser(action, parents=[config], help=text)
        toggle.add_argument("name", metavar="NAME")
        toggle.set_defaults(command=_user_set_active, active=active)

    token = commands.add_parser("token", parents=[config], help="manage tokens")
    token_actions = token.add_subparsers(
        title="actions", required=True, metavar="ACTION"
    )
    revoke = token_actions.add_parser(
        "revoke", parents=[config], help="refuse every token a user holds now"
    )
    revoke.add_argument("--user", required=True, metavar="NAME")
    revoke.set_defaults(command=_token_revoke)

    audit = commands.add_parser(
        "audit", parents=[config],
        help="report links, hard links, FIFOs, devices and loose permissions in a tree",
        description=_AUDIT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    audit.add_argument("path", help="the directory tree to audit (a symlink to "
                       "it is followed; links inside it never are)")
    audit.add_argument("--json", action="store_true",
                       help="print JSON, not a table: 'path' is the exact name "
                       "when it is valid UTF-8; otherwise it is escaped as in the "
                       "table and 'path_bytes' holds the exact bytes in base64 "
                       "(likewise 'target' and 'target_bytes' for a link's text)")
    audit.set_defaults(command=_audit)

    check = commands.add_parser(
        "check", parents=[config],
        help="compare the database with the blob store of the home spaces",
    )
    check.add_argument("--repair", action="store_true",
                       help="delete orphan blobs older than an hour and mark "
                       "rows whose blob is missing or differs (refused with 410)")
    check.add_argument("--force", action="store_true",
                       help="repair even when the store looks wrong as a whole "
                       "(most rows without a blob, or most blobs without a row)")
    check.add_argument("--no-hashes", action="store_true",
                       help="compare sizes only (faster: no blob is read)")
    check.add_argument("--json", action="store_true", help="print JSON")
    check.set_defaults(command=_check)

    storage = commands.add_parser("storage", parents=[config],
                                  help="manage the blob store of the home spaces")
    storage_actions = storage.add_subparsers(
        title="actions", required=True, metavar="ACTION"
    )
    migrate = storage_actions.add_parser(
        "migrate", parents=[config],
        help="copy every blob to another store, checking each against its row",
    )
    migrate.add_argument("--from", dest="source", required=True, metavar="URL",
                         help='the store to copy from: "" (data_dir/blobs), '
                         "file:///ABS/PATH or s3://BUCKET[/PREFIX]")
    migrate.add_argument("--to", dest="target", required=True, metavar="URL",
                         help="the store to copy to, in the same forms")
    migrate.add_argument("--all", action="store_true",
                         help="also copy blobs of the source that no row refers to")
    migrate.add_argument("--no-hashes", action="store_true",
                         help="skip a blob the target holds at the right size "
                         "without reading it back")
    migrate.set_defaults(command=storage_migrate)

    keys = commands.add_parser("keys", parents=[config], help="manage token keys")
    key_actions = keys.add_subparsers(title="actions", required=True, metavar="ACTION")
    rotate = key_actions.add_parser(
        "rotate", parents=[config], help="new signing key; the old one verify-only"
    )
    rotate.set_defaults(command=_keys_rotate)

    db = commands.add_parser("db", parents=[config], help="manage the database schema")
    db_actions = db.add_subparsers(title="actions", required=True, metavar="ACTION")
    db_actions.add_parser(
        "upgrade", parents=[config], help="upgrade the schema to this build's revision"
    ).set_defaults(command=_db_upgrade)
    db_actions.add_parser(
        "current", parents=[config],
        help="show the database's revision and this build's (exit 1 when behind)",
    ).set_defaults(command=_db_current)

    nginx = commands.add_parser(
        "nginx-config", parents=[config],
        help="print an nginx.conf that fronts the instances and serves offloads",
    )
    nginx.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                       help="where nginx listens (default 127.0.0.1:8080)")
    nginx.add_argument("--upstream", action="append", metavar="HOST:PORT",
                       help="a Strongroom instance (repeat for several; "
                       "default: this configuration's host:port)")
    nginx.add_argument("--runtime-dir", type=Path,
                       default=Path("/var/lib/strongroom-nginx"),
                       help="a folder for nginx's pid, logs and temporary files")
    nginx.add_argument("--user", help="the user nginx's workers run as")
    nginx.set_defaults(command=_nginx_config)
    return parser


def _nginx_config(args: argparse.Namespace, settings: Settings) -> int:
    """Print the nginx configuration for these settings (see docs/deploy.md)."""
    from strongroom.api.offload import nginx_config  # the web stack, only here

    if settings.offload != "nginx":
        log.warning("nginx_config_without_offload", extra={"offload": settings.offload})
    upstreams = args.upstream or [f"{settings.host}:{settings.port}"]
    try:
        text = nginx_config(
            settings, local_blob_dir(settings), listen=args.listen,
            upstreams=upstreams, runtime_dir=args.runtime_dir.absolute(),
            user=args.user,
        )
    except ValueError as exc:
        raise _InputError(str(exc)) from exc
    print(text, end="")
    return 0


def _add_password_stdin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input",
    )
