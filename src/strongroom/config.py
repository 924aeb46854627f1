"""The one typed settings object, read once at start-up.

Settings come from three layers, each overriding the one before it:

1. a TOML file, named by `--config FILE` or the `STRONGROOM_CONFIG` variable;
2. `STRONGROOM_*` environment variables, for the scalar settings only (the list of
   spaces lives in the file, never in a variable);
3. explicit overrides from the command line (`serve --host/--port`).

Every key, with its default:

    data_dir = "data"                      # relative: against the current directory
    database_url = "sqlite:///<data_dir>/strongroom.db"
    token_ttl_seconds = 900                # also the longest lifetime accepted
    token_algorithm = "HS256"              # HS256 | EdDSA (Ed25519); never mixed
    token_key_file = <data_dir>/jwt.secret # the active key (unset: that default,
                                           # or <data_dir>/jwt-ed25519.pem for
                                           # EdDSA, created on first start)
    token_verify_key_files = []            # older keys, verify-only (rotation)
    token_leeway_seconds = 0               # clock skew allowed, 0-10
    refresh_ttl_seconds = 2592000          # a login's absolute end (30 days)
    refresh_idle_seconds = 604800          # a refresh token unused this long dies
    share_max_ttl_seconds = 2592000        # the longest a share link may live
    max_upload_bytes = 10737418240
    upload_expiry_seconds = 86400          # an unfinished resumable upload's life
    host = "127.0.0.1"
    port = 8000
    request_head_timeout_seconds = 20      # request line and headers must be in
                                           # by then, or 408 (slow clients)
    request_body_idle_seconds = 30         # a body may pause this long at most
    request_body_min_bytes_per_second = 1024  # past that grace, a body's average
                                           # rate must stay above this (0: no floor)
    keep_alive_timeout_seconds = 5         # an idle kept-alive connection closes
    trusted_proxies = []                   # proxy addresses whose X-Forwarded-For
                                           # names the client (default: none)
    log_format = "text"                    # text | json
    metrics_token = <unset>                # bearer secret for GET /metrics, 16-512
                                           # of A-Z a-z 0-9 . _ ~ + / = -
    resolver = "auto"                      # auto | openat2 | walk (forces fallback)
    home_quota_bytes = <unset>             # bytes each home space may hold in all
    offload = "none"                       # none | nginx | apache: who sends the
                                           # bytes of downloads (docs/deploy.md)
    offload_prefix = "/_strongroom"        # nginx's internal locations start so
    s3_redirect_seconds = 0                # S3 homes: redirect downloads to a URL
                                           # signed this long (0: the app streams)
    blob_store_url = ""                    # home files' bytes: "" (data_dir/blobs),
                                           # file:///ABS/PATH or s3://BUCKET[/PREFIX]
    s3_endpoint_url = ""                   # http(s)://HOST[:PORT]; "" for AWS itself
    s3_region = "us-east-1"
    s3_access_key_id = ""                  # both keys are needed for an s3:// store
    s3_secret_access_key = ""              # never shown in messages or logs
    s3_addressing_style = "path"           # path | virtual (bucket in the host name)

    [[spaces]]
    name = "docs"                          # 1-64 of a-z 0-9 - _; "home" is reserved
    path = "/srv/docs"                     # relative: against the config file's folder
    mode = "ro"                            # ro | rw (default ro)
    symlinks = "deny"                      # deny | within (default deny)
    hardlinks = "deny"                     # deny | allow (default deny)
    users = ["*"]                          # user names, "role:admin", "role:user", "*"

A bad value raises `ConfigError` naming the key, the value and what is accepted.
Nothing here reads the environment at import time; `load_settings` does, once.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from strongroom.errors import ConfigError

__all__ = [
    "CONFIG_ENV_VAR",
    "HOME_SPACE_NAME",
    "USER_NAME_PATTERN",
    "HardlinkPolicy",
    "LogFormat",
    "OffloadMode",
    "Resolver",
    "S3AddressingStyle",
    "Settings",
    "SpaceConfig",
    "SpaceMode",
    "SymlinkPolicy",
    "TokenAlgorithm",
    "is_valid_user_name",
    "load_settings",
]

CONFIG_ENV_VAR = "STRONGROOM_CONFIG"
SPACES_ENV_VAR = "STRONGROOM_SPACES"
# Far above any real config file (a few KiB even with hundreds of spaces).
MAX_CONFIG_FILE_BYTES = 1 << 20
HOME_SPACE_NAME = "home"

SpaceMode = Literal["ro", "rw"]
SymlinkPolicy = Literal["deny", "within"]
HardlinkPolicy = Literal["deny", "allow"]
LogFormat = Literal["text", "json"]
TokenAlgorithm = Literal["HS256", "EdDSA"]
# How confined roots resolve paths: openat2 when the kernel has it ("auto"), or the
# component walk forced ("walk"), e.g. to test the fallback on a new kernel.
Resolver = Literal["auto", "openat2", "walk"]
# Who sends a download's bytes once the app has authorised it and opened the file.
OffloadMode = Literal["none", "nginx", "apache"]
# How S3 requests name the bucket: in the path (most S3-compatible stores) or in
# the host name (AWS's preference, needs DNS for every bucket).
S3AddressingStyle = Literal["path", "virtual"]
# Accepted `blob_store_url`s. Bucket names follow S3's rules (3-63 of a-z 0-9 . -,
# a letter or digit at each end); a prefix is folders of plain names, no "." or
# "..", so it reads the same to every store. `storage.blob_stores` parses it.
BLOB_STORE_URL_PATTERN = (
    r"^(file:///[^\x00]*"
    r"|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9_-][A-Za-z0-9._-]*)*/?)?$"
)
# An S3 endpoint is a scheme, a host and a port only: no user info (credentials
# belong in their own keys) and no path that would shift every request.
_S3_ENDPOINT_PATTERN = r"^(https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?/?)?$"

# A space name appears in URLs (/spaces/{space}/...), so it is a plain slug.
_SPACE_NAME = re.compile(r"[a-z0-9_-]{1,64}")
# User names share the space-name alphabet plus '.', and must start with a letter or
# digit; ':' and '*' stay free for the "role:..." and "*" entries of a space.
USER_NAME_PATTERN = r"[a-z0-9][a-z0-9._-]{0,63}"
_USER_NAME = re.compile(USER_NAME_PATTERN)
_ROLE_ENTRIES = ("role:admin", "role:user")
# A bearer token lives at most a week; a password change revokes it sooner.
MAX_TOKEN_TTL_SECONDS = 7 * 24 * 3600
# A login (refresh-token family) lasts at most a year, whatever the idle time.
MAX_REFRESH_TTL_SECONDS = 365 * 24 * 3600
# A share link lives at most a year; the setting's default is 30 days.
MAX_SHARE_TTL_SECONDS = 365 * 24 * 3600
# An unfinished resumable upload is kept at most 30 days after its last bytes.
MAX_UPLOAD_EXPIRY_SECONDS = 30 * 24 * 3600
# Bounds on how long a client may take over a request (issue 7): the head of a
# request is a few hundred bytes, which no working link needs ten minutes for;
# an hour-long pause in a body is a dead client, whatever the size of the body;
# no client keeps an idle connection for reuse longer than ten minutes.
MAX_HEAD_TIMEOUT_SECONDS = 600
MAX_BODY_IDLE_SECONDS = 3600
MAX_KEEP_ALIVE_SECONDS = 600
# Clock skew allowed when checking token times; issue #3 caps it at 10 s.
MAX_TOKEN_LEEWAY_SECONDS = 10
# One bearer value (RFC 6750 token68 characters), long enough not to be guessed:
# 16 characters is the least; `openssl rand -hex 32` gives 64.
_METRICS_TOKEN_PATTERN = r"^[A-Za-z0-9._~+/=-]{16,512}$"  # noqa: S105 (a pattern)


def is_valid_user_name(name: str) -> bool:
    """Return whether `name` is an acceptable user name (1-64 of a-z 0-9 . _ -)."""
    return _USER_NAME.fullmatch(name) is not None


def _refuse_bool(value: object) -> object:
    # Pydantic's lax mode reads `port = true` as 1; a boolean is never a number here.
    if isinstance(value, bool):
        raise PydanticCustomError("bool_not_int", "a boolean is not a number")
    return value


_Int = Annotated[int, BeforeValidator(_refuse_bool)]


class SpaceConfig(BaseModel):
    """One admin-configured directory space (`[[spaces]]` in the file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    path: Path
    mode: SpaceMode = "ro"
    symlinks: SymlinkPolicy = "deny"
    hardlinks: HardlinkPolicy = "deny"
    users: tuple[str, ...]

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if name == HOME_SPACE_NAME:
            raise ValueError("'home' is reserved for each user's private space")
        if _SPACE_NAME.fullmatch(name) is None:
            raise ValueError("use 1-64 lowercase letters, digits, '-' or '_'")
        return name

    @field_validator("path", mode="before")
    @classmethod
    def _check_path_text(cls, path: object) -> object:
        return _check_path_text(path)

    @field_validator("path")
    @classmethod
    def _make_path_absolute(cls, path: Path) -> Path:
        # load_settings has already anchored relative paths at the config file.
        return Path(os.path.abspath(path))

    @field_validator("users")
    @classmethod
    def _check_users(cls, users: tuple[str, ...]) -> tuple[str, ...]:
        if not users:
            raise ValueError("list at least one user name, 'role:admin' or '*'")
        for entry in users:
            if entry in ("*", *_ROLE_ENTRIES) or is_valid_user_name(entry):
                continue
            raise ValueError(
                f"entry {entry!r} is neither a user name (1-64 of a-z 0-9 . _ -), "
                "'role:admin', 'role:user' nor '*'"
            )
        return users


class Settings(BaseSettings):
    """Every setting of one Strongroom instance, validated and immutable.

    Build it with `load_settings`; constructing it directly reads `STRONGROOM_*`
    variables under the keyword arguments and raises pydantic's `ValidationError`.
    `data_dir` and every space path are absolute once built.
    """

    model_config = SettingsConfigDict(
        env_prefix="STRONGROOM_", extra="forbid", frozen=True
    )

    data_dir: Path = Path("data")
    database_url: str = Field(default="", validate_default=True, repr=False)
    # Bring the database schema to this build's revision at start-up; when false,
    # a database that is behind stops start-up until `strongroom db upgrade`.
    db_auto_upgrade: bool = True
    token_ttl_seconds: _Int = Field(default=900, ge=1, le=MAX_TOKEN_TTL_SECONDS)
    token_algorithm: TokenAlgorithm = "HS256"  # noqa: S105 (an algorithm name)
    token_key_file: Path | None = None
    token_verify_key_files: tuple[Path, ...] = ()
    token_leeway_seconds: _Int = Field(default=0, ge=0, le=MAX_TOKEN_LEEWAY_SECONDS)
    refresh_ttl_seconds: _Int = Field(
        default=30 * 24 * 3600, ge=60, le=MAX_REFRESH_TTL_SECONDS
    )
    refresh_idle_seconds: _Int = Field(
        default=7 * 24 * 3600, ge=60, le=MAX_REFRESH_TTL_SECONDS
    )
    share_max_ttl_seconds: _Int = Field(
        default=30 * 24 * 3600, ge=60, le=MAX_SHARE_TTL_SECONDS
    )
    max_upload_bytes: _Int = Field(default=10 * 1024**3, ge=1)
    # What each home space may hold in all (unset: no bound). Enforced in the
    # database transaction that stores a file, so it holds across instances.
    home_quota_bytes: _Int | None = Field(default=None, ge=1)
    upload_expiry_seconds: _Int = Field(
        default=24 * 3600, ge=60, le=MAX_UPLOAD_EXPIRY_SECONDS
    )
    # Deadlines for slow or stalled clients (`api.serving`): a request head not
    # complete in time, or a body that stalls or trickles, gets a 408. The
    # defaults are far beyond any working client's needs (Apache's
    # mod_reqtimeout uses 20-40 s for the head and 500 bytes/s for bodies).
    request_head_timeout_seconds: _Int = Field(
        default=20, ge=1, le=MAX_HEAD_TIMEOUT_SECONDS
    )
    request_body_idle_seconds: _Int = Field(default=30, ge=1, le=MAX_BODY_IDLE_SECONDS)
    request_body_min_bytes_per_second: _Int = Field(default=1024, ge=0)
    keep_alive_timeout_seconds: _Int = Field(default=5, ge=1, le=MAX_KEEP_ALIVE_SECONDS)
    host: str = Field(default="127.0.0.1", min_length=1)
    port: _Int = Field(default=8000, ge=1, le=65535)
    # Addresses or networks of reverse proxies in front of `serve`. Only their
    # X-Forwarded-For is believed; with none, the client address is the peer's,
    # so nobody can pick the address the login throttle counts.
    trusted_proxies: tuple[str, ...] = ()
    log_format: LogFormat = "text"
    # A bearer secret that may read GET /metrics (a scraper holds no login);
    # admins' tokens may too. Unset: only they may.
    metrics_token: str | None = Field(
        default=None, repr=False, pattern=_METRICS_TOKEN_PATTERN
    )
    resolver: Resolver = "auto"
    # "nginx": answer downloads of local files with X-Accel-Redirect to an internal
    # location under `offload_prefix`; "apache": with X-Sendfile. See docs/deploy.md.
    offload: OffloadMode = "none"
    # With home blobs in S3: answer a download with a redirect to a URL signed
    # for this many seconds, so the store sends the bytes (0: the app streams).
    s3_redirect_seconds: _Int = Field(default=0, ge=0, le=3600)
    offload_prefix: str = Field(
        default="/_strongroom", pattern=r"^(/[A-Za-z0-9_-]+)+$", max_length=64
    )
    # Where home files' bytes live; see `storage.blob_stores`. The s3_* keys
    # apply to s3:// URLs; credentials are always explicit, so nothing ever asks
    # an instance metadata service for them.
    blob_store_url: str = Field(default="", pattern=BLOB_STORE_URL_PATTERN)
    s3_endpoint_url: str = Field(default="", pattern=_S3_ENDPOINT_PATTERN)
    s3_region: str = Field(default="us-east-1", pattern=r"^[a-z0-9-]{1,32}$")
    s3_access_key_id: str = Field(default="", max_length=256)
    s3_secret_access_key: str = Field(default="", repr=False, max_length=256)
    s3_addressing_style: S3AddressingStyle = "path"
    spaces: tuple[SpaceConfig, ...] = ()

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            ipaddress.ip_network(entry, strict=False)  # ValueError names it
        return value

    @field_validator("data_dir", "token_key_file", mode="before")
    @classmethod
    def _check_path_text(cls, path: object) -> object:
        return None if path is None else _check_path_text(path)

    @field_validator("data_dir")
    @classmethod
    def _make_data_dir_absolute(cls, data_dir: Path) -> Path:
        return Path(os.path.abspath(data_dir))

    @field_validator("token_key_file", "token_verify_key_files")
    @classmethod
    def _make_key_paths_absolute(cls, value: Path | tuple[Path, ...] | None) -> object:
        # Relative key paths are read against the current directory, as data_dir.
        if value is None:
            return None
        if isinstance(value, Path):
            return Path(os.path.abspath(value))
        return tuple(Path(os.path.abspath(p)) for p in value)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, url: str, info: ValidationInfo) -> str:
        if url == "":
            data_dir = info.data.get("data_dir")
            return f"sqlite:///{data_dir}/strongroom.db" if data_dir else url
        schemes = ("sqlite:///", "postgresql://", "postgresql+psycopg://")
        if url.startswith(schemes) and url != "sqlite:///":
            return url
        raise ValueError(
            "use sqlite:///PATH or postgresql://USER@HOST/DB (psycopg driver)"
        )

    @field_validator("spaces")
    @classmethod
    def _check_unique_names(
        cls, spaces: tuple[SpaceConfig, ...]
    ) -> tuple[SpaceConfig, ...]:
        first_index: dict[str, int] = {}
        for index, space in enumerate(spaces):
            if space.name in first_index:
                raise PydanticCustomError(
                    "duplicate_space",
                    "duplicate space name",
                    {
                        "key": f"spaces[{index}].name",
                        "value": space.name,
                        "accepted": "each space needs its own name; "
                        f"spaces[{first_index[space.name]}] already uses it",
                    },
                )
            first_index[space.name] = index
        return spaces

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order the layers: explicit overrides, then variables, then the file."""
        return (
            init_settings,
            _ScalarEnvSource(settings_cls),
            _FileSource(settings_cls),
        )


def load_settings(
    config_file: str | None, overrides: Mapping[str, object] | None = None
) -> Settings:
    """Build the settings from the file, the environment and `overrides`.

    `config_file` wins over `STRONGROOM_CONFIG`; with neither, only variables and
    defaults apply. `overrides` (command-line flags) win over everything.

    Raises:
        ConfigError: the file is missing, unreadable or not TOML, a key is unknown,
            or a value is not accepted; the message names key, value and range.
    """
    if SPACES_ENV_VAR in os.environ:
        # Every other key may come from a variable; a silently ignored one
        # would leave an admin believing a space is configured.
        raise ConfigError(
            f"{SPACES_ENV_VAR} is not read: spaces are set only as [[spaces]] "
            "tables in the config file; unset it"
        )
    chosen = config_file or os.environ.get(CONFIG_ENV_VAR) or None
    file_values = _read_config_file(Path(chosen)) if chosen else {}

    arguments: dict[str, Any] = dict(overrides or {})
    try:
        with _file_layer(file_values):
            settings = Settings(**arguments)
    except ValidationError as exc:
        raise ConfigError(_describe_errors(exc)) from None
    except SettingsError as exc:
        # A variable of a list setting that is not JSON; pydantic names the field.
        raise ConfigError(
            f"{exc}; a list setting from a STRONGROOM_* variable is JSON, such "
            "as '[\"10.0.0.1\"]'"
        ) from None
    check_space_separation(settings, Path(chosen) if chosen else None)
    return settings


_file_values: ContextVar[Mapping[str, object]] = ContextVar("_file_values")


@contextmanager
def _file_layer(values: Mapping[str, object]) -> Iterator[None]:
    # The settings class picks its sources in a classmethod, so the file's values
    # reach `_FileSource` through a context variable, scoped to one load.
    token = _file_values.set(values)
    try:
        yield
    finally:
        _file_values.reset(token)


class _FileSource(PydanticBaseSettingsSource):
    """The TOML file's values, as read by `load_settings`."""

    def get_field_value(
        self, field: FieldInfo, field_name: str
    ) -> tuple[Any, str, bool]:
        return _file_values.get({}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_file_values.get({}))


class _ScalarEnvSource(EnvSettingsSource):
    """`STRONGROOM_*` variables, for every setting except the list of spaces."""

    def get_field_value(
        self, field: FieldInfo, field_name: str
    ) -> tuple[Any, str, bool]:
        if field_name == "spaces":
            return None, field_name, False
        return super().get_field_value(field, field_name)


def _read_config_file(path: Path) -> dict[str, object]:
    try:
        values: dict[str, object] = tomllib.loads(
            _read_small_file(path).decode("utf-8")
        )
    except FileNotFoundError:
        raise ConfigError(
            f"config file {str(path)!r} does not exist; check --config or "
            f"{CONFIG_ENV_VAR}"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"config file {str(path)!r} cannot be read: {exc.strerror}"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"config file {str(path)!r} is not valid TOML (UTF-8): {exc}"
        ) from None

    _check_known_keys(values)
    _anchor_space_paths(values, path.parent)
    return values


def _read_small_file(path: Path) -> bytes:
    # O_NONBLOCK: opening a FIFO must not wait for a writer; the checks after
    # refuse it (and devices, and anything huge) before a byte is read.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"config file {str(path)!r} is not a regular file")
        if info.st_size > MAX_CONFIG_FILE_BYTES:
            raise ConfigError(
                f"config file {str(path)!r} is {info.st_size} bytes; a config "
                f"file is at most {MAX_CONFIG_FILE_BYTES}"
            )
        return handle.read(MAX_CONFIG_FILE_BYTES + 1)


def _check_known_keys(values: Mapping[str, object]) -> None:
    # Checked before pydantic sees the keys: a typo should name the key, and a
    # key such as `_env_file` must never reach the settings class as an argument.
    known = Settings.model_fields
    for key in values:
        if key not in known:
            raise ConfigError(
                f"{key!r} is not a setting; the settings are {', '.join(known)}"
            )


def _check_path_text(path: object) -> object:
    # Before pydantic makes a Path: "" would quietly mean the current folder,
    # and a NUL can never reach the file system.
    text = str(path) if isinstance(path, str | os.PathLike) else None
    if text == "":
        raise ValueError("use a folder path; \"\" would be the current folder")
    if text is not None and "\x00" in text:
        raise ValueError("a path cannot contain a NUL character")
    return path


def check_space_separation(settings: Settings, config_file: Path | None) -> None:
    """Refuse directory spaces that hold, or sit inside, the service's own files.

    A space over the data folder would let its users download the token
    secret and the database; a space inside it would let them write there. The
    key files and the config file (which may hold secrets) must not be in a
    space either. Paths are compared after resolving links, as the kernel
    would see them when the space is opened.

    Raises:
        ConfigError: naming the space and the file or folder it would expose.
    """
    private = {"data_dir": settings.data_dir}
    if settings.token_key_file is not None:
        private["token_key_file"] = settings.token_key_file
    for index, key_file in enumerate(settings.token_verify_key_files):
        private[f"token_verify_key_files[{index}]"] = key_file
    if settings.blob_store_url.startswith("file://"):
        private["blob_store_url"] = Path(settings.blob_store_url[len("file://"):])
    if config_file is not None:
        private["the config file"] = config_file
    for index, space in enumerate(settings.spaces):
        served = Path(os.path.realpath(space.path))
        for what, path in private.items():
            own = Path(os.path.realpath(path))
            if own == served or served in own.parents:
                raise ConfigError(
                    f"spaces[{index}] ({space.name!r}) would serve {what} "
                    f"({str(path)!r}) to its users; move one out of the other"
                )
            if what == "data_dir" and own in served.parents:
                raise ConfigError(
                    f"spaces[{index}] ({space.name!r}) is inside data_dir "
                    f"({str(path)!r}), the service's own folder; use a folder "
                    "outside it"
                )


def _anchor_space_paths(values: dict[str, object], config_dir: Path) -> None:
    spaces = values.get("spaces")
    if not isinstance(spaces, list):
        return
    for space in spaces:
        if isinstance(space, dict) and isinstance(space.get("path"), str):
            space["path"] = str(config_dir.absolute() / space["path"])


# What each scalar key accepts, for messages about values of the wrong type.
_ACCEPTED_BY_KEY = {
    "data_dir": "use a folder path",
    "db_auto_upgrade": "use true or false",
    "token_ttl_seconds": f"use a whole number of seconds, 1 to {MAX_TOKEN_TTL_SECONDS}",
    "max_upload_bytes": "use a whole number of bytes, at least 1",
    "upload_expiry_seconds": f"use whole seconds, 60 to {MAX_UPLOAD_EXPIRY_SECONDS}",
    "token_leeway_seconds": "use a whole number of seconds, 0 to 10",
    "refresh_ttl_seconds": f"use whole seconds, 60 to {MAX_REFRESH_TTL_SECONDS}",
    "refresh_idle_seconds": f"use whole seconds, 60 to {MAX_REFRESH_TTL_SECONDS}",
    "share_max_ttl_seconds": f"use whole seconds, 60 to {MAX_SHARE_TTL_SECONDS}",
    "token_key_file": "use a key file path",
    "token_verify_key_files": "use a list of key file paths",
    "request_head_timeout_seconds": "use whole seconds, 1 to "
    f"{MAX_HEAD_TIMEOUT_SECONDS}",
    "request_body_idle_seconds": f"use whole seconds, 1 to {MAX_BODY_IDLE_SECONDS}",
    "request_body_min_bytes_per_second": "use a whole number of bytes per second, "
    "0 (no floor) or more",
    "keep_alive_timeout_seconds": f"use whole seconds, 1 to {MAX_KEEP_ALIVE_SECONDS}",
    "host": "use a host name or IP address",
    "trusted_proxies": "use a list of IP addresses or networks ('10.0.0.0/8')",
    "port": "use a whole number from 1 to 65535",
    "metrics_token": "use 16 to 512 of A-Z a-z 0-9 . _ ~ + / = - (openssl rand -hex)",
    "path": "use a folder path",
    "users": "use a list of user names, 'role:admin', 'role:user' or '*'",
    "spaces": "use [[spaces]] tables",
    "blob_store_url": "use \"\" (data_dir/blobs), file:///ABSOLUTE/PATH or "
    "s3://BUCKET[/PREFIX] (bucket: 3-63 of a-z 0-9 . -; prefix: folder names)",
    "s3_endpoint_url": "use http(s)://HOST[:PORT] with nothing after it, or \"\" "
    "for AWS",
    "s3_region": "use a region name such as us-east-1 (a-z 0-9 -)",
    "s3_access_key_id": "use the access key id, at most 256 characters",
    "s3_secret_access_key": "use the secret access key, at most 256 characters",
}


def _describe_errors(exc: ValidationError) -> str:
    return "; ".join(_describe_error(error) for error in exc.errors())


def _describe_error(error: ErrorDetails) -> str:
    ctx = error.get("ctx") or {}
    if "key" in ctx:
        return f"{ctx['key']} = {ctx['value']!r} is not accepted; {ctx['accepted']}"

    key = _format_key(error["loc"])
    field = next((p for p in reversed(error["loc"]) if isinstance(p, str)), "")
    if error["type"] == "missing":
        hint = _ACCEPTED_BY_KEY.get(field, "set it")
        return f"{key} is missing; {hint}"
    if error["type"] == "extra_forbidden":
        return f"{key} is not a setting; remove it or check its spelling"
    return f"{key} = {_show_value(field, error['input'])} is not accepted; " + (
        _accepted(error, field)
    )


def _accepted(error: ErrorDetails, field: str) -> str:
    ctx = error.get("ctx") or {}
    if error["type"] == "literal_error":
        return f"use {ctx['expected']}"
    if error["type"] == "value_error":
        return str(ctx["error"])
    message = error["msg"]
    return _ACCEPTED_BY_KEY.get(field, message[:1].lower() + message[1:])


def hide_url_password(url: str) -> str:
    """Return `url` with the password of its user info replaced by `***`.

    The user info ends at the last `@` before the path, so a password that
    holds `@` (or `/`, unescaped) is hidden whole.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"


def _format_key(loc: tuple[int | str, ...]) -> str:
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else f".{part}"
    return key.lstrip(".")


def _show_value(field: str, value: object) -> str:
    # A database URL may carry a password; it must not reach a terminal or a log.
    if field in ("database_url", "s3_endpoint_url") and isinstance(value, str):
        value = hide_url_password(value)
    if field == "s3_secret_access_key":
        return "'***'"
    if field == "metrics_token":
        return "'***'"
    shown = repr(value)
    return shown if len(shown) <= 120 else shown[:117] + "..."
