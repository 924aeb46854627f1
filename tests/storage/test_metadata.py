"""The metadata store, on SQLite and PostgreSQL (see conftest.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from concurrency import run_together
from strongroom.errors import (
    ConfigError,
    DirectoryNotEmptyError,
    InvalidPathError,
    IsADirectoryPathError,
    NotADirectoryPathError,
    PathExistsError,
    PathNotFoundError,
    StorageError,
    StorageQuotaError,
    UserExistsError,
    UserNotFoundError,
)
from strongroom.storage import MAX_KEY_BYTES, MetadataStore, open_metadata_store
from strongroom.storage.metadata import NewFile
from strongroom.storage.records import User


def add_file(store: MetadataStore, owner: int, rel_path: str, blob: str) -> None:
    """Put a small file row whose blob id is `blob` padded to 32 hex digits."""
    store.put_file(
        owner,
        rel_path,
        blob_id=blob.ljust(32, "0"),
        size=len(rel_path),
        sha256="a" * 64,
        content_type="text/plain",
    )


def names(store: MetadataStore, owner: int, dir_rel_path: str) -> list[str]:
    """Return the names in one folder, all pages joined."""
    return [
        e.name for e in store.list_children(owner, dir_rel_path, None, 1000).entries
    ]


@pytest.fixture
def alice(store: MetadataStore) -> User:
    return store.add_user("alice", "hash-a")


@pytest.fixture
def bob(store: MetadataStore) -> User:
    return store.add_user("bob", "hash-b")


# Users


def test_add_user_returns_an_active_user_stamped_now(
    store: MetadataStore, clock
) -> None:
    user = store.add_user("carol", "hash", role="admin")

    assert (user.name, user.role, user.active) == ("carol", "admin", True)
    assert user.created == user.tokens_valid_after == clock.current
    assert store.get_user_by_id(user.id) == user


def test_add_user_refuses_a_taken_name(store: MetadataStore, alice: User) -> None:
    with pytest.raises(UserExistsError, match="'alice' already exists"):
        store.add_user("alice", "other")


def test_add_user_refuses_an_unknown_role(store: MetadataStore) -> None:
    with pytest.raises(ValueError, match="role"):
        store.add_user("dave", "hash", role="root")  # type: ignore[arg-type]


def test_lookups_return_none_for_unknown_users(store: MetadataStore) -> None:
    assert store.get_user_by_id(12345) is None
    assert store.get_user_by_name("nobody") is None


def test_get_user_by_name_finds_the_exact_name(
    store: MetadataStore, alice: User
) -> None:
    assert store.get_user_by_name("alice") == alice
    assert store.get_user_by_name("ALICE") is None


def test_list_users_sorts_by_name(store: MetadataStore) -> None:
    for name in ("zed", "amy", "mo"):
        store.add_user(name, "h")

    assert [u.name for u in store.list_users()] == ["amy", "mo", "zed"]


def test_has_users_tells_an_empty_store_apart(store: MetadataStore) -> None:
    assert store.has_users() is False

    store.add_user("first", "h")

    assert store.has_users() is True


def test_set_password_revokes_older_tokens(
    store: MetadataStore, alice: User, clock
) -> None:
    changed_at = clock.advance(60)

    store.set_password(alice.id, "new-hash")

    user = store.get_user_by_id(alice.id)
    assert user is not None
    assert (user.password_hash, user.tokens_valid_after) == ("new-hash", changed_at)


def test_set_password_for_a_rehash_keeps_tokens(
    store: MetadataStore, alice: User, clock
) -> None:
    clock.advance(60)

    store.set_password(alice.id, "rehashed", revoke_tokens=False)

    user = store.get_user_by_id(alice.id)
    assert user is not None
    assert user.tokens_valid_after == alice.tokens_valid_after


def test_set_role_changes_the_role(store: MetadataStore, alice: User) -> None:
    store.set_role(alice.id, "admin")

    user = store.get_user_by_id(alice.id)
    assert user is not None and user.is_admin


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda s: s.set_password(999, "h"), id="set_password"),
        pytest.param(lambda s: s.set_role(999, "admin"), id="set_role"),
        pytest.param(lambda s: s.remove_user(999), id="remove_user"),
        pytest.param(lambda s: s.add_dir(999, "a"), id="add_dir"),
        pytest.param(
            lambda s: s.put_file(
                999, "a", blob_id="1" * 32, size=1, sha256="a" * 64, content_type="x"
            ),
            id="put_file",
        ),
    ],
)
def test_changes_for_an_unknown_user_raise_user_not_found(
    store: MetadataStore, change
) -> None:
    with pytest.raises(UserNotFoundError):
        change(store)


def test_remove_user_returns_the_blobs_of_their_files(
    store: MetadataStore, alice: User, bob: User
) -> None:
    add_file(store, alice.id, "a.txt", "a1")
    add_file(store, alice.id, "d/b.txt", "a2")
    add_file(store, bob.id, "a.txt", "b1")

    orphans = store.remove_user(alice.id)

    assert sorted(orphans) == ["a1".ljust(32, "0"), "a2".ljust(32, "0")]
    assert store.get_user_by_id(alice.id) is None
    assert names(store, bob.id, "") == ["a.txt"]


def test_removed_users_id_is_never_given_to_a_new_user(
    store: MetadataStore, alice: User, bob: User
) -> None:
    """A token names its user by id; a new user must not inherit a dead one's."""
    store.remove_user(bob.id)

    newcomer = store.add_user("bob", "h")

    assert newcomer.id > bob.id


def test_user_repr_leaves_out_the_password_hash(
    store: MetadataStore, alice: User
) -> None:
    assert "hash-a" not in repr(alice)


# Putting and reading files


def test_put_file_creates_the_row_and_its_parent_folders(
    store: MetadataStore, alice: User, clock
) -> None:
    result = store.put_file(
        alice.id,
        "docs/2026/report.pdf",
        blob_id="b" * 32,
        size=52133,
        sha256="c" * 64,
        content_type="application/pdf",
    )

    assert result.created and result.replaced_blob_id is None
    assert store.get_file(alice.id, "docs/2026/report.pdf") == result.file
    assert result.file.name == "report.pdf"
    assert (result.file.created, result.file.modified) == (clock.current,) * 2
    assert names(store, alice.id, "") == ["docs"]
    assert names(store, alice.id, "docs") == ["2026"]


def test_put_file_replaces_and_returns_the_previous_blob(
    store: MetadataStore, alice: User, clock
) -> None:
    first = store.put_file(
        alice.id, "a.txt", blob_id="1" * 32, size=1, sha256="a" * 64, content_type="x"
    )
    clock.advance(5)

    second = store.put_file(
        alice.id, "a.txt", blob_id="2" * 32, size=2, sha256="b" * 64, content_type="y"
    )

    assert not second.created and second.replaced_blob_id == "1" * 32
    assert second.file.id == first.file.id
    assert second.file.created == first.file.created
    assert second.file.modified == clock.current
    assert store.get_file(alice.id, "a.txt") == second.file


def test_put_file_create_only_refuses_an_existing_file(
    store: MetadataStore, alice: User
) -> None:
    add_file(store, alice.id, "a.txt", "1")

    with pytest.raises(PathExistsError):
        store.put_file(
            alice.id,
            "a.txt",
            blob_id="2" * 32,
            size=1,
            sha256="a" * 64,
            content_type="x",
            create_only=True,
        )

    file = store.get_file(alice.id, "a.txt")
    assert file is not None and file.blob_id == "1".ljust(32, "0")


def test_put_file_refuses_a_name_held_by_a_folder(
    store: MetadataStore, alice: User
) -> None:
    store.add_dir(alice.id, "photos")

    with pytest.raises(IsADirectoryPathError):
        add_file(store, alice.id, "photos", "1")


def test_put_file_refuses_a_file_as_parent(store: MetadataStore, alice: User) -> None:
    add_file(store, alice.id, "notes", "1")

    with pytest.raises(NotADirectoryPathError, match="'notes' is a file"):
        add_file(store, alice.id, "notes/deeper/x.txt", "2")

    assert names(store, alice.id, "") == ["notes"]


def test_get_file_is_none_for_folders_and_missing_names(
    store: MetadataStore, alice: User
) -> None:
    store.add_dir(alice.id, "d")

    assert store.get_file(alice.id, "d") is None
    assert store.get_file(alice.id, "missing.txt") is None


def test_get_entry_describes_files_folders_and_the_top(
    store: MetadataStore, alice: User
) -> None:
    add_file(store, alice.id, "d/f.txt", "1")

    top = store.get_entry(alice.id, "")
    folder = store.get_entry(alice.id, "d")
    file = store.get_entry(alice.id, "d/f.txt")

    assert top is not None and (top.kind, top.modified) == ("dir", alice.created)
    assert folder is not None and (folder.name, folder.kind) == ("d", "dir")
    assert file is not None and (file.name, file.kind, file.size) == (
        "f.txt",
        "file",
        7,
    )
    assert store.get_entry(alice.id, "nope") is None


# Listing


def test_list_children_sorts_files_and_folders_together_by_name(
    store: MetadataStore, alice: User
) -> None:
    for rel_path in ("b.txt", "d/inner.txt", "a.txt"):
        add_file(store, alice.id, rel_path, rel_path.encode().hex()[:8])
    store.add_dir(alice.id, "c")

    page = store.list_children(alice.id, "", None, 10)

    assert [(e.name, e.kind) for e in page.entries] == [
        ("a.txt", "file"),
        ("b.txt", "file"),
        ("c", "dir"),
        ("d", "dir"),
    ]
    assert page.next_cursor is None


def test_list_children_orders_by_code_point_on_every_database(
    store: MetadataStore, alice: User
) -> None:
    """Locale collations would interleave case and accents; cursors need one order."""
    for index, name in enumerate(["é", "Z", "a b", "a-b", "ab", "_x", "a", "10", "9"]):
        add_file(store, alice.id, name, str(index))

    listed = names(store, alice.id, "")

    assert listed == sorted(listed)


@pytest.mark.parametrize("limit", [1, 2, 3, 7], ids=lambda n: f"limit{n}")
def test_list_children_pages_with_the_last_name_as_cursor(
    store: MetadataStore, alice: User, limit: int
) -> None:
    for index in range(7):
        add_file(store, alice.id, f"f{index}", str(index))
    seen: list[str] = []
    cursor = None

    while True:
        page = store.list_children(alice.id, "", cursor, limit)
        seen += [e.name for e in page.entries]
        if page.next_cursor is None:
            break
        assert len(page.entries) == limit
        cursor = page.next_cursor

    assert seen == [f"f{index}" for index in range(7)]


def test_list_children_shows_only_direct_children(
    store: MetadataStore, alice: User
) -> None:
    add_file(store, alice.id, "a/b/c/deep.txt", "1")
    add_file(store, alice.id, "a/top.txt", "2")

    assert names(store, alice.id, "a") == ["b", "top.txt"]


def test_list_children_shows_only_the_owners_rows(
    store: MetadataStore, alice: User, bob: User
) -> None:
    add_file(store, alice.id, "mine.txt", "1")
    add_file(store, bob.id, "theirs.txt", "2")

    assert names(store, alice.id, "") == ["mine.txt"]
    assert names(store, bob.id, "") == ["theirs.txt"]


def test_list_children_of_a_missing_folder_raises_not_found(
    store: MetadataStore, alice: User
) -> None:
    with pytest.raises(PathNotFoundError):
        store.list_children(alice.id, "nope", None, 10)


def test_list_children_of_a_file_raises_not_a_directory(
    store: MetadataStore, alice: User
) -> None:
    add_file(store, alice.id, "f.txt", "1")

    with pytest.raises(NotADirectoryPathError):
        store.list_children(alice.id, "f.txt", None, 10)


def test_list_children_refuses_a_limit_below_one(
    store: MetadataStore, alice: User
) -> None:
    with pytest.raises(ValueError):
        store.list_children(alice.id, "", None, 0)


# Folders


def test_add_dir_makes_an_empty_folder_that_lists(
    store: MetadataStore, alice: User
) -> None:
    store.add_dir(alice.id, "empty")

    assert names(store, alice.id, "") == ["empty"]
    assert names(store, alice.id, "empty") == []
    assert store.has_children(alice.id, "empty") is False


def test_add_dir_needs_the_parent_unless_parents_is_set(
    store: MetadataStore, alice: User
) -> None:
    with pytest.raises(PathNotFoundError):
        store.add_dir(alice.id, "x/y")

    store.add_dir(alice.id, "x/y", parents=True)

    assert names(store, alice.id, "x") == ["y"]


def test_add_dir_refuses_an_existing_folder_unless_exist_ok(
    store: MetadataStore, alice: User
) -> None:
    store.add_dir(alice.id, "d")

    with pytest.raises(PathExistsError):
        store.add_dir(alice.id, "d")
    store.add_dir(alice.id, "d", exist_ok=True)
    store.add_dir(alice.id, "", exist_ok=True)


def test_add_dir_refuses_a_name_held_by_a_file_even_with_exist_ok(
    store: MetadataStore, alice: User
) -> None:
    add_file(store, alice.id, "f", "1")

    with pytest.raises(PathExistsError, match="a file has this name"):
        store.add_dir(alice.id, "f", exist_ok=True)


def test_add_dir_refuses_a_file_as_parent(store: MetadataStore, alice: User) -> None:
    add_file(store, alice.id, "f", "1")

    with pytest.raises(NotADirectoryPathError):
        store.add_dir(alice.id, "f/sub")


def test_has_children_sees_files_and_folders(store: MetadataStore, alice: User) -> None:
    store.add_dir(alice.id, "a/b", parents=True)
    add_file(store, alice.id, "c/f.txt", "1")

    assert store.has_children(alice.id, "") is True
    assert store.has_children(alice.id, "a") is True
    assert store.has_children(alice.id, "c") is True
    assert store.has_children(alice.id, "a/b") is False


# Removing


def test_remove_file_returns_its_blob_and_keeps_the_folder(
    store: MetadataStore, alice: User
) -> None:
    add_file(store, alice.id, "d/f.txt", "ab")

    blob_id = store.remove_file(alice.id, "d/f.txt")

    assert blob_id == "ab".ljust(32, "0")
    assert names(store, alice.id, "d") == []


def test_remove_file_of_a_missing_name_raises_not_found(
    store: MetadataStore, alice: User
) -> None:
    with pytest.raises(PathNotFoundError):
        store.remove_file(alice.id, "nope")


def test_remove_file_of_a_folder_raises_is_a_directory(
    store: MetadataStore, alice: User
) -> None:
    store.add_dir(alice.id, "d")

    with pytest.raises(IsADirectoryPathError):
        store.remove_file(alice.id, "d")


def test_remove_file_cannot_reach_another_users_file(
    store: MetadataStore, alice: User, bob: User
) -> None:
    add_file(store, bob.id, "secret.txt", "1")

    with pytest.raises(PathNotFoundError):
        store.remove_file(alice.id, "secret.txt")

    assert store.get_file(bob.id, "secret.txt") is not None


def test_remove_dir_deletes_an_empty_folder(store: MetadataStore, alice: User) -> None:
    store.add_dir(alice.id, "d")

    store.remove_dir(alice.id, "d")

    assert names(store, alice.id, "") == []


def test_remove_dir_refuses_a_folder_with_entries(
    store: MetadataStore, alice: User
) -> None:
    add_file(store, alice.id, "d/f.txt", "1")

    with pytest.raises(DirectoryNotEmptyError):
        store.remove_dir(alice.id, "d")


@pytest.mark.parametrize(
    ("rel_path", "error"),
    [
        ("", InvalidPathError),
        ("missing", PathNotFoundError),
        ("f.txt", NotADirectoryPathError),
    ],
    ids=["top", "missing", "file"],
)
def test_remove_dir_refuses_what_is_not_a_removable_folder(
    store: MetadataStore, alice: User, rel_path: str, error: type[Exception]
) -> None:
    add_file(store, alice.id, "f.txt", "1")

    with pytest.raises(error):
        store.remove_dir(alice.id, rel_path)


# Moving


def test_move_renames_a_file(store: MetadataStore, alice: User) -> None:
    add_file(store, alice.id, "a.txt", "1")
    store.add_dir(alice.id, "d")

    replaced = store.move(alice.id, "a.txt", "d/b.txt")

    assert replaced == ()
    assert store.get_file(alice.id, "a.txt") is None
    moved = store.get_file(alice.id, "d/b.txt")
    assert moved is not None and moved.name == "b.txt"


def test_move_carries_a_whole_folder_and_nothing_else(
    store: MetadataStore, alice: User
) -> None:
    """Siblings that share the prefix ('a b', 'a0', 'ab', 'a_') must stay put."""
    for rel_path in ("a/x.txt", "a/s/y.txt", "a/s/t/z.txt"):
        add_file(store, alice.id, rel_path, rel_path.encode().hex()[:16])
    store.add_dir(alice.id, "a/empty")
    for sibling in ("a b", "a0", "ab", "a_", "a%"):
        add_file(store, alice.id, f"{sibling}/keep.txt", sibling.encode().hex())

    store.move(alice.id, "a", "moved")

    assert names(store, alice.id, "moved") == ["empty", "s", "x.txt"]
    assert names(store, alice.id, "moved/s") == ["t", "y.txt"]
    assert names(store, alice.id, "moved/s/t") == ["z.txt"]
    assert store.get_file(alice.id, "moved/s/t/z.txt") is not None
    assert store.get_entry(alice.id, "a") is None
    for sibling in ("a b", "a0", "ab", "a_", "a%"):
        assert names(store, alice.id, sibling) == ["keep.txt"]


def test_move_of_a_folder_leaves_other_users_alone(
    store: MetadataStore, alice: User, bob: User
) -> None:
    add_file(store, alice.id, "a/x.txt", "1")
    add_file(store, bob.id, "a/x.txt", "2")

    store.move(alice.id, "a", "b")

    assert names(store, bob.id, "a") == ["x.txt"]
    assert store.get_entry(bob.id, "b") is None


def test_move_refuses_an_existing_destination_without_overwrite(
    store: MetadataStore, alice: User
) -> None:
    add_file(store, alice.id, "a.txt", "1")
    add_file(store, alice.id, "b.txt", "2")

    with pytest.raises(PathExistsError):
        store.move(alice.id, "a.txt", "b.txt")

    assert names(store, alice.id, "") == ["a.txt", "b.txt"]


def test_move_with_overwrite_returns_the_replaced_blob(
    store: MetadataStore, alice: User
) -> None:
    add_file(store, alice.id, "a.txt", "1")
    add_file(store, alice.id, "b.txt", "2")

    replaced = store.move(alice.id, "a.txt", "b.txt", overwrite=True)

    assert replaced == ("2".ljust(32, "0"),)
    file = store.get_file(alice.id, "b.txt")
    assert file is not None and file.blob_id == "1".ljust(32, "0")


def test_move_with_overwrite_replaces_an_empty_folder(
    store: MetadataStore, alice: User
) -> None:
    add_file(store, alice.id, "src/f.txt", "1")
    store.add_dir(alice.id, "dst")

    store.move(alice.id, "src", "dst", overwrite=True)

    assert names(store, alice.id, "dst") == ["f.txt"]


@pytest.mark.parametrize(
    ("src", "dst", "error"),
    [
        ("f.txt", "full", IsADirectoryPathError),
        ("full", "g.txt", NotADirectoryPathError),
        ("empty", "full", DirectoryNotEmptyError),
        ("f.txt", "empty", IsADirectoryPathError),
    ],
    ids=["file-onto-folder", "folder-onto-file", "onto-full-folder", "onto-empty"],
)
def test_move_with_overwrite_refuses_what_rename_would(
    store: MetadataStore, alice: User, src: str, dst: str, error: type[Exception]
) -> None:
    add_file(store, alice.id, "f.txt", "1")
    add_file(store, alice.id, "g.txt", "2")
    add_file(store, alice.id, "full/inner.txt", "3")
    store.add_dir(alice.id, "empty")

    with pytest.raises(error):
        store.move(alice.id, src, dst, overwrite=True)

    assert names(store, alice.id, "") == ["empty", "f.txt", "full", "g.txt"]


@pytest.mark.parametrize("dst", ["a", "a/b", "a/b/c"], ids=["itself", "child", "deep"])
def test_move_refuses_a_folder_into_itself(
    store: MetadataStore, alice: User, dst: str
) -> None:
    store.add_dir(alice.id, "a/b", parents=True)

    with pytest.raises(InvalidPathError):
        store.move(alice.id, "a", dst)


def test_move_needs_the_destination_parent(store: MetadataStore, alice: User) -> None:
    add_file(store, alice.id, "a.txt", "1")

    with pytest.raises(PathNotFoundError):
        store.move(alice.id, "a.txt", "no/such/b.txt")


def test_move_of_a_missing_source_raises_not_found(
    store: MetadataStore, alice: User
) -> None:
    with pytest.raises(PathNotFoundError):
        store.move(alice.id, "nope", "b")


# Keys and failures


@pytest.mark.parametrize(
    "rel_path",
    [
        "/a",
        "a/",
        "a//b",
        "./a",
        "a/./b",
        "a/../b",
        "..",
        "a\x00b",
        "x" * (MAX_KEY_BYTES + 1),
    ],
    ids=[
        "absolute",
        "trailing",
        "double",
        "dot",
        "inner-dot",
        "dotdot",
        "up",
        "nul",
        "long",
    ],
)
def test_store_refuses_keys_not_in_normal_form(
    store: MetadataStore, alice: User, rel_path: str
) -> None:
    with pytest.raises(InvalidPathError):
        add_file(store, alice.id, rel_path, "1")


def test_store_accepts_a_key_at_the_length_limit(
    store: MetadataStore, alice: User
) -> None:
    rel_path = "/".join(["d" * 200] * 10)[: MAX_KEY_BYTES - 2] + ".x"

    add_file(store, alice.id, rel_path, "1")

    assert store.get_file(alice.id, rel_path) is not None


def test_concurrent_writers_of_one_user_all_succeed(
    store: MetadataStore, alice: User
) -> None:
    """SQLite must queue writers (BEGIN IMMEDIATE), not fail them as locked."""
    def write_many(worker: int) -> None:
        for index in range(15):
            add_file(store, alice.id, f"w{worker}/f{index}", f"{worker:02x}{index:02x}")

    run_together(4, write_many)  # raises what any writer raised

    assert names(store, alice.id, "") == ["w0", "w1", "w2", "w3"]
    assert all(len(names(store, alice.id, f"w{n}")) == 15 for n in range(4))


def test_timestamps_come_back_as_utc(store: MetadataStore, alice: User, clock) -> None:
    add_file(store, alice.id, "f", "1")

    file = store.get_file(alice.id, "f")

    assert file is not None and file.modified.utcoffset() == timedelta(0)
    assert file.modified == clock.current


def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(
    tmp_path,
) -> None:
    store = open_metadata_store(f"sqlite:///{tmp_path}/m.db")

    with store._engine.connect() as conn:  # noqa: SLF001 (reads pragmas only)
        pragmas = [
            conn.execute(text(f"PRAGMA {name}")).scalar()
            for name in ("journal_mode", "foreign_keys", "busy_timeout")
        ]
    store.close()

    assert pragmas == ["wal", 1, 5000]


def test_a_driver_error_on_the_raw_lookup_is_storage_error(
    store: MetadataStore, alice: User, database_url: str
) -> None:
    # The per-request user lookup runs on the driver's own connection, so it
    # sees the driver's errors, not SQLAlchemy's. PostgreSQL refuses a NUL in
    # text (psycopg's DataError); SQLite takes it and finds no such session.
    if database_url.startswith("sqlite"):
        assert store.get_user_in_session(alice.id, "no\x00such") == (alice, False)
        return
    with pytest.raises(StorageError, match="metadata database failed"):
        store.get_user_in_session(alice.id, "no\x00such")


def test_an_unreachable_database_raises_storage_error_without_sql(tmp_path) -> None:
    with pytest.raises(StorageError) as caught:
        open_metadata_store(f"sqlite:///{tmp_path}/no/such/folder/m.db")

    assert "SELECT" not in str(caught.value) and "CREATE" not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["mysql://root@localhost/x", "sqlite://", "not a url"], ids=str
)
def test_open_metadata_store_refuses_other_databases(url: str) -> None:
    with pytest.raises(ConfigError):
        open_metadata_store(url)


# put_many: the batch an archive import publishes


def _new(rel_path: str, n: int, *, create_only: bool = False) -> NewFile:
    return NewFile(rel_path, f"{n:032x}", n, "0" * 64, "text/plain", create_only)


def test_put_many_adds_folders_and_files_in_one_go(store: MetadataStore) -> None:
    owner = store.add_user("alice", "hash").id

    replaced = store.put_many(
        owner, ["x"], [_new("x/a.txt", 1), _new("d/e/b.txt", 2), _new("c.txt", 3)]
    )

    assert replaced == []
    assert {e.name for e in store.list_children(owner, "", None, 10).entries} == {
        "x", "d", "c.txt"}
    assert store.get_file(owner, "d/e/b.txt") is not None


def test_put_many_replaces_and_reports_the_old_blobs(store: MetadataStore) -> None:
    owner = store.add_user("alice", "hash").id
    store.put_many(owner, [], [_new("a.txt", 1)])

    replaced = store.put_many(owner, [], [_new("a.txt", 2), _new("b.txt", 3)])

    assert replaced == [f"{1:032x}"]
    row = store.get_file(owner, "a.txt")
    assert row is not None and row.blob_id == f"{2:032x}"


@pytest.mark.parametrize(
    ("first", "batch", "error"),
    [([_new("a.txt", 1)], [_new("b.txt", 2), _new("a.txt", 3, create_only=True)],
      PathExistsError),
     ([], [_new("f", 4), _new("f/g.txt", 5)], NotADirectoryPathError),
     ([_new("f", 6)], [_new("f/g.txt", 7)], NotADirectoryPathError),
     ([], [_new("p/q.txt", 8), _new("p", 9)], IsADirectoryPathError),
     ([_new("s/t.txt", 10)], [_new("s", 11)], IsADirectoryPathError)],
    ids=["create-only-taken", "file-then-beneath-it", "beneath-a-stored-file",
         "file-where-the-batch-made-a-folder", "file-at-a-stored-folder"],
)
def test_put_many_is_all_or_nothing(
    store: MetadataStore, first: list[NewFile], batch: list[NewFile],
    error: type[Exception],
) -> None:
    owner = store.add_user("alice", "hash").id
    store.put_many(owner, [], first)
    before = store.list_children(owner, "", None, 10).entries

    with pytest.raises(error):
        store.put_many(owner, ["new-folder"], batch)

    assert store.list_children(owner, "", None, 10).entries == before


# More rows than one executemany of put_many takes, so several go in.
MANY_ROWS = 1_234


def test_put_many_of_many_files_stores_each_once(store: MetadataStore) -> None:
    owner = store.add_user("alice", "hash").id
    batch = [_new(f"d{n % 7}/f{n:04d}.bin", n + 1) for n in range(MANY_ROWS)]

    store.put_many(owner, [], batch)

    stored = [
        entry.name
        for folder in range(7)
        for entry in store.list_children(owner, f"d{folder}", None, MANY_ROWS).entries
    ]
    assert sorted(stored) == sorted(f"f{n:04d}.bin" for n in range(MANY_ROWS))


def test_put_many_refused_at_its_last_file_keeps_none_of_the_others(
    store: MetadataStore,
) -> None:
    owner = store.add_user("alice", "hash").id
    store.put_many(owner, [], [_new("last.bin", 1)])
    batch = [_new(f"many/f{n:04d}.bin", n + 2) for n in range(MANY_ROWS)]
    batch.append(_new("last.bin", MANY_ROWS + 2, create_only=True))

    with pytest.raises(PathExistsError):
        store.put_many(owner, [], batch)

    assert [e.name for e in store.list_children(owner, "", None, 10).entries] == [
        "last.bin"]


def test_put_many_refuses_a_folder_at_a_files_name(store: MetadataStore) -> None:
    owner = store.add_user("alice", "hash").id

    with pytest.raises(IsADirectoryPathError):
        store.put_many(owner, ["d"], [_new("d", 1)])


# Storage quota: counted in the transaction that stores the file


def _put(store: MetadataStore, owner: int, rel_path: str, size: int, n: int,
         quota: int | None = 100) -> None:
    store.put_file(owner, rel_path, blob_id=f"{n:032x}", size=size, sha256="0" * 64,
                   content_type="x", quota_bytes=quota)


def test_a_put_past_the_quota_is_refused_and_changes_nothing(
    store: MetadataStore, alice: User
) -> None:
    _put(store, alice.id, "a", 60, 1)

    with pytest.raises(StorageQuotaError):
        _put(store, alice.id, "dir/b", 41, 2)

    assert store.get_file(alice.id, "dir/b") is None
    assert names(store, alice.id, "") == ["a"]
    assert store.used_bytes(alice.id) == 60
    _put(store, alice.id, "dir/b", 40, 3)  # exactly the quota fits
    assert store.used_bytes(alice.id) == 100


def test_replacing_counts_only_the_difference_and_shrinking_always_passes(
    store: MetadataStore, alice: User
) -> None:
    _put(store, alice.id, "a", 90, 1, quota=None)
    _put(store, alice.id, "b", 30, 2, quota=None)  # over a quota set later

    _put(store, alice.id, "a", 50, 3)  # shrinks: allowed although still over
    with pytest.raises(StorageQuotaError):
        _put(store, alice.id, "b", 60, 4)  # grows past 100

    assert store.used_bytes(alice.id) == 80
    _put(store, alice.id, "b", 50, 5)
    assert store.used_bytes(alice.id) == 100


def test_put_many_past_the_quota_is_refused_as_a_whole(
    store: MetadataStore, alice: User
) -> None:
    puts = [_new(f"i/{n}", n) for n in range(1, 15)]  # sizes 1..14: 105 bytes

    with pytest.raises(StorageQuotaError):
        store.put_many(alice.id, ["i"], puts, quota_bytes=100)

    assert names(store, alice.id, "") == []
    store.put_many(alice.id, ["i"], puts[:-1], quota_bytes=100)  # 91 bytes
    assert store.used_bytes(alice.id) == 91


def test_concurrent_puts_never_pass_the_quota_together(
    store: MetadataStore, alice: User
) -> None:
    """Eight writers race for room for five 20-byte files: exactly five win."""

    def write(worker: int) -> str:
        try:
            _put(store, alice.id, f"w{worker}", 20, worker + 1)
        except StorageQuotaError:
            return "refused"
        return "stored"

    outcomes = run_together(8, write)

    assert sorted(outcomes) == ["refused"] * 3 + ["stored"] * 5
    assert store.used_bytes(alice.id) == 100
