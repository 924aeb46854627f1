"""docs/deploy.md, built for real on one machine: two instances behind nginx.

Two `strongroom` processes share one configuration, one PostgreSQL database and
one S3 bucket (SeaweedFS), with nginx in front (the config `strongroom
nginx-config` prints, `offload = "nginx"`). Whatever one instance decides, the
other enforces from the next request: files, logouts, revocations, share-link
download limits and home quotas all live in the database and the store, never
in a process. An instance killed in the middle of an upload leaves no file and
nothing that `strongroom check` cannot explain.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_server import (
    ALICE_PASSWORD,
    API,
    BOB_PASSWORD,
    CONFIG,
    SPACE_DIRS,
    LiveServer,
    files_url,
    run_server,
)

from concurrency import run_together
from nginx_server import nginx_problem, run_nginx
from pg_database import fresh_postgres_database, postgres_problem
from s3_server import S3Server

pytestmark = pytest.mark.skipif(
    (nginx_problem() or postgres_problem()) is not None and not os.environ.get("CI"),
    reason=str(nginx_problem() or postgres_problem()),
)

USERS = (("alice", ALICE_PASSWORD, "user"), ("bob", BOB_PASSWORD, "admin"))
QUOTA = 3000
# Long enough that the killed instance is still reading it, short enough to send.
KILLED_UPLOAD_BYTES = 32 << 20


@dataclasses.dataclass
class Deployment:
    one: LiveServer
    two: LiveServer
    front: LiveServer  # nginx, with the same tokens
    config_text: str
    parent: Path
    s3: S3Server
    bucket: str

    def each(self) -> list[LiveServer]:
        return [self.one, self.two]


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server
) -> Iterator[Deployment]:
    parent = tmp_path_factory.mktemp("deploy")
    for name in (*SPACE_DIRS, "outside"):
        (parent / name).mkdir()
    with fresh_postgres_database("strongroom_deploy") as database_url:
        bucket = s3_server.create_bucket()
        config_text = (
            f'database_url = "{database_url}"\n'
            + s3_server.toml(f"s3://{bucket}/homes")
            + 'offload = "nginx"\ntrusted_proxies = ["127.0.0.1"]\n'
            + f"home_quota_bytes = {QUOTA}\n"
            + _absolute_spaces(CONFIG.format(data_dir=parent / "data"), parent)
        )
        second = tmp_path_factory.mktemp("deploy-two")
        with (
            run_server(parent, config_text, "auto", USERS) as one,
            run_server(second, config_text, "auto", ()) as two,
        ):
            two.tokens.update(one.tokens)
            runtime = parent.with_name(parent.name + ".nginx")
            with run_nginx(one.config_path, [one.port, two.port], runtime) as port:
                front = dataclasses.replace(one, port=port)
                yield Deployment(
                    one, two, front, config_text, parent, s3_server, bucket
                )


def _absolute_spaces(config_text: str, parent: Path) -> str:
    # Every instance serves the same folders, wherever it runs from; uploads
    # may be large enough to span several S3 parts.
    config_text = config_text.replace(
        "max_upload_bytes = 1048576", f"max_upload_bytes = {2 * KILLED_UPLOAD_BYTES}"
    )
    for name in SPACE_DIRS:
        config_text = config_text.replace(
            f'path = "{name}"', f'path = "{parent / name}"'
        )
    return config_text


@pytest.fixture
def env(deployment: Deployment) -> Deployment:
    deployment.one.reset_tree()
    deployment.one.reset_home("alice")
    deployment.one.forget_failed_logins()
    return deployment


@pytest.mark.parametrize("space", ["home", "lab"])
def test_a_file_uploaded_through_one_instance_is_served_by_the_other(
    env: Deployment, space: str
) -> None:
    body = os.urandom(100 if space == "home" else 200_000)

    stored = env.one.put(space, "shared/one.bin", body)
    by_two = env.two.request("GET", files_url(space, "shared/one.bin"))
    by_front = env.front.request("GET", files_url(space, "shared/one.bin"))

    assert stored.status == 201
    assert by_front.status == 200 and by_front.body == body
    if space == "home":  # in S3: every instance streams it
        assert by_two.status == 200 and by_two.body == body
    else:  # a directory space: handed to nginx
        assert by_two.status == 200 and by_two.header("x-accel-redirect")


def test_a_logout_on_one_instance_is_refused_by_the_other(env: Deployment) -> None:
    token = env.one.login("alice", ALICE_PASSWORD).json()["access_token"]  # type: ignore[index]
    bearer = {"Authorization": f"Bearer {token}"}
    assert env.two.request("GET", f"{API}/account", headers=bearer).status == 200

    out = env.one.request("POST", f"{API}/logout", headers=bearer)

    assert out.status == 204
    assert env.two.request("GET", f"{API}/account", headers=bearer).status == 401
    assert env.front.request("GET", f"{API}/account", headers=bearer).status == 401


def test_an_admin_revocation_on_one_instance_holds_on_the_other(
    env: Deployment,
) -> None:
    name = f"carol{int(time.time() * 1000) % 10**8}"
    made = env.one.request(
        "POST", f"{API}/admin/users", token="bob",
        body=json.dumps({"name": name, "password": "carol-password-1"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert made.status == 201, made.body
    token = env.two.login(name, "carol-password-1").json()["access_token"]  # type: ignore[index]
    bearer = {"Authorization": f"Bearer {token}"}

    revoked = env.one.request("POST", f"{API}/admin/users/{name}/revoke", token="bob")

    assert revoked.status == 204
    assert env.two.request("GET", f"{API}/account", headers=bearer).status == 401


def test_a_share_download_limit_holds_across_instances(env: Deployment) -> None:
    env.one.put("home", "s.txt", b"shared")
    made = env.two.request(
        "POST", f"{API}/spaces/home/shares",
        body=json.dumps({"path": "s.txt", "max_downloads": 3}).encode(),
        headers={"Content-Type": "application/json"},
    )
    url = made.json()["url"]  # type: ignore[index]

    statuses = run_together(
        12, lambda n: env.each()[n % 2].request("GET", url, token=None).status
    )

    assert sorted(statuses) == [200] * 3 + [410] * 9


def test_a_home_quota_holds_across_instances(env: Deployment) -> None:
    """Ten 1,000-byte uploads, alternating instances, race for three places."""
    statuses = run_together(
        10, lambda n: env.each()[n % 2].put("home", f"q{n}.bin", b"q" * 1000).status
    )

    assert sorted(statuses) == [201] * 3 + [507] * 7
    account = env.two.request("GET", f"{API}/account").json()
    assert account["used_bytes"] == QUOTA  # type: ignore[index]


@pytest.mark.parametrize("space", ["lab", "home"])
def test_an_instance_killed_mid_upload_leaves_no_file_and_nothing_unexplained(
    env: Deployment, tmp_path: Path, space: str
) -> None:
    """Half the body is in (on disk, or in S3 parts) when the instance dies."""
    (tmp_path / "third").mkdir()
    with run_server(tmp_path / "third", env.config_text, "auto", ()) as third:
        pid = third.pid
        assert pid is not None
        with socket.create_connection(("127.0.0.1", third.port), timeout=10) as sock:
            head = (
                f"PUT {files_url(space, 'killed.bin')} HTTP/1.1\r\n"
                f"Host: 127.0.0.1\r\nAuthorization: Bearer {env.one.tokens['alice']}"
                f"\r\nContent-Length: {KILLED_UPLOAD_BYTES}\r\n\r\n"
            ).encode()
            sock.sendall(head + b"k" * (KILLED_UPLOAD_BYTES // 2))
            time.sleep(1.0)  # the instance is storing the first half
            os.kill(pid, signal.SIGKILL)

    # It had begun storing: a staging file in the space, or S3 parts.
    assert _storing_left_over(env, space), "the instance died before storing"
    for server in (env.one, env.two):
        assert server.request("GET", files_url(space, "killed.bin")).status == 404
        assert server.list_all(space, "") == []
    check = subprocess.run(
        [str(Path(sys.executable).with_name("strongroom")), "check",
         "--config", str(env.one.config_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith("0 findings"), check.stdout


def _storing_left_over(env: Deployment, space: str) -> bool:
    if space == "lab":
        return any(p.name.startswith(".~sr-") for p in (env.parent / "lab").iterdir())
    client = env.s3.client()
    try:
        uploads = client.list_multipart_uploads(Bucket=env.bucket).get("Uploads", [])
    finally:
        client.close()
    return bool(uploads)
