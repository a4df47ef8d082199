"""Every front-end's recipe, for real, in front of a WSGI and an ASGI app: nginx, Apache
mod_proxy_fcgi, lighttpd mod_fastcgi and Caddy's fastcgi transport, as docs/deployment.md
and examples/flask_app/deploy/ write them, plus the variants users write (Caddy's
``split .php``, lighttpd's ``fix-root-scriptname``, Apache's SetHandler split, a prefix
mount with ``--root-path``); see ``tests/deploy/_frontends.py``.

Through each, routes like ``/hello/world?x=1`` and ``/hello/caf%C3%A9%20x`` must reach the
right view of a Flask app (on the sync worker, and on the async worker through the a2wsgi
bridge) and of a Starlette app, which must all see the same mount point, path and query, and
build their own URLs with the mount point; an absolute-form request target too (Apache
passes it on as REQUEST_URI). The static files of the recipes come from disk.
``test_params_are_the_fixtures`` checks that each front-end still sends what
tests/fixtures/frontends/ holds (the unit tests of the builders are written against those
captures).

Skipped only where the server is not installed (``scripts/setup-env`` installs all four),
or for Apache when not root.
"""

from __future__ import annotations

import http.client
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.deploy._frontends import BY_NAME, PREFIX, VARIANTS, Gateways, Variant, available, start
from tests.deploy._procs import request
from tests.deploy._render import FLASK_DEPLOY
from tests.deploy.capture_frontends import ROUTING, capture, load

STYLE = (FLASK_DEPLOY.parent / "static" / "style.css").read_bytes()
#: (target under the mount point, view, path params, path the app sees, query's x, raw query)
ROUTES = [
    ("/hello/world?x=1", "hello_world", {}, "/hello/world", "1", "x=1"),
    ("/hello/caf%C3%A9%20x?x=%C3%A9", "hello", {"name": "café x"}, "/hello/café x", "é", "x=%C3%A9"),
    ("/?x=", "index", {}, "/", "", "x="),
]


@pytest.fixture(scope="module")
def gateways() -> Iterator[Gateways]:
    workdir = Path(tempfile.mkdtemp(prefix="fcgw-front-", dir="/tmp"))
    workdir.chmod(0o755)  # Apache's and lighttpd's www-data reach the sockets in it
    gw = Gateways(workdir)
    try:
        yield gw
    finally:
        gw.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def frontend_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fcgw-fe-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def skip_unless_available(variant: Variant) -> None:
    why = available(variant.server)
    if why:
        pytest.skip(why)


def check_routes(base: str, variant: Variant, interface: str) -> None:
    p = variant.prefix
    for target, view, args, path, x, query in ROUTES:
        r = request("GET", f"{base}{p}{target}")
        assert r.status == 200, (variant.name, target, r.status, r.body[:500])
        got = r.json()
        url = got.pop("url")
        want = {"interface": interface, "view": view, "args": args, "x": x, "query": query,
                "script_name": p, "path": path}  # fmt: skip
        assert got == want, (variant.name, target)
        assert unquote(url) == p + path, (variant.name, target, url)  # the app's URL has the mount point
    r = request("GET", f"{base}{p}/hello/world/nope")
    assert r.status == 404, (variant.name, r.status)
    # An absolute-form request target (Apache passes it on as REQUEST_URI).
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", f"{base}{p}/hello/world?x=2")
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (variant.name, resp.status, body[:500])
    finally:
        conn.close()
    got = json.loads(body)
    assert (got["view"], got["script_name"], got["path"], got["x"]) == ("hello_world", p, "/hello/world", "2")
    if variant.static:
        r = request("GET", f"{base}/static/style.css")
        assert r.status == 200 and r.body == STYLE, (variant.name, r.status)


@pytest.mark.parametrize("app", ["wsgi", "wsgi-async", "asgi"])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_routes_reach_the_right_view(
    variant: Variant, app: str, gateways: Gateways, frontend_dir: Path
) -> None:
    skip_unless_available(variant)
    upstream = gateways.get(app, variant.prefix)
    proc, base = start(variant, frontend_dir, upstream)
    try:
        check_routes(base, variant, app.partition("-")[0])
    finally:
        proc.stop()
        print(f"----- {variant.name} log -----\n{proc.log_text()[-3000:]}")


def test_lighttpd_needs_check_local_disabled(gateways: Gateways, frontend_dir: Path) -> None:
    """The recipe's ``check-local`` line is needed: without it lighttpd answers 404 itself."""
    recipe = BY_NAME["lighttpd"]
    skip_unless_available(recipe)
    line = '        "check-local" => "disable",\n'
    variant = Variant("lighttpd-check-local", "lighttpd", "lighttpd", ((line, ""),))
    proc, base = start(variant, frontend_dir, gateways.get("wsgi"))
    try:
        r = request("GET", f"{base}/hello/world?x=1")
        assert r.status == 404 and b"<html" in r.body and b"hello_world" not in r.body
    finally:
        proc.stop()


SERVERS = ["nginx", "apache", "lighttpd", "caddy"]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_params_are_the_fixtures(variant: Variant, gateways: Gateways, frontend_dir: Path) -> None:
    skip_unless_available(variant)
    saved = load(variant.server)["variants"][variant.name]
    assert saved["recipe"] == variant.text(), "recipe changed: python -m tests.deploy.capture_frontends"
    live = capture(variant, frontend_dir, gateways)
    assert list(live) == list(saved["requests"])
    for key, params in live.items():
        want = saved["requests"][key]
        assert sorted({k for k, _ in params}) == sorted({k for k, _ in want}), (variant.name, key)
        routing = [(k, v) for k, v in params if k in ROUTING]
        assert sorted(routing) == sorted((k, v) for k, v in want if k in ROUTING), (variant.name, key)


def test_every_server_has_its_fixture() -> None:
    for server in SERVERS:
        variants = load(server)["variants"]
        assert sorted(variants) == sorted(v.name for v in VARIANTS if v.server == server)
    assert {v.prefix for v in VARIANTS} == {"", PREFIX}
