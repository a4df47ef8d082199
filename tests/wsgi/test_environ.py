"""The PEP 3333 environ builder, by dict equality from params nginx, Apache, lighttpd and
Caddy really sent (tests/fixtures/)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.routing import cgi_path, origin_path, split_path, under_root
from gateway.wsgi.environ import build_environ as _build_environ
from gateway.wsgi.environ import text_params
from tests.capture import captured_requests
from tests.deploy.capture_frontends import captured


def build_environ(params: list[tuple[bytes, bytes]], base: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """The params as the sync worker's codec delivers them (latin-1 str), from bytes."""
    return _build_environ(text_params(params), base, **kw)


REQ = captured_requests()
BASE = {"wsgi.version": (1, 0), "wsgi.run_once": False}
COMMON = {
    "wsgi.version": (1, 0),
    "wsgi.run_once": False,
    "DOCUMENT_ROOT": "/tmp/peers/nginx/html",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REQUEST_SCHEME": "http",
    "GATEWAY_INTERFACE": "CGI/1.1",
    "SERVER_SOFTWARE": "nginx/1.22.1",
    "REMOTE_ADDR": "127.0.0.1",
    "REMOTE_USER": "",
    "SERVER_ADDR": "127.0.0.1",
    "SERVER_PORT": "28417",
    "REDIRECT_STATUS": "200",
    "HTTP_HOST": "127.0.0.1",
    "HTTP_USER_AGENT": "curl/7.88.1",
    "HTTP_ACCEPT": "*/*",
    "wsgi.url_scheme": "http",
    "SERVER_NAME": "127.0.0.1",
}


def test_get_duplicate_cookies_unicode_path():
    env = build_environ(REQ["/app/x y"], BASE)
    assert env == {
        **COMMON,
        "QUERY_STRING": "q=1",
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/app/x y",
        "REQUEST_URI": "/app/x%20y?q=1",
        "DOCUMENT_URI": "/app/x y",
        "REMOTE_PORT": "49452",
        "HTTP_X_FOO_BAR": "d",
        "HTTP_COOKIE": "a=1; b=2",
    }


def test_post_content_vars_once():
    env = build_environ(REQ["/form"], BASE)
    assert env == {
        **COMMON,
        "QUERY_STRING": "",
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": "7",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/form",
        "REQUEST_URI": "/form",
        "DOCUMENT_URI": "/form",
        "REMOTE_PORT": "49454",
    }


def test_chunked_keeps_transfer_encoding():
    env = build_environ(REQ["/nobuf/chunked"], BASE)
    assert env["HTTP_TRANSFER_ENCODING"] == "chunked"
    assert env["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert "HTTP_CONTENT_TYPE" not in env


def test_get_drops_empty_content_vars():
    env = build_environ(REQ["/keep/1"], BASE)
    assert "CONTENT_TYPE" not in env and "CONTENT_LENGTH" not in env


def test_root_path_splits_script_name_and_path_info():
    env = build_environ(REQ["/app/x y"], BASE, root_path="/app")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/x y")
    env = build_environ(REQ["/form"], BASE, root_path="/app")  # not under the mount point
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/form")
    env = build_environ(REQ["/app/x y"], BASE, root_path="/ap")  # not at a segment boundary
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/ap", "/app/x y")


def test_split_from_server_is_not_kept():
    # fastcgi_split_path_info, lighttpd, Apache's SetHandler: a split, but not the mount point
    params = [
        (b"REQUEST_METHOD", b"GET"),
        (b"SCRIPT_NAME", b"/index.py"),
        (b"PATH_INFO", b"/a/b"),
        (b"REQUEST_URI", b"/index.py/a/b"),
    ]
    env = build_environ(params, BASE)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/index.py/a/b")
    env = build_environ(params, BASE, root_path="/index.py")  # the mount point is --root-path
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/index.py", "/a/b")
    env = build_environ([p for p in params if p[0] != b"REQUEST_URI"], BASE)  # then SN + PI
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/index.py/a/b")
    env = build_environ([(b"SCRIPT_NAME", b"/"), (b"PATH_INFO", b"/x")], BASE)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/x")


def test_percent_decoded_utf8_path_is_latin1_bytes_as_str():
    params = [(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/caf%C3%A9/%2541?x=%20")]
    env = build_environ(params, BASE)
    assert env["PATH_INFO"] == "/caf\xc3\xa9/%41"
    assert env["PATH_INFO"].encode("latin-1").decode("utf-8") == "/café/%41"
    assert env["QUERY_STRING"] == "x=%20"


def test_custom_params_and_https_pass_through():
    params = [
        (b"REQUEST_METHOD", b"GET"),
        (b"REQUEST_URI", b"/"),
        (b"HTTPS", b"on"),
        (b"SCRIPT_FILENAME", b"/srv/app.py"),
        (b"APP_ENV", b"prod"),
        (b"HTTP_HOST", b"example.org:8443"),
        (b"SERVER_NAME", b""),
        (b"HTTP_X_MULTI", b"a"),
        (b"HTTP_X_MULTI", b"b"),
    ]
    env = build_environ(params, BASE)
    assert env["wsgi.url_scheme"] == "https"
    assert env["SCRIPT_FILENAME"] == "/srv/app.py"
    assert env["APP_ENV"] == "prod"
    assert env["SERVER_NAME"] == "example.org"
    assert env["SERVER_PORT"] == "443"
    assert env["HTTP_X_MULTI"] == "a, b"


def test_minimal_params_get_pep3333_defaults():
    env = build_environ([(b"SCRIPT_NAME", b"/x")], BASE)
    assert env["REQUEST_METHOD"] == "GET"
    assert env["QUERY_STRING"] == ""
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_NAME"] == "localhost" and env["SERVER_PORT"] == "80"
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/x")


def test_non_ascii_root_path_is_matched_in_the_wsgi_form():
    params = [(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/caf%C3%A9/x")]
    env = build_environ(params, BASE, root_path="/café")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/caf\xc3\xa9", "/x")


def test_absolute_form_request_uri_is_reduced_to_its_path():
    # Apache passes `GET http://host/path HTTP/1.1` on as REQUEST_URI as it came
    params = [(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"http://127.0.0.1:8080/hello/w%20x?x=1")]
    env = build_environ(params, BASE)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == ("", "/hello/w x", "x=1")
    assert origin_path("https://example.org") == "/"
    assert origin_path("*") == "*" and origin_path("") == ""
    assert origin_path("a/b://c/d") == "a/b://c/d"


def test_cgi_path_and_under_root():
    assert cgi_path("/app/", "/x") == "/app/x" and cgi_path(b"/app/", b"/x") == b"/app/x"
    assert cgi_path("/app", "/x") == "/app/x" and cgi_path(b"", b"/x") == b"/x"
    assert cgi_path("/", "") == "/" and cgi_path("", "") == ""
    assert under_root("/app", "/app") and under_root("/app/x", "/app")
    assert not under_root("/application", "/app") and not under_root("/", "/app")


def test_split_path():
    assert split_path("/app/x", "/app") == ("/app", "/x")
    assert split_path("/app", "/app") == ("/app", "")
    assert split_path("/application", "/app") == ("/app", "/application")
    assert split_path("/x", "") == ("", "/x")


# -- what each front-end really sends (tests/fixtures/frontends/, captured through the recipes
# of docs/deployment.md by tests/deploy/capture_frontends.py)

PREFIX = "/notes-site"
CAFE = "/hello/caf\xc3\xa9 x"  # /hello/café x in the WSGI "bytes as str" form
CAFE_GET = "GET /hello/caf%C3%A9%20x?x=%C3%A9"
EMPTY_CONTENT = ("CONTENT_TYPE", "CONTENT_LENGTH")


def sent(params: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The params as the environ passes them through."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in params}


FRONTENDS = [
    # (server, variant, request, --root-path, SCRIPT_NAME, PATH_INFO, params dropped)
    ("nginx", "nginx", CAFE_GET, "", "", CAFE, EMPTY_CONTENT),
    ("nginx", "nginx-prefix", f"GET {PREFIX}/hello/world?x=1", PREFIX, PREFIX, "/hello/world", EMPTY_CONTENT),
    ("apache", "apache-proxypass", "GET /hello/world?x=1", "", "", "/hello/world", ()),
    ("apache", "apache-proxypass-tcp", CAFE_GET, "", "", CAFE, ()),
    ("apache", "apache-proxypass-prefix", f"GET {PREFIX}/", PREFIX, PREFIX, "/", ()),
    ("apache", "apache-sethandler", "GET /hello/world?x=1", "", "", "/hello/world", ()),
    ("apache", "apache-sethandler-split", "POST /hello/world", "", "", "/hello/world", ()),
    ("lighttpd", "lighttpd", "GET /hello/world?x=1", "", "", "/hello/world", ()),
    ("lighttpd", "lighttpd-fix-root-scriptname", "GET /", "", "", "/", ()),
    ("lighttpd", "lighttpd-prefix", f"GET {PREFIX}/hello/caf%C3%A9%20x?x=%C3%A9", PREFIX, PREFIX, CAFE, ()),
    # lighttpd's SCRIPT_NAME is the prefix here, but only --root-path mounts the app
    ("lighttpd", "lighttpd-prefix", f"GET {PREFIX}/hello/world?x=1", "", "", f"{PREFIX}/hello/world", ()),
    ("caddy", "caddy", "GET /hello/world?x=1", "", "", "/hello/world", ("CONTENT_TYPE",)),
    ("caddy", "caddy-split", CAFE_GET, "", "", CAFE, ("CONTENT_TYPE",)),
    (
        "caddy",
        "caddy-split",
        "POST /hello/world",
        "",
        "",
        "/hello/world",
        ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"),
    ),
    ("caddy", "caddy-prefix", f"GET {PREFIX}/", PREFIX, PREFIX, "/", ("CONTENT_TYPE",)),
    (
        "caddy",
        "caddy-handle-path",
        f"GET {PREFIX}/hello/world?x=1",
        PREFIX,
        PREFIX,
        "/hello/world",
        ("CONTENT_TYPE",),
    ),
]


@pytest.mark.parametrize(
    ("server", "variant", "request_", "root_path", "script_name", "path_info", "dropped"),
    FRONTENDS,
    ids=[f"{f[1]}:{f[2]}{':' + f[3] if f[3] else ''}" for f in FRONTENDS],
)
def test_frontend(server, variant, request_, root_path, script_name, path_info, dropped):
    params = captured(server, variant, request_)
    env = build_environ(params, BASE, root_path=root_path)
    want = {
        **BASE,
        **sent(params),
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path_info,
        "wsgi.url_scheme": "http",
    }
    for key in dropped:
        del want[key]
    assert env == want
