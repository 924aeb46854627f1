"""The first things a new user does, over a real loopback connection."""

from __future__ import annotations

from live_server import LiveServer


def test_health_answers_without_a_token(server: LiveServer) -> None:
    reply = server.request("GET", "/healthz", token=None)

    assert reply.status == 200


def test_upload_list_and_download_round_trip_in_home(server: LiveServer) -> None:
    put = server.request("PUT", "/api/v1/spaces/home/files/notes/today.txt",
                         body=b"remember the milk")
    listing = server.request("GET", "/api/v1/spaces/home/list/notes")
    got = server.request("GET", "/api/v1/spaces/home/files/notes/today.txt")

    assert put.status == 201
    assert [e["name"] for e in listing.json()["entries"]] == ["today.txt"]
    assert got.body == b"remember the milk"
