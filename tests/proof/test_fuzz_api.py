"""Fuzz every operation of the app's own OpenAPI document over real HTTP (issue 7).

A real server runs on loopback (tests/api/live_server.py); schemathesis loads its
/openapi.json from that server and generates requests for every operation, both
inputs the document allows (positive) and inputs it forbids (negative). Each
answer is judged by schemathesis' conformance checks and by our own contract:

- no 5xx and no hang (every request has a timeout, every loop a count);
- every 4xx is `application/problem+json` carrying the problem fields;
- the status and content type of every answer are ones the document declares;
- the `outside` folder beside the spaces is the same at the end (no-follow
  snapshot).

Tokens: alice (a user) for most operations, bob (an admin) for /admin; a second
pass sends no token, a garbage one and a forged one to every operation. A
stateful pass walks upload, download, move, share and delete through the API with
schemathesis' own data in the paths and bodies.

Failures are collected rather than raised at the first one, so one run reports
every operation that misbehaves; the test fails at the end, listing them with a
curl command that reproduces each.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import pytest
import requests
import schemathesis
from forged_tokens import alg_none, expired, server_secret, user_id_of
from hypothesis import HealthCheck, Phase, given, reject, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky, Unsatisfiable
from live_server import (
    ALICE_PASSWORD,
    BOB_PASSWORD,
    CONFIG,
    PROBLEM_JSON,
    SPACE_DIRS,
    LiveServer,
    run_server,
    snapshot_tree,
)
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ensure_resource_availability,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    use_after_free,
)

from proof_figures import pick, record
from strongroom.auth import PasswordHasher
from strongroom.config import load_settings
from strongroom.storage import open_metadata_store

FAMILY = "fuzz_api"
USERS = (("alice", ALICE_PASSWORD, "user"), ("bob", BOB_PASSWORD, "admin"))
# Generated examples per operation and generation mode.
EXAMPLES = pick(short=5, long=250)
# Stateful scenarios, and calls in each (the first is a root operation, the rest
# mostly follow the document's links: upload then download, move, share...).
SCENARIOS = pick(short=15, long=300)
STEPS_PER_SCENARIO = pick(short=6, long=12)
# A stateful run that stops on `Flaky` goes on from the next seed, this often.
MAX_STATEFUL_ROUNDS = 20
# The forced component walk doubles the run; the long profile covers it too.
RESOLVERS = pick(short=("openat2",), long=("openat2", "walk"))
# A request that takes longer than this on loopback counts as a hang.
REQUEST_TIMEOUT_SECONDS = 10.0
# The whole family stops generating after this long, whatever is left.
RUN_BUDGET_SECONDS = pick(short=70.0, long=600.0)
# Real spaces (each kind, read-only, not alice's) and one that does not exist,
# so that generated paths reach the confined root, not only the 404 for a space.
SPACE_CHOICES = ("lab", "home", "team", "ops", "bob", "docs-ro", "no-such-space")
# The upload and every operation its OpenAPI links lead to (files.py).
FILE_LIFE_OPERATIONS = ["upload", "download", "download_head", "get_meta", "move",
                        "create_share", "delete_file"]
PROBLEM_FIELDS = ("type", "title", "status", "code", "detail")
# The operations that end the caller's session: fuzzed last, with a fresh login
# before every other operation anyway.
SESSION_ENDING = ("POST /api/v1/logout",)
# Schemathesis' checks that apply to every answer. `negative_data_rejection` is
# added for negative inputs only: it asks that a forbidden input gets a 4xx.
# Left out: `positive_data_acceptance` (a valid-looking path may name no file,
# so a 404 for an allowed input is correct) and `ignored_auth` (the token pass
# below checks authentication with tokens we know are bad). The stateful pass adds
# `use_after_free` and `ensure_resource_availability`, which follow the links.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

# What a forbidden input may be answered with: schemathesis' default list, plus
# 412 (tus 1.0 answers a missing or other Tus-Resumable version with it) and 413
# (an Upload-Length over the limit), minus 5xx (never acceptable here).
NEGATIVE_INPUT_STATUSES = ["400", "401", "403", "404", "405", "406", "409", "412",
                           "413", "415", "422", "428", "429"]

pytestmark = pytest.mark.slow

# Every operation any pass sent a request to ("METHOD /path"), for the report.
_OPERATIONS_REACHED: set[str] = set()

# A tus chunk (application/offset+octet-stream) is raw bytes on the wire, as an
# octet-stream is; schemathesis knows only the latter by name.
schemathesis.serializer.alias("application/offset+octet-stream",
                              "application/octet-stream")


@dataclass
class FuzzRun:
    """What one pass sent and what went wrong, keyed by operation."""

    deadline: float
    requests: int = 0
    failure_count: int = 0
    cut_short: bool = False
    scenarios: int = 0
    flaky_rounds: int = 0
    operations: set[str] = field(default_factory=set)
    failures: dict[str, list[str]] = field(default_factory=dict)

    def is_out_of_time(self) -> bool:
        """Whether the pass has spent its budget (remembered for the report)."""
        self.cut_short = self.cut_short or time.monotonic() > self.deadline
        return self.cut_short

    def fail(self, label: str, what: str) -> None:
        """Count a failure; keep the first few per operation, enough to act on."""
        self.failure_count += 1
        kept = self.failures.setdefault(label, [])
        if len(kept) < 3:
            kept.append(what)

    def report(self) -> str:
        """Return every failure, one operation per paragraph."""
        return "\n\n".join(
            f"{label}:\n" + "\n".join(f"  - {what}" for what in whats)
            for label, whats in sorted(self.failures.items())
        )


@pytest.fixture(scope="session", autouse=True)
def _record_operations_reached() -> Iterator[None]:
    """Report, once for the family, how many operations the fuzzing reached.

    The report adds up numbers with the same key across records, so the
    per-pass records leave this out.
    """
    yield
    record(FAMILY, operations=len(_OPERATIONS_REACHED))


@pytest.fixture(scope="module", params=RESOLVERS)
def fuzz_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A server with alice and bob, and a sentinel tree in the `outside` folder."""
    parent = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    for name in (*SPACE_DIRS, "lab-backup"):
        (parent / name).mkdir()
    _plant_outside(parent / "outside")
    config_text = CONFIG.format(data_dir=parent / "data")
    with run_server(parent, config_text, request.param, USERS) as server:
        yield server


@pytest.fixture(scope="module")
def schema(fuzz_server: LiveServer) -> schemathesis.BaseSchema:
    """The OpenAPI document as the live server publishes it."""
    config = schemathesis.Config.from_dict({"checks": {"negative_data_rejection": {
        "expected-statuses": NEGATIVE_INPUT_STATUSES}}})
    return schemathesis.openapi.from_url(
        f"{_base_url(fuzz_server)}/openapi.json", config=config,
        timeout=REQUEST_TIMEOUT_SECONDS,
    )


def test_every_operation_keeps_its_documented_contract(
    fuzz_server: LiveServer, schema: schemathesis.BaseSchema
) -> None:
    """Valid tokens, positive and negative inputs: no 5xx, no undocumented answer."""
    outside_before = snapshot_tree(fuzz_server.parent / "outside")
    run = FuzzRun(deadline=time.monotonic() + RUN_BUDGET_SECONDS * 0.6)

    for operation in _operations_in_order(schema):
        user = "bob" if operation.path.startswith("/api/v1/admin") else "alice"
        _log_in_again_if_refused(fuzz_server, user)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz_operation(fuzz_server, operation, mode, user, run)

    _finish(fuzz_server, run, outside_before, "valid_tokens")


@pytest.mark.parametrize("credential", ["none", "garbage", "alg_none", "expired"])
def test_every_operation_refuses_missing_or_broken_tokens(
    fuzz_server: LiveServer, schema: schemathesis.BaseSchema, credential: str
) -> None:
    """A protected operation never answers 2xx or 5xx to a bad or absent token."""
    outside_before = snapshot_tree(fuzz_server.parent / "outside")
    run = FuzzRun(deadline=time.monotonic() + RUN_BUDGET_SECONDS * 0.05)
    authorization = _broken_authorization(fuzz_server, credential)

    for operation in _operations_in_order(schema):
        _fuzz_operation(fuzz_server, operation, GenerationMode.POSITIVE, None, run,
                        authorization=authorization, examples=max(2, EXAMPLES // 3))

    _finish(fuzz_server, run, outside_before, f"token_{credential}")


@pytest.mark.parametrize("scope", ["files", "whole_api"])
def test_stateful_sequences_keep_the_contract(
    fuzz_server: LiveServer, schema: schemathesis.BaseSchema, scope: str
) -> None:
    """Follow the document's links: a file's life, then the rest of the API.

    schemathesis starts scenarios from POST operations (and GETs without
    parameters) when there are any, never from a PUT; the upload that starts a
    file's life is a PUT to a path the client picks, so the `files` pass keeps
    only the operations its links lead to (download, describe, move, share,
    delete). The `whole_api` pass follows the links schemathesis infers itself
    (API keys, accounts, share links).
    """
    outside_before = snapshot_tree(fuzz_server.parent / "outside")
    run = FuzzRun(deadline=time.monotonic() + RUN_BUDGET_SECONDS * 0.1)
    if scope == "files":
        schema = schema.include(operation_id=FILE_LIFE_OPERATIONS)
    workflow = _judged_workflow(fuzz_server, schema, run)

    for round_seed in range(MAX_STATEFUL_ROUNDS):
        if run.scenarios >= SCENARIOS or run.is_out_of_time():
            break
        _run_workflow_round(workflow, round_seed, SCENARIOS - run.scenarios, run)

    assert run.scenarios >= min(SCENARIOS, 5), "the state machine barely ran"
    _finish(fuzz_server, run, outside_before, f"stateful_{scope}")


def _run_workflow_round(
    workflow: type[schemathesis.stateful.APIStateMachine],
    round_seed: int,
    scenarios: int,
    run: FuzzRun,
) -> None:
    """Run up to `scenarios` scenarios from a fixed seed, until one is flaky.

    Hypothesis replays choices it has made before and expects the same draws;
    against a live server the rules on offer depend on earlier answers (which
    bundles hold a resource), so a long run may stop with `Flaky`. That is the
    nature of stateful API testing, not a server fault (schemathesis' own
    runner treats it the same way): every answer was already judged, and the
    next round goes on from another seed.
    """
    machine = seed(round_seed)(workflow)
    try:
        machine.run(settings=settings(
            max_examples=scenarios, stateful_step_count=STEPS_PER_SCENARIO,
            derandomize=False, database=None, deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck)))
    except requests.Timeout as exc:
        run.fail("stateful", f"no answer within {REQUEST_TIMEOUT_SECONDS} s: {exc}")
    except Flaky:
        run.flaky_rounds += 1
    except Unsatisfiable:
        pass  # Every scenario left was void: the time budget is spent.


def _judged_workflow(
    server: LiveServer, schema: schemathesis.BaseSchema, run: FuzzRun
) -> type[schemathesis.stateful.APIStateMachine]:
    """Return schemathesis' state machine, calling our server and judging answers.

    Answers are judged like the single calls, plus the checks that need the
    scenario's history; faults are collected into `run`, not raised, so one
    scenario's fault does not hide the next ones.
    """
    base = schema.as_state_machine()

    class JudgedWorkflow(base):  # type: ignore[misc,valid-type]
        # Uploaded paths as sent (percent-encoded), for `before_call`.
        uploaded: set[str] = set()

        def setup(self) -> None:
            super().setup()
            if run.is_out_of_time():
                reject()  # The budget is spent: the remaining scenarios are void.
            run.scenarios += 1
            for user in ("alice", "bob"):
                _log_in_again_if_refused(server, user)

        def before_call(self, case: Case) -> None:
            super().before_call(case)
            params = case.path_parameters
            # A scenario's first call names a space at random, nearly always one
            # that does not exist; pick a real one from the generated path, so
            # the choice stays derandomized and the scenario reaches the files.
            if case.method == "PUT" and params and "space" in params:
                path = str(params.get("path", ""))
                params["space"] = SPACE_CHOICES[len(path) % len(SPACE_CHOICES)]
            # A link's `$request.path.path` is the path as schemathesis sent it,
            # percent-encoded; the body of a move or share wants the name itself.
            if isinstance(case.body, dict):
                for key in ("from", "path"):
                    if case.body.get(key) in self.uploaded:
                        case.body[key] = unquote(case.body[key])

        def get_call_kwargs(self, case: Case) -> dict[str, object]:
            user = "bob" if case.path.startswith("/api/v1/admin") else "alice"
            return {"base_url": _base_url(server), "timeout": REQUEST_TIMEOUT_SECONDS,
                    "headers": {"Authorization": f"Bearer {server.tokens[user]}"},
                    "allow_redirects": False}

        def call(self, case: Case, **kwargs: object) -> schemathesis.Response:
            if run.is_out_of_time():
                reject()
            run.requests += 1
            run.operations.add(case.operation.label)
            return case.call(**kwargs)

        def after_call(self, response: schemathesis.Response, case: Case) -> None:
            super().after_call(response, case)
            if case.method == "PUT" and response.status_code in (200, 201):
                self.uploaded.add(str(case.path_parameters["path"]))

        def validate_response(
            self, response: schemathesis.Response, case: Case,
            additional_checks: object = None, **kwargs: object,
        ) -> None:
            for problem in _judge(case, response, GenerationMode.POSITIVE, False,
                                  recorder=self.recorder):
                run.fail(case.operation.label, f"{problem}\n    {_curl(case, server)}")

    return JudgedWorkflow


def _fuzz_operation(
    server: LiveServer,
    operation: APIOperation,
    mode: GenerationMode,
    user: str | None,
    run: FuzzRun,
    *,
    authorization: str | None = None,
    examples: int = EXAMPLES,
) -> None:
    """Send up to `examples` generated requests to one operation and judge each."""
    if run.is_out_of_time():
        return
    label = operation.label
    protected = bool(operation.definition.raw.get("security"))

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(mode), space=st.sampled_from(SPACE_CHOICES))
    def send(case: Case, space: str) -> None:
        if run.is_out_of_time():
            return
        if case.path_parameters and "space" in case.path_parameters:
            case.path_parameters["space"] = space
        headers = {"Authorization": authorization} if authorization else {}
        if user is not None:
            headers["Authorization"] = f"Bearer {server.tokens[user]}"
        run.requests += 1
        run.operations.add(label)
        try:
            response = case.call(base_url=_base_url(server), headers=headers,
                                 timeout=REQUEST_TIMEOUT_SECONDS, allow_redirects=False)
        except requests.Timeout:
            run.fail(label, f"no answer within {REQUEST_TIMEOUT_SECONDS} s: "
                     + _curl(case, server))
            return
        for problem in _judge(case, response, mode, protected and user is None):
            run.fail(label, f"{problem}\n    {_curl(case, server)}")

    # An operation with no parameters and no body has no negative inputs at all.
    with contextlib.suppress(Unsatisfiable):
        send()


def _judge(
    case: Case,
    response: schemathesis.Response,
    mode: GenerationMode,
    needs_token: bool,
    recorder: object = None,
) -> Iterator[str]:
    """Yield what is wrong with one answer (nothing when it keeps the contract).

    With a stateful scenario's `recorder`, the checks that compare an answer
    with earlier ones in the scenario run too.
    """
    status = response.status_code
    if needs_token and status < 400:
        yield f"answered {status} without a valid token"
    if 400 <= status < 500:
        yield from _problem_faults(case.method, response)
    checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE
                       else [])
    if recorder is not None:
        checks += [use_after_free, ensure_resource_availability]
    try:
        case.validate_response(response, checks=checks, recorder=recorder)
    except (AssertionError, schemathesis.errors.SchemathesisError) as exc:
        yield _first_lines(str(exc))
    except BaseExceptionGroup as group:
        yield _first_lines(str(group))


def _problem_faults(method: str, response: schemathesis.Response) -> Iterator[str]:
    """Yield how a 4xx answer falls short of RFC 9457 problem+json."""
    content_type = response.headers.get("content-type", [""])[0].split(";")[0].strip()
    if content_type != PROBLEM_JSON:
        yield f"{response.status_code} answered as {content_type!r}, not problem+json"
        return
    if method.upper() == "HEAD":
        return
    try:
        body = json.loads(response.content)
    except ValueError:
        yield f"{response.status_code} problem+json body is not JSON"
        return
    missing = [name for name in PROBLEM_FIELDS if name not in body]
    if missing:
        yield f"{response.status_code} problem lacks {', '.join(missing)}"
    elif body["status"] != response.status_code:
        yield f"problem says status {body['status']}, answer is {response.status_code}"


def _operations_in_order(schema: schemathesis.BaseSchema) -> list[APIOperation]:
    """Return every operation, those that end the session last."""
    operations = [result.ok() for result in schema.get_all_operations()]
    return sorted(operations, key=lambda op: op.label in SESSION_ENDING)


def _log_in_again_if_refused(server: LiveServer, user: str) -> None:
    """Give `user` a working token again after fuzzed requests took it away.

    Fuzzing /logout and the login form (whose failures count towards the
    per-address throttle) ends sessions, and bob's admin routes may set a fixture
    user's password, role or active flag, since generated names include the
    listed users. That is the product working, not a fault: the account is put
    back as the fixture made it, straight in the database, and logged in again.
    """
    if server.request("GET", "/api/v1/account", token=user).status == 200:
        return
    password, role = {name: (pw, role) for name, pw, role in USERS}[user]
    _restore_account(server, user, password, role)
    server.forget_failed_logins()
    reply = server.login(user, password)
    assert reply.status == 200, (user, reply.status, reply.body[:200])
    server.tokens[user] = reply.json()["access_token"]  # type: ignore[index]


def _restore_account(server: LiveServer, name: str, password: str, role: str) -> None:
    store = open_metadata_store(load_settings(str(server.config_path)).database_url)
    try:
        account = store.get_user_by_name(name)
        assert account is not None, f"fixture user {name!r} is gone"
        store.set_password(account.id, _password_hash(password))
        store.set_role(account.id, role)  # type: ignore[arg-type]
        store.set_active(account.id, True)
    finally:
        store.close()


@functools.cache
def _password_hash(password: str) -> str:
    """Hash a fixture password once: argon2 is slow on purpose."""
    return PasswordHasher().hash(password)


def _broken_authorization(server: LiveServer, credential: str) -> str | None:
    """Return the Authorization header value for one kind of bad credential."""
    if credential == "none":
        return None
    if credential == "garbage":
        return "Bearer not-a-token"
    alice_token = server.tokens["alice"]
    if credential == "alg_none":
        return f"Bearer {alg_none(alice_token)}"
    secret = server_secret(server.data_dir)
    return f"Bearer {expired(user_id_of(alice_token), secret)}"


def _finish(
    server: LiveServer, run: FuzzRun, outside_before: dict, scenario: str
) -> None:
    """Record the figures, then fail on any fault or any change outside."""
    outside_after = snapshot_tree(server.parent / "outside")
    _OPERATIONS_REACHED.update(run.operations)
    record(FAMILY, scenario=scenario, resolver=server.resolver,
           requests=run.requests, failures=run.failure_count,
           cut_short=run.cut_short)
    if run.scenarios:
        record(FAMILY, stateful_scenarios=run.scenarios,
               stateful_flaky_rounds=run.flaky_rounds)

    assert outside_after == outside_before, "a request changed the outside folder"
    assert not run.failures, f"{len(run.failures)} operations misbehaved:\n\n" + (
        run.report())


def _plant_outside(folder: Path) -> None:
    """Create the sentinel tree no request may read, write or remove."""
    folder.mkdir()
    (folder / "secret.txt").write_text("outside the spaces\n")
    (folder / "nested").mkdir()
    (folder / "nested" / "deep.bin").write_bytes(bytes(range(256)))


def _base_url(server: LiveServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def _curl(case: Case, server: LiveServer) -> str:
    return case.as_curl_command(base_url=_base_url(server))


def _first_lines(text: str, count: int = 8) -> str:
    return " | ".join(line for line in text.splitlines()[:count] if line.strip())

