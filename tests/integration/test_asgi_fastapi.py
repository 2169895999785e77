"""Unmodified FastAPI (and so Starlette) served by the asgi worker:
routing and parameters, validation errors, form upload, StreamingResponse,
background tasks, lifespan state, dependency injection, sync routes in the
thread pool, WebSocket echo and broadcast, keep-alive, HEAD."""
import asyncio
import os

import httpx
import pytest

from conftest import ROOT, Server

APPS = os.path.join(ROOT, "tests", "apps", "asgi")


@pytest.fixture(scope="module")
def srv(request):
    s = Server(["--worker-class", "asgi", "--workers", "1", "--chdir", APPS, "--keep-alive", "5",
                "fastapp:app"])
    request.addfinalizer(s.stop)
    return s


@pytest.fixture
def client(srv):
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        yield c


def test_path_and_query(client):
    assert client.get("/items/42", params={"q": "x y"}).json() == {"item_id": 42, "q": "x y"}
    r = client.get("/items/notanint")
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["path", "item_id"]


def test_json_body_and_validation(client):
    r = client.post("/items", json={"name": "pen", "price": 1.5, "tags": ["a"]})
    assert r.json() == {"name": "pen", "total": 3.0, "tags": ["a"]}
    r = client.post("/items", json={"name": "pen"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "price"]
    r = client.post("/items", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_dependency_injection(client):
    assert client.get("/deps", params={"q": "z", "limit": 3}).json() == {"q": "z", "limit": 3}


def test_file_upload(client):
    data = os.urandom(2 * 1024 * 1024 + 7)
    r = client.post("/upload", files={"file": ("blob.bin", data)}, data={"note": "big"})
    assert r.json() == {"filename": "blob.bin", "size": len(data), "note": "big",
                        "sum": sum(data) % 65536}


def test_streaming_response(client):
    with client.stream("GET", "/stream") as r:
        assert r.headers["transfer-encoding"] == "chunked"
        lines = list(r.iter_lines())
    assert lines == ["line %d" % i for i in range(10)]


def test_background_task_runs_after_response(client):
    assert client.post("/background/alpha").json() == {"queued": "alpha"}
    events = []
    for _ in range(50):
        events = client.get("/events").json()["events"]
        if "alpha" in events:
            break
    assert "alpha" in events


def test_lifespan_state_reaches_requests(client):
    r = client.get("/state").json()
    assert r["db"] == "connected" and isinstance(r["pid"], int)


def test_sync_route(client):
    assert client.get("/sync-route").text == "from a thread"


def test_keepalive_reuses_connection(srv):
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        ports = set()
        for i in range(5):
            r = c.get("/items/%d" % i, extensions={})
            assert r.status_code == 200
            stream = r.extensions["network_stream"]
            ports.add(stream.get_extra_info("client_addr")[1])
        assert len(ports) == 1


def test_head_request(client):
    r = client.head("/items/1")
    # FastAPI routes only GET here: Starlette answers 405 for HEAD.
    assert r.status_code == 405
    assert r.content == b""


def test_websocket_echo(srv):
    import websockets

    async def main():
        async with websockets.connect(srv.url.replace("http", "ws") + "/ws/echo") as ws:
            await ws.send("hi")
            a = await ws.recv()
            await ws.send(b"\x01\x02")
            b = await ws.recv()
            return a, b
    assert asyncio.run(main()) == ("echo:hi", b"\x01\x02")


def test_websocket_broadcast(srv):
    import websockets
    url = srv.url.replace("http", "ws") + "/ws/chat"

    async def both(a, b):
        await b.send("b-ready")
        assert await asyncio.wait_for(b.recv(), 5) == "b-ready"
        assert await asyncio.wait_for(a.recv(), 5) == "b-ready"
        await a.send("to everyone")
        return await asyncio.wait_for(a.recv(), 5), await asyncio.wait_for(b.recv(), 5)

    async def main():
        async with websockets.connect(url) as a:
            # A client hears its own message once it is registered.
            await a.send("a-ready")
            assert await asyncio.wait_for(a.recv(), 5) == "a-ready"
            async with websockets.connect(url) as b:
                return await both(a, b)
    assert asyncio.run(main()) == ("to everyone", "to everyone")
