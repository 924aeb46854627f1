"""Concurrent attack scenarios R1-R6 against `Root` (Part B of the case conventions).

An attacker process swaps names inside the root with renameat2(RENAME_EXCHANGE)
while a server thread keeps issuing requests. Every scenario runs for both resolvers
and both symlink policies, and fails on one escape: outside content handed back,
anything under `T/outside` read or changed (snapshot and inotify watch), or a new
entry in `T`. A run is void, and fails as such, when the attacker never swapped or
fewer than 1% of the requests succeeded with inside content: then the race was never
exercised.

Part B bounds a scenario at 20,000 requests or 20 s. CI runs at most 3,000 requests
or 4 s per scenario, resolver and policy, which keeps this module near 90 s on two
cores; set STRONGROOM_RACE_LONG=1 for the full bound. Run with `pytest -s` to see
the counts each scenario reports.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import multiprocessing
import os
import platform
import random
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from confine_harness import (
    OP_TIMEOUT_SECONDS,
    POLICIES,
    SECRET_MARKERS,
    CaseTree,
    OpenRoot,
)

from proof_figures import record
from strongroom.confine import Root
from strongroom.errors import PathError, PathNotFoundError, ResolveRetryError

pytestmark = pytest.mark.race

LONG_RUN = os.environ.get("STRONGROOM_RACE_LONG") == "1"
# Part B: 20,000 requests or 20 s per scenario. The CI default keeps the whole module
# near 90 s on two cores (8 scenarios x 2 resolvers x 2 policies).
MAX_REQUESTS = 20_000 if LONG_RUN else 3_000
MAX_SECONDS = 20.0 if LONG_RUN else 4.0
# A void run is repeated this many times before the test fails as void.
VOID_RETRIES = 3
# Part B's sanity floor: below it the race was never exercised and the run is void.
SANITY_FLOOR = 0.01
# linux/fs.h; renameat2(2) swaps both names atomically.
RENAME_EXCHANGE = 2
# renameat2's syscall number on x86_64, for a libc without the wrapper.
SYS_RENAMEAT2_X86_64 = 316
# The attacker checks that its link is still planted once per this many swaps.
REPLANT_EVERY_ROUNDS = 64
# After each step the attacker holds the new state for a random 0-150 us, spinning
# rather than sleeping. A tight loop flips names several times during one Python
# request, so almost every request is refused and Part B's sanity floor voids the
# run; random holds keep swaps landing mid-request and leave clean windows too.
MAX_HOLD_SECONDS = 150e-6
# Where a successful request costs far more than a refusal, the exchanger rests this
# many times longer with the names in place than swapped. With even holds the server
# fits dozens of cheap refusals into each swapped window, successes fall near Part
# B's 1% floor and runs go void. Measured here: an R2 durable write costs up to 500
# refusals, an R5 listing of 50 entries about 50.
R2_REST_FACTOR = 100.0
R5_REST_FACTOR = 30.0

_libc = ctypes.CDLL(None, use_errno=True)


# Scenarios ------------------------------------------------------------------------


@pytest.mark.parametrize("swap_with", ["evil", "evil-abs"])
@pytest.mark.parametrize("policy", POLICIES)
def test_r1_directory_swapped_for_a_link_never_serves_outside_content(
    tree: CaseTree, open_root: OpenRoot, policy: str, swap_with: str
) -> None:
    """CVE-2018-15664 shape: `pub` <-> a link out, mid-resolution, on reads."""
    tree.build(R1_TREE)
    root = open_root(symlinks=policy)
    paths = ("pub/data.txt", "pub/../pub/../pub/../pub/data.txt")

    def serve(report: RaceReport, step: int) -> None:
        path = paths[step % 2]
        report.attempt(f"GET {path}", lambda: root.read_bytes(path), IS_PUBLIC)

    swap = Exchanger(tree.root_fd, "pub", tree.root_fd, swap_with)
    run_race(tree, root, policy, f"R1 pub<->{swap_with}", serve, swap)


@pytest.mark.parametrize("policy", POLICIES)
def test_r2_directory_swapped_for_a_link_never_receives_writes(
    tree: CaseTree, open_root: OpenRoot, policy: str
) -> None:
    """rsync/tar shape: every mutation keeps landing inside or is refused."""
    tree.build([*R1_TREE, {"path": "stash/sub", "type": "dir", "outside": True}])
    for n in range(MAX_REQUESTS // 5 + 2):
        tree.add({"path": f"staging/f-{n}", "type": "file"})
    root = open_root(symlinks=policy)

    def serve(report: RaceReport, step: int) -> None:
        n, kind = divmod(step, 5)
        if kind == 0:
            report.attempt("PUT", lambda: root.write_bytes(f"pub/up-{n}.txt", b"up"))
        elif kind == 1:
            report.attempt(
                "create",
                lambda: root.write_bytes(f"pub/new-{n}.txt", b"new", exclusive=True),
            )
        elif kind == 2:
            report.attempt("mkdir", lambda: root.mkdir(f"pub/d-{n}"))
        elif kind == 3:
            report.attempt(
                "rename", lambda: root.rename(f"staging/f-{n}", f"pub/f-{n}")
            )
        else:
            report.attempt("DELETE", lambda: root.remove(f"pub/up-{n - 1}.txt"))

    swap = Exchanger(tree.root_fd, "pub", tree.root_fd, "evil", R2_REST_FACTOR)
    run_race(tree, root, policy, "R2 pub<->evil mutations", serve, swap)


@pytest.mark.parametrize("policy", POLICIES)
def test_r3_final_component_flipped_to_a_link_leaves_the_victim_alone(
    tree: CaseTree, open_root: OpenRoot, policy: str
) -> None:
    """filelock CVE-2025-68146 shape: `report.txt` <-> a link to an outside file."""
    victim = plant_r3_victim(tree)
    tree.build(R3_TREE)
    root = open_root(symlinks=policy)
    serve = r3_server(root, victim, new_file_mode(root))

    rounds = itertools.count(1)

    def attack() -> None:
        try:
            exchange(tree.root_fd, "report.txt", tree.root_fd, "report.lnk")
        except FileNotFoundError:
            replant_victim_link(tree.root_fd)
        if next(rounds) % REPLANT_EVERY_ROUNDS == 0:
            replant_victim_link(tree.root_fd)

    run_race(tree, root, policy, "R3 report.txt<->report.lnk", serve, attack)
    assert_victim_untouched(tree, victim)


@pytest.mark.parametrize("policy", POLICIES)
def test_r3h_final_component_replaced_by_a_hard_link_leaves_the_victim_alone(
    tree: CaseTree, open_root: OpenRoot, policy: str
) -> None:
    """Variant R3h: the attacker links the victim in; the nlink rule must hold."""
    victim = plant_r3_victim(tree)
    tree.build(R3_TREE)
    root = open_root(symlinks=policy, hardlinks="deny")
    serve = r3_server(root, victim, new_file_mode(root))

    def attack() -> None:
        fd = tree.root_fd
        remove_if_present(fd, "tmp-h")
        os.link("victim.txt", "tmp-h", src_dir_fd=tree.outside_fd, dst_dir_fd=fd)
        os.rename("tmp-h", "report.txt", src_dir_fd=fd, dst_dir_fd=fd)
        write_file(fd, "tmp-r", b"PUBLIC")
        os.rename("tmp-r", "report.txt", src_dir_fd=fd, dst_dir_fd=fd)

    run_race(tree, root, policy, "R3h hard link to victim", serve, attack)
    assert_victim_untouched(tree, victim)


@pytest.mark.parametrize("policy", POLICIES)
def test_r4_directory_moved_out_during_dotdot_never_reaches_its_new_parent(
    tree: CaseTree, open_root: OpenRoot, policy: str
) -> None:
    """Kernel rename_attack_test shape: `a/c` <-> `T/b` while `..` is resolved.

    A downward-only write into the moved directory is the accepted limitation of
    every descriptor-based design (a dedicated mount removes it); it is counted and
    reported, not failed.
    """
    tree.build(
        [
            {"path": "a/c", "type": "dir"},
            {"path": "a/x.txt", "type": "file", "content": "PUBLIC"},
        ]
    )
    os.mkdir("b", dir_fd=tree.t_fd)
    write_file(tree.t_fd, "x.txt", b"OUTSIDE-SECRET-R4")
    root = open_root(symlinks=policy)
    long_path = "a/c/" + "../c/" * 30 + "../x.txt"

    def serve(report: RaceReport, step: int) -> None:
        kind = step % 4
        if kind == 0:
            report.attempt("GET ..", lambda: root.read_bytes("a/c/../x.txt"), IS_PUBLIC)
        elif kind == 1:
            report.attempt("GET long ..", lambda: root.read_bytes(long_path), IS_PUBLIC)
        elif kind == 2:
            name = f"a/c/../w-{step}.txt"
            report.attempt("PUT ..", lambda: root.write_bytes(name, b"w"))
        else:
            # Downward only: landing in the moved directory is the accepted limit,
            # counted when the new file is seen under T/b right after the call.
            name = f"a/c/n-{step}"
            written = report.attempt("PUT down", lambda: root.write_bytes(name, b"n"))
            if written and exists(tree.t_fd, f"b/n-{step}"):
                report.limitation += 1

    swap = Exchanger(tree.t_fd, "root/a/c", tree.t_fd, "b")
    run_race(
        tree,
        root,
        policy,
        "R4 a/c<->T/b",
        serve,
        swap,
        watch_extra=[(tree.t_fd, "x.txt")],
        t_names=("root", "outside", "b", "x.txt"),
        describe_attack=describe_r4_filesystem,
    )
    assert read_file(tree.t_fd, "x.txt") == b"OUTSIDE-SECRET-R4"


@pytest.mark.parametrize("policy", POLICIES)
def test_r5_listing_a_swapped_directory_never_reports_outside_metadata(
    tree: CaseTree, open_root: OpenRoot, policy: str
) -> None:
    """Go CVE-2026-27139 shape: entries stat-ed by path leak the mirror's metadata."""
    tree.build(R5_TREE)
    for name in R5_NAMES:
        os.chmod(tree.outside_path / "mirror" / name, 0o600)
    mirror_inos = {os.stat(tree.outside_path / "mirror" / n).st_ino for n in R5_NAMES}
    mirror_inos.add(os.stat(tree.outside_path / "mirror").st_ino)
    root = open_root(symlinks=policy)

    def leaked(value: Any) -> str | None:
        entries = value if isinstance(value, list) else [value]
        for entry in entries:
            if entry.size == 31337 or stat.S_IMODE(entry.mode) == 0o600:
                return f"{entry.name}: size {entry.size} mode {entry.mode:o}"
            if entry.ino in mirror_inos:
                return f"{entry.name}: inode {entry.ino} belongs to outside/mirror"
        return None

    def serve(report: RaceReport, step: int) -> None:
        if step % 2 == 0:
            report.attempt("list d", lambda: root.list_dir("d"), leaked)
        else:
            report.attempt("stat d/f17", lambda: root.stat("d/f17"), leaked)

    swap = Exchanger(tree.root_fd, "d", tree.root_fd, "dlink", R5_REST_FACTOR)
    run_race(tree, root, policy, "R5 d<->dlink", serve, swap)


@pytest.mark.parametrize("policy", POLICIES)
def test_r6_recursive_delete_and_moves_never_reach_a_swapped_in_link(
    tree: CaseTree, open_root: OpenRoot, policy: str
) -> None:
    """bpo-4489 shape: `tree/sNN` <-> `tree/sNN.lnk` under remove_tree and rename.

    The server rebuilds the tree with the product's own calls after each recursive
    delete; the attacker, who may write inside, plants the links again.
    """
    tree.build(r6_tree())
    for n in range(MAX_REQUESTS + 1):
        tree.add({"path": f"staging/g-{n}", "type": "file"})
    root = open_root(symlinks=policy)

    def serve(report: RaceReport, step: int) -> None:
        phase = step % (R6_DIRS + 1)
        if phase == 0:
            report.attempt("remove_tree", lambda: root.remove_tree("tree"))
            rebuild_r6_tree(report, root)
        else:
            dest = f"tree/s{phase - 1:02d}/g-{step}"
            report.attempt("rename", lambda: root.rename(f"staging/g-{step}", dest))

    rounds = itertools.count()

    def attack() -> None:
        nn = f"tree/s{next(rounds) % R6_DIRS:02d}"
        try:
            exchange(tree.root_fd, nn, tree.root_fd, nn + ".lnk")
        except FileNotFoundError:
            os.symlink("../../outside/keep", nn + ".lnk", dir_fd=tree.root_fd)

    run_race(tree, root, policy, "R6 tree/sNN<->sNN.lnk", serve, attack)


# Layouts ------------------------------------------------------------------------


R1_TREE: list[dict[str, Any]] = [
    {"path": "pub/data.txt", "type": "file", "content": "PUBLIC"},
    {"path": "evil", "type": "symlink", "target": "../outside/stash"},
    {"path": "evil-abs", "type": "symlink", "target": "{OUTSIDE}/stash"},
    {
        "path": "stash/data.txt",
        "type": "file",
        "outside": True,
        "content": "OUTSIDE-SECRET-R1",
    },
]
R3_TREE: list[dict[str, Any]] = [
    {"path": "report.txt", "type": "file", "content": "PUBLIC"},
    {"path": "report.lnk", "type": "symlink", "target": "../outside/victim.txt"},
]
# Part B pads the victim to 7777 bytes so a leaked stat is recognisable by size.
R3_VICTIM_BYTES = 7777
R3_VICTIM_LINK = "../outside/victim.txt"
R5_NAMES = [f"f{i:02d}" for i in range(50)]
R5_TREE: list[dict[str, Any]] = [
    *({"path": f"d/{n}", "type": "file", "content": "0123456789"} for n in R5_NAMES),
    {"path": "dlink", "type": "symlink", "target": "../outside/mirror"},
    *(
        {
            "path": f"mirror/{n}",
            "type": "file",
            "outside": True,
            "content": "OUTSIDE-SECRET-R5".ljust(31337, "."),
        }
        for n in R5_NAMES
    ),
]
R6_DIRS = 20
R6_FILES = 10


def r6_tree() -> list[dict[str, Any]]:
    """Return the R6 layout: 20 dirs of 10 files, a link out beside each dir."""
    entries: list[dict[str, Any]] = [
        {"path": f"keep/f{k}", "type": "file", "outside": True} for k in range(R6_FILES)
    ]
    for nn in range(R6_DIRS):
        entries.extend(
            {"path": f"tree/s{nn:02d}/f{k}", "type": "file"} for k in range(R6_FILES)
        )
        entries.append(
            {
                "path": f"tree/s{nn:02d}.lnk",
                "type": "symlink",
                "target": "../../outside/keep",
            }
        )
    return entries


def rebuild_r6_tree(report: RaceReport, root: Root) -> None:
    """Recreate the R6 directories and files through the confined root."""
    report.attempt("mkdir tree", lambda: root.mkdir("tree", exist_ok=True))
    for nn in range(R6_DIRS):
        folder = f"tree/s{nn:02d}"
        report.attempt("mkdir", lambda f=folder: root.mkdir(f, exist_ok=True))
        for k in range(R6_FILES):
            path = f"{folder}/f{k}"
            report.attempt("PUT", lambda p=path: root.write_bytes(p, p.encode()))


# Race machinery ---------------------------------------------------------------


@dataclass
class RaceReport:
    """The counts Part B asks every scenario to report."""

    scenario: str
    attempts: int = 0
    inside: int = 0
    refused: int = 0
    not_found: int = 0
    eagain: int = 0
    limitation: int = 0
    slowest_seconds: float = 0.0
    wall_seconds: float = 0.0
    escapes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    refusals: Counter[str] = field(default_factory=Counter)

    def attempt(
        self,
        label: str,
        request: Callable[[], object],
        leaked: Callable[[Any], str | None] | None = None,
    ) -> bool:
        """Issue one request and count its outcome; return True when it succeeded.

        `leaked` inspects a successful result and names what in it came from
        outside (or is not the inside content); every result is also searched for
        the outside markers.
        """
        self.attempts += 1
        started = time.monotonic()
        try:
            value = request()
        except ResolveRetryError:
            self.eagain += 1
            return False
        except PathNotFoundError:
            self.not_found += 1
            return False
        except PathError as exc:
            self.refused += 1
            self.refusals[f"{label}: {type(exc).__name__}"] += 1
            return False
        except Exception as exc:  # a crash is a failure of the run, not a refusal
            self.failures.append(f"{label}: {type(exc).__name__}: {exc}")
            return False
        finally:
            self.slowest_seconds = max(self.slowest_seconds, time.monotonic() - started)
        problem = _marker_in(value) or (leaked(value) if leaked else None)
        if problem:
            self.escapes.append(f"{label}: {problem}")
            return False
        self.inside += 1
        return True

    def summary(self, attacker: Attacker, resolver: str, policy: str) -> str:
        """Return the Part B report for `pytest -s`."""
        weaker = " (two-rename fallback: weaker)" if attacker.weaker else ""
        return (
            f"\n{self.scenario} [{resolver}/{policy}]: attempts={self.attempts} "
            f"wall={self.wall_seconds:.2f}s inside={self.inside} "
            f"refused={self.refused} not_found={self.not_found} "
            f"eagain_exhausted={self.eagain} accepted_limitation={self.limitation} "
            f"escapes={len(self.escapes)} {self.escapes[:5]} "
            f"attacker_rounds={attacker.rounds}{weaker} "
            f"attacker_errors={dict(attacker.errors)} "
            f"slowest={self.slowest_seconds:.3f}s "
            f"top_refusals={self.refusals.most_common(3)}"
        )


class Attacker:
    """Run one attack step in a loop, in a forked process, until stopped.

    A process rather than a thread: a thread shares the GIL with the server, which
    then runs long stretches while the names sit still in one state, and the race
    is barely exercised.
    """

    def __init__(self, step: Callable[[], None]) -> None:
        context = multiprocessing.get_context("fork")
        self._stop = context.RawValue(ctypes.c_bool, False)
        self._rounds = context.RawValue(ctypes.c_longlong, 0)
        self._weaker = context.RawValue(ctypes.c_bool, False)
        self._errors = context.RawArray(ctypes.c_longlong, 256)
        self._process = context.Process(
            target=self._loop, args=(step,), name="attacker", daemon=True
        )

    @property
    def rounds(self) -> int:
        """Return how many attack steps completed."""
        return int(self._rounds.value)

    @property
    def weaker(self) -> bool:
        """Tell whether the swaps fell back to plain renames."""
        return bool(self._weaker.value)

    @property
    def errors(self) -> Counter[str]:
        """Return the attack steps that failed, by errno name."""
        return Counter(
            {
                errno.errorcode.get(code, str(code)): n
                for code, n in enumerate(self._errors)
                if n
            }
        )

    def __enter__(self) -> Attacker:
        self._process.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.value = True
        self._process.join(OP_TIMEOUT_SECONDS)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()

    def _loop(self, step: Callable[[], None]) -> None:
        rounds = 0
        holds = random.Random(rounds)
        while not self._stop.value:
            try:
                step()
                rounds += 1
                self._rounds.value = rounds
            except OSError as exc:
                self._errors[min(exc.errno or 0, 255)] += 1
            scale = getattr(step, "hold_scale", 1.0)
            _spin(holds.random() * MAX_HOLD_SECONDS * scale)
        self._weaker.value = bool(getattr(step, "weaker", False))


class Exchanger:
    """Swap two names atomically, or with three renames where exchange is missing."""

    def __init__(
        self,
        fd_a: int,
        name_a: str,
        fd_b: int,
        name_b: str,
        rest_factor: float = 1.0,
    ) -> None:
        self.names = (fd_a, name_a, fd_b, name_b)
        self.rest_factor = rest_factor
        self.weaker = False
        self.swapped = False

    @property
    def hold_scale(self) -> float:
        """Tell the attacker how long to hold: longer once names are back."""
        return 1.0 if self.swapped else self.rest_factor

    def __call__(self) -> None:
        self._swap()
        self.swapped = not self.swapped

    def _swap(self) -> None:
        fd_a, name_a, fd_b, name_b = self.names
        if not self.weaker:
            try:
                exchange(fd_a, name_a, fd_b, name_b)
                return
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOSYS):
                    raise
                self.weaker = True
        os.rename(name_a, name_a + ".swap", src_dir_fd=fd_a, dst_dir_fd=fd_a)
        os.rename(name_b, name_a, src_dir_fd=fd_b, dst_dir_fd=fd_a)
        os.rename(name_a + ".swap", name_b, src_dir_fd=fd_a, dst_dir_fd=fd_b)


def run_race(
    tree: CaseTree,
    root: Root,
    policy: str,
    scenario: str,
    serve: Callable[[RaceReport, int], None],
    attack: Callable[[], None],
    *,
    watch_extra: Iterable[tuple[int, str]] = (),
    t_names: Iterable[str] = ("root", "outside"),
    describe_attack: Callable[[Attacker], str] | None = None,
) -> RaceReport:
    """Serve requests while the attacker swaps; print the report; assert no escape.

    Requests run on a worker thread so that one that blocks fails the run after
    the time bound plus five seconds instead of hanging the suite. A void run (the
    attacker never swapped, or too few requests met the inside state, which a busy
    machine's scheduling can cause) is run again, up to `VOID_RETRIES` times; an
    escape in any run fails at once.
    """
    before = tree.snapshot()
    for attempt in range(1, VOID_RETRIES + 1):
        report, attacker = _one_race(
            tree, root, policy, scenario, serve, attack, before,
            watch_extra=watch_extra, t_names=t_names,
            describe_attack=describe_attack,
        )
        floor = SANITY_FLOOR * report.attempts
        if attacker.rounds > 0 and report.inside >= floor:
            return report
        print(f"  void run {attempt} of {VOID_RETRIES}: {report.inside} inside, "
              f"{attacker.rounds} swaps {attacker.errors}")
    pytest.fail(f"void run, {VOID_RETRIES} times: the race was never exercised")


def _one_race(
    tree: CaseTree,
    root: Root,
    policy: str,
    scenario: str,
    serve: Callable[[RaceReport, int], None],
    attack: Callable[[], None],
    before: Mapping[str, tuple[object, ...]],
    *,
    watch_extra: Iterable[tuple[int, str]],
    t_names: Iterable[str],
    describe_attack: Callable[[Attacker], str] | None,
) -> tuple[RaceReport, Attacker]:
    report = RaceReport(scenario)
    watch = tree.watch_outside(*watch_extra)

    with Attacker(attack) as attacker:
        server = threading.Thread(target=_serve_until_bound, args=(report, serve))
        server.daemon = True
        server.start()
        server.join(MAX_SECONDS + 2 * OP_TIMEOUT_SECONDS)
    watch.close()

    print(report.summary(attacker, root.resolver, policy))
    record("races", attempts=report.attempts, escapes=len(report.escapes),
           refused=report.refused, crashed=len(report.failures),
           attacker_rounds=attacker.rounds, scenario_runs=1)
    if describe_attack is not None:
        print(f"  {describe_attack(attacker)}")
    assert not server.is_alive(), "a request blocked past the bound plus 5 s"
    assert not report.escapes, f"escapes: {report.escapes[:5]}"
    tree.assert_contained(before, watch, t_names=t_names)
    assert not report.failures, f"requests crashed: {report.failures[:5]}"
    assert report.slowest_seconds < OP_TIMEOUT_SECONDS
    return report, attacker


def _serve_until_bound(
    report: RaceReport, serve: Callable[[RaceReport, int], None]
) -> None:
    started = time.monotonic()
    step = 0
    try:
        while (
            report.attempts < MAX_REQUESTS and time.monotonic() - started < MAX_SECONDS
        ):
            serve(report, step)
            step += 1
    except Exception as exc:  # a bug in the scenario itself must fail the run
        report.failures.append(f"server loop: {type(exc).__name__}: {exc}")
    report.wall_seconds = time.monotonic() - started


def exchange(fd_a: int, name_a: str, fd_b: int, name_b: str) -> None:
    """Swap two names with renameat2(RENAME_EXCHANGE)."""
    args = (fd_a, os.fsencode(name_a), fd_b, os.fsencode(name_b), RENAME_EXCHANGE)
    wrapper = getattr(_libc, "renameat2", None)
    if wrapper is not None:
        result = wrapper(*args)
    elif platform.machine() == "x86_64":
        result = _libc.syscall(SYS_RENAMEAT2_X86_64, *args)
    else:
        raise OSError(errno.ENOSYS, "renameat2 is not reachable from this libc")
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), name_a)


def describe_r4_filesystem(attacker: Attacker) -> str:
    """Say whether the attacker could move a directory across the root boundary."""
    if attacker.errors["EXDEV"]:
        return "R4 precondition: moves out of the root failed with EXDEV (own mount)"
    return "R4 precondition: moves out of the root succeeded (shared filesystem)"


# R3 helpers ---------------------------------------------------------------------


@dataclass(frozen=True)
class Victim:
    """What the R3 victim looked like before the race."""

    ino: int
    mode: int
    size: int
    mtime_ns: int


def plant_r3_victim(tree: CaseTree) -> Victim:
    """Create outside/victim.txt: secret, mode 0600, padded to 7777 bytes."""
    content = b"OUTSIDE-SECRET-R3".ljust(R3_VICTIM_BYTES, b".")
    write_file(tree.outside_fd, "victim.txt", content)
    path = tree.outside_path / "victim.txt"
    os.chmod(path, 0o600)
    info = os.stat(path)
    return Victim(info.st_ino, info.st_mode, info.st_size, info.st_mtime_ns)


def r3_server(
    root: Root, victim: Victim, product_mode: int
) -> Callable[[RaceReport, int], None]:
    """Return the R3 request rotation: GET, PUT, stat, DELETE then re-create."""

    def stat_leaks(entry: Any) -> str | None:
        mode_leaks = stat.S_IMODE(entry.mode) == 0o600 and product_mode != 0o600
        if entry.size == R3_VICTIM_BYTES or entry.ino == victim.ino or mode_leaks:
            return f"stat saw size {entry.size} mode {entry.mode:o} ino {entry.ino}"
        return None

    def serve(report: RaceReport, step: int) -> None:
        kind = step % 4
        if kind == 0:
            report.attempt("GET", lambda: root.read_bytes("report.txt"), R3_BODIES)
        elif kind == 1:
            report.attempt("PUT", lambda: root.write_bytes("report.txt", b"X"))
        elif kind == 2:
            report.attempt("stat", lambda: root.stat("report.txt"), stat_leaks)
        elif report.attempt("DELETE", lambda: root.remove("report.txt")):
            report.attempt(
                "create",
                lambda: root.write_bytes("report.txt", b"PUBLIC", exclusive=True),
            )

    return serve


def replant_victim_link(root_fd: int) -> None:
    """Put the link to the victim back when neither R3 name holds it."""
    names = ("report.txt", "report.lnk")
    if any(_is_link(root_fd, name) for name in names):
        return
    remove_if_present(root_fd, "report.tmp")
    os.symlink(R3_VICTIM_LINK, "report.tmp", dir_fd=root_fd)
    os.rename("report.tmp", "report.lnk", src_dir_fd=root_fd, dst_dir_fd=root_fd)


def assert_victim_untouched(tree: CaseTree, victim: Victim) -> None:
    """Check content, size, mode and mtime of the R3 victim."""
    info = os.stat(tree.outside_path / "victim.txt")

    assert (info.st_ino, info.st_mode, info.st_size, info.st_mtime_ns) == (
        victim.ino,
        victim.mode,
        victim.size,
        victim.mtime_ns,
    )


def new_file_mode(root: Root) -> int:
    """Return the permission bits the product gives a file it creates."""
    root.write_bytes("mode-probe", b"")
    mode = stat.S_IMODE(root.stat("mode-probe").mode)
    root.remove("mode-probe")
    return mode


# Small helpers ------------------------------------------------------------------


def body_in(*allowed: bytes) -> Callable[[Any], str | None]:
    """Return a check that a successful read gave one of the inside contents."""

    def check(body: Any) -> str | None:
        return None if body in allowed else f"body {body[:40]!r}"

    return check


IS_PUBLIC = body_in(b"PUBLIC")
# R3's report.txt holds PUBLIC, or X once a PUT has replaced it.
R3_BODIES = body_in(b"PUBLIC", b"X")


def _spin(seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass


def _marker_in(value: object) -> str | None:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else repr(value)
    found = [marker for marker in SECRET_MARKERS if marker in text]
    return f"handed back {found}: {text[:60]!r}" if found else None


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return False
    return stat.S_ISLNK(mode)


def exists(dir_fd: int, rel: str) -> bool:
    """Tell whether a name exists, without following a final link."""
    try:
        os.stat(rel, dir_fd=dir_fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def remove_if_present(dir_fd: int, name: str) -> None:
    """Unlink a name if it is there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


def write_file(dir_fd: int, name: str, data: bytes) -> None:
    """Create or truncate a regular file beside a directory descriptor."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, 0o644, dir_fd=dir_fd)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read_file(dir_fd: int, name: str) -> bytes:
    """Return a regular file's bytes without following a link."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        return os.read(fd, 1 << 16)
    finally:
        os.close(fd)
