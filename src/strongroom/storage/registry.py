"""Which spaces exist and which user may use which: the one place that decides it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from strongroom.config import HOME_SPACE_NAME, SpaceConfig
from strongroom.confine import Root
from strongroom.errors import ConfigError, SpaceNotFoundError
from strongroom.storage.spaces import DirectorySpace, Space

__all__ = ["SpaceRegistry", "UserLike", "open_directory_spaces"]


class UserLike(Protocol):
    """What the registry needs to know about a user."""

    @property
    def id(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str: ...


class SpaceRegistry:
    """The directory spaces of the configuration plus each user's home.

    `home` always means the caller's own home: no name, id or path addresses
    another user's home. A space the user may not use answers exactly like one that
    does not exist, so names of other spaces are not revealed.
    """

    def __init__(
        self,
        directory_spaces: Sequence[tuple[SpaceConfig, DirectorySpace]],
        home_for: Callable[[UserLike], Space],
    ) -> None:
        self._spaces = {cfg.name: (cfg, space) for cfg, space in directory_spaces}
        self._home_for = home_for

    def for_user(self, user: UserLike) -> list[Space]:
        """Return the spaces `user` may use, home first, then by name."""
        allowed: list[Space] = [
            space for name, (cfg, space) in sorted(self._spaces.items())
            if _may_use(cfg, user)
        ]
        return [self._home_for(user), *allowed]

    def get(self, user: UserLike, name: str) -> Space:
        """Return the space `name` for `user`; raise `SpaceNotFoundError` otherwise."""
        if name == HOME_SPACE_NAME:
            return self._home_for(user)
        found = self._spaces.get(name)
        if found is None or not _may_use(found[0], user):
            raise SpaceNotFoundError(f"there is no space named {name[:64]!r} for you")
        return found[1]

    def writable_directory_spaces(self) -> list[DirectorySpace]:
        """Return every read-write directory space, by name."""
        return [space for _, (_, space) in sorted(self._spaces.items())
                if space.writable]

    def close(self) -> None:
        """Close every directory root."""
        for _, space in self._spaces.values():
            space.root.close()


def open_directory_spaces(
    configs: Sequence[SpaceConfig], *, resolver: str = "auto"
) -> list[tuple[SpaceConfig, DirectorySpace]]:
    """Open a `Root` for every configured directory space (checked once, here).

    Raises `ConfigError` naming the space when its directory is missing or is not a
    directory.
    """
    opened = []
    for cfg in configs:
        try:
            root = Root(cfg.path, symlinks=cfg.symlinks, hardlinks=cfg.hardlinks,
                        resolver=resolver)  # type: ignore[arg-type]
        except ConfigError as exc:
            raise ConfigError(f"space {cfg.name!r}: {exc}") from exc
        opened.append((cfg, DirectorySpace(cfg.name, root, writable=cfg.mode == "rw")))
    return opened


def _may_use(cfg: SpaceConfig, user: UserLike) -> bool:
    return any(
        entry == "*" or entry == user.name or entry == f"role:{user.role}"
        for entry in cfg.users
    )
