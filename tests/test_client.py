"""gateway.client against a tiny threaded FastCGI app server built on the sans-IO codec,
plus a smoke test of the nginx fixture helpers in front of that same server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.client import (
    ClientError,
    FastCGIClient,
    Response,
    build_params,
    encode_request,
    parse_address,
    parse_cgi_response,
    ping,
)
from gateway.protocol import FastCGIConnection, ProtocolStatus, RecordType, Role
from gateway.protocol.records import encode_record
from tests.integration.nginx import Nginx, free_port, http_get, http_request


class EchoServer:
    """Answers each request with its method/URI in headers and its body (or, without a
    body, its REQUEST_URI) as the response body. Special paths: /status/NNN, /stderr,
    /hangup (close without END_REQUEST), /silent (never answer)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.connections = 0
        self.params: list[dict[bytes, bytes]] = []
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(16)
        self._listener.settimeout(0.05)
        self._threads = [threading.Thread(target=self._accept_loop, daemon=True)]
        self._threads[0].start()

    @property
    def address(self) -> str:
        return f"unix:{self.path}"

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, sock: socket.socket) -> None:
        codec = FastCGIConnection()
        requests: dict[int, tuple[dict[bytes, bytes], bytearray]] = {}
        sock.settimeout(0.05)
        with sock:
            while not self._stop.is_set():
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                sock.settimeout(None)  # blocking writes; restored below for the next recv
                for ev in codec.feed(data):
                    name = type(ev).__name__
                    if name == "RequestReceived":
                        params = dict(ev.params)
                        self.params.append(params)
                        requests[ev.request_id] = (params, bytearray())
                        if params[b"REQUEST_URI"] == b"/hangup":
                            return
                    elif name == "StdinReceived":
                        requests[ev.request_id][1].extend(ev.data)
                    elif name == "StdinEnded":
                        params, body = requests.pop(ev.request_id)
                        sock.sendall(self._respond(codec, ev.request_id, params, bytes(body)))
                    elif name == "ConnectionClosed":
                        return
                if out := codec.data_to_send():
                    sock.sendall(out)
                if codec.should_close:
                    return
                sock.settimeout(0.05)

    @staticmethod
    def _respond(codec: FastCGIConnection, rid: int, params: dict[bytes, bytes], body: bytes) -> bytes:
        uri = params[b"REQUEST_URI"]
        if uri == b"/silent":
            return b""
        status = uri.rsplit(b"/", 1)[1] if uri.startswith(b"/status/") else b"200"
        head = b"Status: %s Echo\r\nContent-Type: text/plain\r\nX-Method: %s\r\nX-Request-Uri: %s\r\n\r\n" % (
            status,
            params[b"REQUEST_METHOD"],
            uri,
        )
        err = codec.send_stderr(rid, b"something on stderr") if uri == b"/stderr" else b""
        return err + codec.send_response(rid, head + (body or uri))

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self._listener.close()


@pytest.fixture
def server(sock_dir: Path) -> Iterator[EchoServer]:
    srv = EchoServer(sock_dir / "echo.sock")
    yield srv
    srv.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("unix:/run/app.sock", (socket.AF_UNIX, "/run/app.sock")),
        ("/run/app.sock", (socket.AF_UNIX, "/run/app.sock")),
        ("unix:@abstract", (socket.AF_UNIX, "\0abstract")),
        ("127.0.0.1:9000", (socket.AF_INET, ("127.0.0.1", 9000))),
        ("localhost:9000", (socket.AF_INET, ("localhost", 9000))),
        ("[::1]:9000", (socket.AF_INET6, ("::1", 9000))),
        (":9000", (socket.AF_INET, ("127.0.0.1", 9000))),
    ],
)
def test_parse_address(text: str, expected: tuple) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("bad", ["", "app.sock", "host:http", "host:70000", "[::1]", "::1:9000", "unix:"])
def test_parse_address_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_address(bad)


def test_build_params_matches_nginx_for_get() -> None:
    params = build_params("GET", "/app/x%20y?q=1", headers=[("Cookie", "a=1"), ("Cookie", "b=2")])
    d = dict(params)
    assert d[b"SCRIPT_NAME"] == d[b"DOCUMENT_URI"] == b"/app/x y"
    assert d[b"REQUEST_URI"] == b"/app/x%20y?q=1"
    assert d[b"QUERY_STRING"] == b"q=1"
    assert d[b"CONTENT_TYPE"] == d[b"CONTENT_LENGTH"] == b""
    assert [v for k, v in params if k == b"HTTP_COOKIE"] == [b"a=1", b"b=2"]
    assert [k for k, _ in params][:4] == [
        b"QUERY_STRING",
        b"REQUEST_METHOD",
        b"CONTENT_TYPE",
        b"CONTENT_LENGTH",
    ]


def test_build_params_post_and_overrides() -> None:
    params = build_params(
        "post",
        "/form",
        headers={"Content-Type": "text/plain", "Host": "example.org"},
        content_length=7,
        params={"SERVER_PORT": "8080", "REMOTE_USER": None, "PATH_INFO": "/x"},
    )
    d = dict(params)
    assert d[b"REQUEST_METHOD"] == b"POST"
    assert d[b"CONTENT_LENGTH"] == d[b"HTTP_CONTENT_LENGTH"] == b"7"
    assert d[b"CONTENT_TYPE"] == d[b"HTTP_CONTENT_TYPE"] == b"text/plain"
    assert d[b"HTTP_HOST"] == b"example.org"
    assert [k for k, _ in params].count(b"HTTP_HOST") == 1
    assert d[b"SERVER_PORT"] == b"8080" and d[b"PATH_INFO"] == b"/x" and b"REMOTE_USER" not in d


def test_parse_cgi_response() -> None:
    r = parse_cgi_response(b"Status: 404 Not Found\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nbody\r\n\r\n")
    assert (r.status, r.reason, r.body) == (404, "Not Found", b"body\r\n\r\n")
    assert r.header_list("set-cookie") == ["a=1", "b=2"]
    assert parse_cgi_response(b"Content-Type: text/plain\n\nhi").status == 200
    assert parse_cgi_response(b"").status == 0


def test_get(server: EchoServer) -> None:
    with FastCGIClient(server.address) as client:
        resp = client.request("GET", "/hello%20world?x=1")
    assert (resp.status, resp.reason) == (200, "Echo")
    assert resp.header("content-type") == "text/plain"
    assert resp.body == b"/hello%20world?x=1"
    assert (resp.app_status, resp.protocol_status, resp.stderr) == (0, 0, b"")
    assert server.params[0][b"SCRIPT_NAME"] == b"/hello world"


def test_post_one_megabyte_echoed(server: EchoServer) -> None:
    payload = bytes(range(256)) * 4096
    resp = FastCGIClient(server.address).request("POST", "/upload", body=payload)
    assert resp.status == 200 and resp.header("X-Method") == "POST"
    assert resp.body == payload
    assert server.params[0][b"CONTENT_LENGTH"] == b"1048576"


def test_post_chunked_iterable(server: EchoServer) -> None:
    resp = FastCGIClient(server.address).request("POST", "/c", body=iter([b"a" * 70000, b"", b"bc"]))
    assert resp.body == b"a" * 70000 + b"bc"
    assert server.params[0][b"HTTP_TRANSFER_ENCODING"] == b"chunked"
    assert server.params[0][b"CONTENT_LENGTH"] == b""


def test_stderr_and_status(server: EchoServer) -> None:
    client = FastCGIClient(server.address)
    assert client.request(path="/stderr").stderr == b"something on stderr"
    assert client.request(path="/status/503").status == 503


def test_keep_conn_reuses_one_socket(server: EchoServer) -> None:
    with FastCGIClient(server.address, keep_conn=True) as client:
        bodies = [client.request("GET", f"/r{i}").body for i in range(3)]
        assert client.connects == 1 and not client.peer_closed
    assert bodies == [b"/r0", b"/r1", b"/r2"]
    assert server.connections == 1


def test_without_keep_conn_each_request_connects(server: EchoServer) -> None:
    client = FastCGIClient(server.address)
    for _ in range(2):
        client.request()
    assert client.connects == 2 and client.sock is None


def test_get_values(server: EchoServer) -> None:
    values = FastCGIClient(server.address).get_values(["FCGI_MAX_CONNS", b"FCGI_MPXS_CONNS", "NOPE"])
    assert values == {b"FCGI_MAX_CONNS": b"1", b"FCGI_MPXS_CONNS": b"0"}


def test_raw_records_two_requests_one_refused(server: EchoServer) -> None:
    with FastCGIClient(server.address, keep_conn=True) as client:
        params = build_params("GET", "/one")
        client.send_raw(encode_request(1, params, keep_conn=True) + encode_request(2, params, keep_conn=True))
        records = client.recv_records(1, 2)
    assert Response.from_records(records, 2).protocol_status == ProtocolStatus.CANT_MPX_CONN
    first = Response.from_records(records, 1)
    assert (first.status, first.body) == (200, b"/one")


def test_raw_unknown_management_type_and_role(server: EchoServer) -> None:
    with FastCGIClient(server.address, keep_conn=True) as client:
        client.send_raw(encode_record(42, 0))
        rec = client.recv_record()
        assert rec is not None and rec.type == RecordType.UNKNOWN_TYPE and rec.content[0] == 42
        resp = client.request(role=Role.AUTHORIZER)
    assert resp.protocol_status == ProtocolStatus.UNKNOWN_ROLE and resp.status == 0


def test_closed_before_end_request(server: EchoServer) -> None:
    with pytest.raises(ClientError, match=r"closed .* before END_REQUEST"):
        FastCGIClient(server.address).request(path="/hangup")


def test_timeout(server: EchoServer) -> None:
    start = time.monotonic()
    with pytest.raises(ClientError, match="timed out"):
        FastCGIClient(server.address, timeout=0.3).request(path="/silent")
    assert time.monotonic() - start < 5


def test_ping(server: EchoServer, sock_dir: Path) -> None:
    assert ping(server.address, "/ping") == (True, "200 Echo")
    # a 5xx reason names the first line of a short body (the echo server's: the path)
    assert ping(server.address, "/status/503") == (False, "503 Echo: /status/503")
    ok, reason = ping(f"unix:{sock_dir}/nobody.sock")
    assert not ok and "cannot connect" in reason


def test_refused_connection_raises() -> None:
    with pytest.raises(ClientError, match=r"cannot connect to 127\.0\.0\.1:.*refused"):
        FastCGIClient(f"127.0.0.1:{free_port()}").request()


# -- the nginx helper ------------------------------------------------------------------


@pytest.fixture
def make_nginx(tmp_path: Path) -> Iterator:
    started: list[Nginx] = []

    def make(upstream: object, **options: object) -> Nginx:
        nginx = Nginx(tmp_path / f"nginx{len(started)}", upstream, **options)
        started.append(nginx)
        return nginx.start()

    yield make
    for nginx in started:
        nginx.stop()
        print(nginx.error_log_text()[-4000:])


def test_nginx_fixture_proxies_to_fastcgi(server: EchoServer, make_nginx) -> None:
    nginx = make_nginx(server)
    resp = http_get(nginx.url + "/app/x%20y?q=1", headers={"Cookie": "a=1"})
    assert resp.status == 200, resp.text
    assert resp.body == b"/app/x%20y?q=1"
    assert resp.header("X-Request-Uri") == "/app/x%20y?q=1"
    params = server.params[-1]
    assert params[b"SCRIPT_NAME"] == b"/app/x y" and params[b"SERVER_SOFTWARE"].startswith(b"nginx/")
    post = http_request("POST", nginx.url + "/form", body=b"k=v" * 1000)
    assert (post.status, post.body) == (200, b"k=v" * 1000)
    assert nginx.pid > 0 and nginx.conf_path.exists() and "[emerg]" not in nginx.error_log_text()


def test_nginx_keep_conn_and_reload(server: EchoServer, make_nginx) -> None:
    nginx = make_nginx(server, keep_conn=True, extra_location="fastcgi_read_timeout 7s;")
    conf = nginx.conf_path.read_text()
    assert "keepalive 16;" in conf and "fastcgi_keep_conn on;" in conf
    assert conf.count("fastcgi_read_timeout") == 1
    for i in range(3):
        assert http_get(f"{nginx.url}/k{i}").body == f"/k{i}".encode()
    assert server.connections == 1
    nginx.reload(locations={"/": "", "= /other": "fastcgi_param SCRIPT_NAME /renamed;"})
    http_get(nginx.url + "/other")
    assert server.params[-1][b"SCRIPT_NAME"] == b"/renamed"
