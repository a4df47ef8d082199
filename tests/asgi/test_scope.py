"""The ASGI scope builder, by whole-dict equality from params nginx really sent."""

from __future__ import annotations

from gateway.asgi.scope import build_scope
from tests.capture import captured_requests

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


def test_path_info_present_uses_script_name_as_root_path():
    params = [
        (b"REQUEST_METHOD", b"GET"),
        (b"SCRIPT_NAME", b"/mount"),
        (b"PATH_INFO", b"/a b"),
        (b"REQUEST_URI", b"/mount/a%20b?x=1"),
        (b"QUERY_STRING", b"x=1"),
    ]
    scope = build_scope(params)
    assert (scope["root_path"], scope["path"], scope["raw_path"]) == ("/mount", "/mount/a b", b"/mount/a%20b")
    assert scope["query_string"] == b"x=1"


def test_without_request_uri_path_comes_from_script_name_and_path_info():
    params = [(b"REQUEST_METHOD", b"GET"), (b"SCRIPT_NAME", b"/app"), (b"PATH_INFO", b"/x y")]
    scope = build_scope(params)
    assert scope["path"] == "/app/x y"
    assert scope["raw_path"] == b"/app/x%20y"
    assert scope["query_string"] == b""
    assert scope["client"] is None and scope["server"] is None


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
    from gateway.asgi import scope as scope_module

    for i in range(3 * scope_module._NAMES_MAX):
        name = b"HTTP_X_RANDOM_%d" % i
        assert build_scope([(name, b"v")])["headers"] == [(b"x-random-%d" % i, b"v")]
    assert len(scope_module._NAMES) <= scope_module._NAMES_MAX


def test_header_name_cache_takes_only_short_names():
    # A name can be as long as --max-params-size: such names are classified, never kept.
    from gateway.asgi import scope as scope_module

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
