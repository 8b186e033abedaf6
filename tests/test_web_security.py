"""What keeps a local server safe from the web pages its user opens, and from a network it is exposed to."""

from __future__ import annotations

import http.client as httpclient
import json
import os
import socket
from urllib.parse import quote, urlsplit

import pytest
from test_web_server import multipart
from test_web_support import ARITHMETIC, http, new_id, start_server, ws_connect, ws_url
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from graph_runtime.cli import main as cli_main


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("secure")
    srv = start_server(root / "srv", max_prompt_bytes=4000, max_upload_bytes=6000, max_ws_clients=3, max_nodes=8)
    (root / "secret.txt").write_text("secret")
    yield srv
    srv.stop()


@pytest.fixture
def base(server):
    return server.url


def origin_of(base: str) -> str:
    return base  # http://127.0.0.1:PORT


# -- Host header (DNS rebinding) ------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8188", "127.0.0.1.evil.example", "10.0.0.1"])
def test_foreign_host_header_is_refused_everywhere(base, host):
    for method, path in (("GET", "/api/users"), ("GET", "/"), ("GET", "/view?filename=x.png"),
                         ("POST", "/prompt")):
        r = http(method, base + path, {} if method == "POST" else None, headers={"Host": host})
        assert r.status == 403, (method, path, r.status)
    assert ws_handshake(base, {"Host": host}) == 403


def ws_handshake(base: str, headers: dict) -> int:
    """The status of a raw websocket upgrade with exactly these headers (Host included)."""
    u = urlsplit(base)
    sock = socket.create_connection((u.hostname, u.port), timeout=10)
    try:
        lines = ["GET /ws HTTP/1.1", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return int(sock.recv(1024).split(b" ")[1])
    finally:
        sock.close()


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]"])
def test_loopback_names_are_accepted(base, host):
    port = urlsplit(base).port
    assert http("GET", base + "/api/users", headers={"Host": f"{host}:{port}"}).status == 200
    assert ws_handshake(base, {"Host": f"{host}:{port}"}) == 101


# -- Origin on state-changing requests ------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Origin": "http://127.0.0.1:1"},  # another port is another origin
    {"Sec-Fetch-Site": "cross-site"},
])
def test_cross_origin_writes_are_refused(base, headers):
    for path, body in (("/prompt", {"prompt": ARITHMETIC}), ("/queue", {"clear": True}), ("/interrupt", {}),
                       ("/free", {}), ("/settings/X", 1), ("/api/userdata/workflows%2Fx.json", {})):
        r = http("POST", base + path, body, headers=headers)
        assert r.status == 403, (path, r.status)
    assert http("DELETE", base + "/api/userdata/workflows%2Fx.json", headers=headers).status == 403
    with pytest.raises(InvalidStatus):
        with connect(ws_url(base), additional_headers=headers):
            pass


def test_same_origin_and_non_browser_writes_pass(base):
    assert http("POST", base + "/prompt", {"prompt": ARITHMETIC}, headers={"Origin": origin_of(base),
                                                                          "Sec-Fetch-Site": "same-origin"}).status == 200
    assert http("POST", base + "/prompt", {"prompt": ARITHMETIC}).status == 200
    # reads from elsewhere are answered (the browser keeps them from the page: no CORS headers)
    r = http("GET", base + "/api/users", headers={"Origin": "http://evil.example"})
    assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers
    with ws_connect(base, new_id(), additional_headers={"Origin": origin_of(base)}) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "status"


# -- paths ----------------------------------------------------------------------------------------------------

BAD_NAMES = ["../secret.txt", "..\\secret.txt", "sub/../../secret.txt", "/etc/passwd", "C:\\x.png", "c:x.png",
             "\\\\host\\share\\x.png", "a\x00b.png", "..", "../"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_view_refuses_names_that_leave_the_folder(base, name):
    r = http("GET", f"{base}/view?filename={quote(name)}&type=output")
    assert r.status == 400, r.body
    r = http("GET", f"{base}/view?filename=x.png&subfolder={quote(name)}&type=output")
    assert r.status == 400, r.body


def test_view_percent_encoded_dots_are_refused(base):
    r = http("GET", f"{base}/view?filename=%2e%2e/secret.txt&type=output")
    assert r.status == 400
    r = http("GET", f"{base}/view?filename=%252e%252e/secret.txt&type=output")  # decoded once: a plain name
    assert r.status == 404


def test_dots_inside_a_name_are_fine(server):
    (server.config.paths.output / "a..b.png").write_bytes(b"\x89PNG fake")
    r = http("GET", f"{server.url}/view?filename=a..b.png&type=output")
    assert r.status == 200 and r.body == b"\x89PNG fake"


def test_symlinks_out_of_the_folder_are_refused(server, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "s.txt").write_text("outside")
    os.symlink(outside, server.config.paths.output / "link")
    os.symlink(outside / "s.txt", server.config.paths.output / "file-link.txt")
    assert http("GET", f"{server.url}/view?filename=s.txt&subfolder=link&type=output").status == 400
    assert http("GET", f"{server.url}/view?filename=file-link.txt&type=output").status == 400
    os.symlink(outside, server.config.user_dir / "workflows" / "escape")
    assert http("GET", f"{server.url}/api/userdata/workflows%2Fescape%2Fs.txt").status == 400
    listed = http("GET", f"{server.url}/api/userdata?dir=workflows&recurse=true").json()
    assert not any("s.txt" in p for p in listed)


@pytest.mark.parametrize("name", ["..%2Fsecret.txt", "%2e%2e%2fsecret.txt", "..%5Csecret.txt",
                                  "%2Fetc%2Fpasswd", "C%3A%5Cx", "a%00b"])
def test_userdata_refuses_names_that_leave_the_folder(base, name):
    assert http("GET", f"{base}/api/userdata/{name}").status == 400
    assert http("POST", f"{base}/api/userdata/{name}", {"x": 1}).status == 400
    assert http("DELETE", f"{base}/api/userdata/{name}").status == 400
    assert http("POST", f"{base}/api/userdata/workflows%2Fa.json/move/{name}").status in (400, 404)
    assert http("GET", f"{base}/api/userdata?dir={name}").status == 400


@pytest.mark.parametrize("field,value", [("filename", "../evil.png"), ("filename", "..\\evil.png"),
                                         ("filename", "/tmp/evil.png"), ("filename", "sub/evil.png"),
                                         ("subfolder", "../up"), ("subfolder", "/abs"), ("type", "system")])
def test_upload_refuses_bad_targets(base, field, value):
    name = value if field == "filename" else "ok.png"
    fields = {"type": "input", "subfolder": ""}
    if field != "filename":
        fields[field] = value
    body, ctype = multipart(fields, "image", name, b"\x89PNG data")
    r = http("POST", base + "/upload/image", raw=body, headers={"Content-Type": ctype})
    assert r.status == 400, r.body


@pytest.mark.parametrize("name,content", [("evil.svg", b"<svg onload='alert(1)'/>"),
                                          ("evil.html", b"<script>alert(1)</script>"),
                                          ("evil.png.html", b"<script>alert(1)</script>")])
def test_active_content_is_never_rendered_inline(server, name, content):
    (server.config.paths.output / name).write_bytes(content)
    r = http("GET", f"{server.url}/view?filename={name}&type=output")
    assert r.status == 200
    assert r.headers["Content-Disposition"].startswith("attachment")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "text/html" not in r.headers["Content-Type"] and "svg" not in r.headers["Content-Type"]


# -- limits ---------------------------------------------------------------------------------------------------


def test_bodies_over_the_cap_are_refused_before_reading(base):
    big = {"prompt": ARITHMETIC, "extra_data": {"pad": "x" * 5000}}
    assert http("POST", base + "/prompt", big).status == 413
    assert http("POST", base + "/api/userdata/workflows%2Fbig.json", {"pad": "x" * 5000}).status == 413
    body, ctype = multipart({"type": "input"}, "image", "big.png", b"x" * 7000)
    assert http("POST", base + "/upload/image", raw=body, headers={"Content-Type": ctype}).status == 413
    # no Content-Length: a chunked body is counted as it arrives
    u = urlsplit(base)
    conn = httpclient.HTTPConnection(u.hostname, u.port, timeout=10)
    chunks = (b"x" * 1000 for _ in range(10))
    conn.request("POST", "/prompt", body=chunks, headers={"Content-Type": "application/json"},
                 encode_chunked=True)
    assert conn.getresponse().status == 413
    conn.close()
    assert http("GET", base + "/api/users").status == 200  # and the server is fine


def test_too_many_nodes_is_refused(base):
    prompt = {str(i): {"class_type": "PrimitiveInt", "inputs": {"value": i}} for i in range(20)}
    r = http("POST", base + "/prompt", {"prompt": prompt})
    assert r.status == 400 and r.json()["error"]["type"] == "prompt_too_large"


def test_websocket_clients_are_capped(base):
    clients = [ws_connect(base, new_id()) for _ in range(3)]
    try:
        for c in clients:
            c.recv(timeout=5)
        with connect(ws_url(base, new_id())) as extra:  # accepted, then closed with a reason (not a 403)
            with pytest.raises(ConnectionClosed) as closed:
                extra.recv(timeout=5)
        assert closed.value.rcvd.code == 1013 and "retry later" in closed.value.rcvd.reason
    finally:
        for c in clients:
            c.close()


# -- token ----------------------------------------------------------------------------------------------------


def test_token_is_required_when_set(tmp_path):
    srv = start_server(tmp_path, token="s3cret-token")
    try:
        base = srv.url
        assert http("GET", base + "/api/users").status == 401
        assert http("GET", base + "/api/users", headers={"Authorization": "Bearer wrong"}).status == 401
        assert http("GET", base + "/api/users", headers={"Authorization": "Bearer s3cret-token"}).status == 200
        r = http("GET", base + "/api/users?token=s3cret-token")
        assert r.status == 200 and "graph_runtime_token=s3cret-token" in r.headers["Set-Cookie"]
        assert "HttpOnly" in r.headers["Set-Cookie"] and "SameSite=Strict" in r.headers["Set-Cookie"]
        assert http("GET", base + "/api/users", headers={"Cookie": "graph_runtime_token=s3cret-token"}).status == 200
        assert http("POST", base + "/prompt", {"prompt": ARITHMETIC},
                    headers={"Authorization": "Bearer s3cret-token"}).status == 200
        with pytest.raises(InvalidStatus):
            with connect(ws_url(base)):
                pass
        with connect(ws_url(base) + "?token=s3cret-token", close_timeout=2) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "status"
    finally:
        srv.stop()


def test_non_loopback_bind_needs_listen_anywhere_and_token(capsys, monkeypatch):
    monkeypatch.delenv("GRAPH_RUNTIME_TOKEN", raising=False)
    assert cli_main(["serve", "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "--listen-anywhere" in capsys.readouterr().err
    assert cli_main(["serve", "--host", "0.0.0.0", "--port", "1", "--listen-anywhere"]) == 2
    assert "token" in capsys.readouterr().err

    from web.cli import config_from_args

    class Args:
        host, port, output_dir, input_dir, temp_dir, user_dir = "0.0.0.0", 1, None, None, None, None
        cache, listen_anywhere, token, allow_host, no_frontend, node_module = "last", True, "t", [], True, []

    config = config_from_args(Args())
    assert config.token == "t" and config.listen_anywhere
