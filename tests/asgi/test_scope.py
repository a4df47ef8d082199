"""The ASGI scope builder, by whole-dict equality from params nginx, Apache, lighttpd and
Caddy really sent (tests/fixtures/), and its agreement with the WSGI environ's routing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.asgi import scope as scope_module
from gateway.asgi.scope import build_scope
from gateway.wsgi.environ import build_environ, text_params
from tests.capture import captured_requests
from tests.deploy.capture_frontends import captured, every_capture

REQ = captured_requests()
ASGI = {"version": "3.0", "spec_version": "2.4"}


def fcgi(params, role=1, rid=1):
    return {"fastcgi": {"params": params, "role": role, "request_id": rid, "connection": None}}


def test_get_with_query_unicode_path_and_duplicate_cookies():
    params = REQ["/app/x y"]
    assert build_scope(params) == {
        "type": "http",
        "asgi": ASGI,
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/app/x y",
        "raw_path": b"/app/x%20y",
        "query_string": b"q=1",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"user-agent", b"curl/7.88.1"),
            (b"accept", b"*/*"),
            (b"x-foo-bar", b"d"),
            (b"cookie", b"a=1; b=2"),
        ],
        "client": ("127.0.0.1", 49452),
        "server": ("127.0.0.1", 28417),
        "extensions": fcgi(params),
    }


def test_post_content_headers_once_and_not_empty():
    params = REQ["/form"]
    scope = build_scope(params, state={"db": 1}, request_id=1)
    assert scope == {
        "type": "http",
        "asgi": ASGI,
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/form",
        "raw_path": b"/form",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"user-agent", b"curl/7.88.1"),
            (b"accept", b"*/*"),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"content-length", b"7"),
        ],
        "client": ("127.0.0.1", 49454),
        "server": ("127.0.0.1", 28417),
        "state": {"db": 1},
        "extensions": fcgi(params),
    }


def test_chunked_upload_keeps_transfer_encoding_and_cgi_content_type():
    params = REQ["/nobuf/chunked"]
    scope = build_scope(params)
    assert scope["headers"] == [
        (b"host", b"127.0.0.1"),
        (b"user-agent", b"curl/7.88.1"),
        (b"accept", b"*/*"),
        (b"transfer-encoding", b"chunked"),
        (b"content-type", b"application/x-www-form-urlencoded"),
        (b"content-length", b"3"),
    ]


def test_get_has_no_empty_content_headers():
    scope = build_scope(REQ["/keep/1"])
    names = [n for n, _ in scope["headers"]]
    assert b"content-type" not in names and b"content-length" not in names
    assert scope["path"] == "/keep/1" and scope["root_path"] == ""


def test_state_is_a_shallow_copy_per_request():
    state = {"counter": [0]}
    a = build_scope(REQ["/keep/1"], state=state)
    a["state"]["new"] = 1
    assert "new" not in state
    assert a["state"]["counter"] is state["counter"]


def test_root_path_option_keeps_full_path():
    scope = build_scope(REQ["/app/x y"], root_path="/app")
    assert scope["root_path"] == "/app"
    assert scope["path"] == "/app/x y"
    assert scope["root_path"] != scope["path"]


def test_split_from_server_is_not_the_root_path():
    params = [
        (b"REQUEST_METHOD", b"GET"),
        (b"SCRIPT_NAME", b"/mount"),
        (b"PATH_INFO", b"/a b"),
        (b"REQUEST_URI", b"/mount/a%20b?x=1"),
        (b"QUERY_STRING", b"x=1"),
    ]
    scope = build_scope(params)
    assert (scope["root_path"], scope["path"], scope["raw_path"]) == ("", "/mount/a b", b"/mount/a%20b")
    assert scope["query_string"] == b"x=1"
    scope = build_scope(params, root_path="/mount")  # the mount point is --root-path
    assert (scope["root_path"], scope["path"], scope["raw_path"]) == ("/mount", "/mount/a b", b"/mount/a%20b")


def test_root_path_stripped_before_the_gateway_is_put_back_in_path():
    params = [(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/x?y=1")]
    scope = build_scope(params, root_path="/app")
    assert (scope["root_path"], scope["path"], scope["raw_path"]) == ("/app", "/app/x", b"/x")
    scope = build_scope([(b"REQUEST_URI", b"/application")], root_path="/app")  # not a segment
    assert (scope["root_path"], scope["path"]) == ("/app", "/app/application")
    scope = build_scope([(b"REQUEST_URI", b"/app")], root_path="/app")
    assert (scope["root_path"], scope["path"]) == ("/app", "/app")


def test_without_request_uri_path_comes_from_script_name_and_path_info():
    params = [(b"REQUEST_METHOD", b"GET"), (b"SCRIPT_NAME", b"/app"), (b"PATH_INFO", b"/caf\xc3\xa9 y")]
    scope = build_scope(params)
    assert (scope["root_path"], scope["path"]) == ("", "/app/café y")
    assert scope["raw_path"] == b"/app/caf%C3%A9%20y"
    assert scope["query_string"] == b""
    assert scope["client"] is None and scope["server"] is None
    scope = build_scope([(b"SCRIPT_NAME", b"/"), (b"PATH_INFO", b"/x")])
    assert (scope["root_path"], scope["path"], scope["raw_path"]) == ("", "/x", b"/x")


def test_absolute_form_request_uri_and_raw_non_ascii_bytes():
    scope = build_scope([(b"REQUEST_URI", b"http://127.0.0.1:8080/hello/w%20x?x=1")])
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == (
        "/hello/w x",
        b"/hello/w%20x",
        b"x=1",
    )
    scope = build_scope([(b"REQUEST_URI", b"/caf\xc3\xa9%20x")])  # nginx passes raw bytes through
    assert (scope["path"], scope["raw_path"]) == ("/café x", b"/caf\xc3\xa9%20x")


def test_https_scheme_and_http_versions():
    base = [(b"REQUEST_URI", b"/"), (b"REQUEST_METHOD", b"GET")]
    assert build_scope([*base, (b"HTTPS", b"on")])["scheme"] == "https"
    assert build_scope([*base, (b"HTTPS", b"off"), (b"REQUEST_SCHEME", b"http")])["scheme"] == "http"
    assert build_scope([*base, (b"REQUEST_SCHEME", b"https")])["scheme"] == "https"
    assert build_scope([*base, (b"SERVER_PROTOCOL", b"HTTP/2.0")])["http_version"] == "2"
    assert build_scope([*base, (b"SERVER_PROTOCOL", b"HTTP/1.0")])["http_version"] == "1.0"


def test_non_utf8_bytes_never_raise():
    params = [
        (b"REQUEST_METHOD", b"GET"),
        (b"REQUEST_URI", b"/caf%E9?q=\xff"),
        (b"QUERY_STRING", b"q=\xff"),
        (b"HTTP_X_BIN", b"\xfe\xff"),
    ]
    scope = build_scope(params)
    assert scope["query_string"] == b"q=\xff"
    assert (b"x-bin", b"\xfe\xff") in scope["headers"]
    assert scope["raw_path"] == b"/caf%E9"


def test_repeated_cgi_variable_counts_with_its_last_value_and_empty_header_name_is_dropped():
    params = [
        (b"REQUEST_METHOD", b"GET"),
        (b"REQUEST_URI", b"/a"),
        (b"REQUEST_URI", b"/b?x=1"),
        (b"HTTP_", b"nameless"),
        (b"HTTP_X_A", b"1"),
        (b"HTTP_X_A", b"2"),
    ]
    scope = build_scope(params)
    assert (scope["path"], scope["query_string"]) == ("/b", b"x=1")
    assert scope["headers"] == [(b"x-a", b"1"), (b"x-a", b"2")]


def test_unusual_method_scheme_and_ports():
    params = [
        (b"REQUEST_METHOD", b"PROPFIND"),
        (b"REQUEST_SCHEME", b""),
        (b"REQUEST_URI", b"/"),
        (b"REMOTE_ADDR", b"10.0.0.1"),
        (b"REMOTE_PORT", b"x"),
        (b"SERVER_NAME", b"example.org"),
        (b"SERVER_PORT", b"x"),
    ]
    scope = build_scope(params)
    assert (scope["method"], scope["scheme"]) == ("PROPFIND", "http")
    assert scope["client"] == ("10.0.0.1", 0) and scope["server"] == ("example.org", None)


def test_header_name_cache_stays_bounded():
    for i in range(3 * scope_module._NAMES_MAX):
        name = b"HTTP_X_RANDOM_%d" % i
        assert build_scope([(name, b"v")])["headers"] == [(b"x-random-%d" % i, b"v")]
    assert len(scope_module._NAMES) <= scope_module._NAMES_MAX


def test_header_name_cache_takes_only_short_names():
    # A name can be as long as --max-params-size: such names are classified, never kept.
    names = scope_module._NAMES
    saved = names.copy()
    for name in [n for n, what in names.items() if what.__class__ is bytes]:
        del names[name]  # room in the cache (other tests filled it)
    try:
        long_name = b"HTTP_X_" + b"A" * 100_000
        short_name = b"HTTP_X_" + b"B" * (scope_module._NAME_CACHE_LEN - 7)
        for _ in range(2):
            scope = build_scope([(long_name, b"1"), (short_name, b"2")])
            assert scope["headers"] == [(b"x-" + b"a" * 100_000, b"1"), (b"x-" + b"b" * 57, b"2")]
        assert long_name not in names
        assert names[short_name] == b"x-" + b"b" * 57
    finally:
        names.clear()
        names.update(saved)


# -- what each front-end really sends (tests/fixtures/frontends/, captured through the recipes
# of docs/deployment.md by tests/deploy/capture_frontends.py)

PREFIX = "/notes-site"
CAFE_GET = "GET /hello/caf%C3%A9%20x?x=%C3%A9"


def headers_of(params: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers the scope must list: HTTP_* in order, then the non-empty CGI content
    variables (the HTTP_CONTENT_* duplicates dropped)."""
    sent = dict(params)
    headers = [
        (k[5:].lower().replace(b"_", b"-"), v)
        for k, v in params
        if k.startswith(b"HTTP_") and k not in (b"HTTP_CONTENT_TYPE", b"HTTP_CONTENT_LENGTH")
    ]
    for name in (b"CONTENT_TYPE", b"CONTENT_LENGTH"):
        if sent.get(name):
            headers.append((name.lower().replace(b"_", b"-"), sent[name]))
    return headers


FRONTENDS = [
    # (server, variant, request, --root-path, root_path, path, raw_path)
    ("nginx", "nginx", CAFE_GET, "", "", "/hello/café x", b"/hello/caf%C3%A9%20x"),
    ("nginx", "nginx-prefix", f"GET {PREFIX}/hello/world?x=1", PREFIX, PREFIX, f"{PREFIX}/hello/world", None),
    ("apache", "apache-proxypass", "GET /hello/world?x=1", "", "", "/hello/world", None),
    ("apache", "apache-proxypass-prefix", f"GET {PREFIX}/", PREFIX, PREFIX, f"{PREFIX}/", None),
    ("apache", "apache-sethandler-split", "POST /hello/world", "", "", "/hello/world", None),
    ("lighttpd", "lighttpd", "GET /hello/world?x=1", "", "", "/hello/world", None),
    ("lighttpd", "lighttpd-fix-root-scriptname", CAFE_GET, "", "", "/hello/café x", b"/hello/caf%C3%A9%20x"),
    (
        "lighttpd",
        "lighttpd-prefix",
        f"GET {PREFIX}/hello/world?x=1",
        PREFIX,
        PREFIX,
        f"{PREFIX}/hello/world",
        None,
    ),
    ("lighttpd", "lighttpd-prefix", f"GET {PREFIX}/hello/world?x=1", "", "", f"{PREFIX}/hello/world", None),
    ("caddy", "caddy", "GET /hello/world?x=1", "", "", "/hello/world", None),
    ("caddy", "caddy-split", CAFE_GET, "", "", "/hello/café x", b"/hello/caf%C3%A9%20x"),
    ("caddy", "caddy-split", "POST /hello/world", "", "", "/hello/world", None),
    (
        "caddy",
        "caddy-handle-path",
        f"GET {PREFIX}/hello/world?x=1",
        PREFIX,
        PREFIX,
        f"{PREFIX}/hello/world",
        None,
    ),
]


@pytest.mark.parametrize(
    ("server", "variant", "request_", "root_option", "root_path", "path", "raw_path"),
    FRONTENDS,
    ids=[f"{f[1]}:{f[2]}{':' + f[3] if f[3] else ''}" for f in FRONTENDS],
)
def test_frontend(server, variant, request_, root_option, root_path, path, raw_path):
    params = captured(server, variant, request_)
    sent = dict(params)
    method, _, target = request_.partition(" ")
    assert build_scope(params, root_path=root_option) == {
        "type": "http",
        "asgi": ASGI,
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": raw_path or path.encode(),
        "query_string": target.partition("?")[2].encode(),
        "root_path": root_path,
        "headers": headers_of(params),
        "client": ("127.0.0.1", int(sent[b"REMOTE_PORT"])),
        "server": ((sent.get(b"SERVER_ADDR") or sent[b"SERVER_NAME"]).decode(), int(sent[b"SERVER_PORT"])),
        "extensions": fcgi(params),
    }


def wsgi_view(params: list[tuple[bytes, bytes]], root_path: str) -> tuple[str, str, bytes]:
    """(root_path, path, query_string) as ASGI would say what the WSGI environ says."""
    env = build_environ(text_params(params), {}, root_path=root_path)

    def text(native: str) -> str:
        return native.encode("latin-1").decode("utf-8", "replace")

    script, info = env["SCRIPT_NAME"], env["PATH_INFO"]
    return text(script), text(script + info), env["QUERY_STRING"].encode("latin-1")


@pytest.mark.parametrize("root_path", ["", PREFIX, "/hello"])
@pytest.mark.parametrize("capture", every_capture(), ids=lambda c: f"{c[1]}:{c[2]}")
def test_asgi_and_wsgi_agree_on_every_capture(capture, root_path):
    params = captured(*capture)
    scope = build_scope(params, root_path=root_path)
    assert (scope["root_path"], scope["path"], scope["query_string"]) == wsgi_view(params, root_path)


_TOKENS = [b"/", b"a", b"b", b"\xc3\xa9", b"\xff", b"%", b"%C3", b"%A9", b"%2F", b"%ZZ", b"?", b"x=", b":"]
_path_bytes = st.lists(st.sampled_from(_TOKENS), max_size=12).map(b"".join)


@given(
    uri=st.one_of(st.none(), _path_bytes.map(lambda t: b"/" + t)),
    script=st.one_of(st.none(), _path_bytes),
    info=st.one_of(st.none(), _path_bytes),
    root_path=st.sampled_from(["", "/a", "/a/b", "/é"]),
)
def test_asgi_and_wsgi_agree_on_any_path(uri, script, info, root_path):
    params = [(b"REQUEST_METHOD", b"GET")]
    for name, value in ((b"REQUEST_URI", uri), (b"SCRIPT_NAME", script), (b"PATH_INFO", info)):
        if value is not None:
            params.append((name, value))
    scope = build_scope(params, root_path=root_path)
    assert (scope["root_path"], scope["path"], scope["query_string"]) == wsgi_view(params, root_path)
