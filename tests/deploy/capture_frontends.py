"""What each front-end really sends: the FastCGI params of a few requests through every
variant of tests/deploy/_frontends.py, to ``tests/fixtures/frontends/<server>.json``.

    python -m tests.deploy.capture_frontends [VARIANT ...]     # (re)writes the fixtures

Each front-end runs its recipe in front of a gateway serving ``frontend_apps:dump``, which
answers the raw params. A fixture file holds, per variant, the requests (``"GET /path"``)
and the params as sent, latin-1 decoded, in order: what the unit tests of the environ and
scope builders are written against (``captured``, ``every_capture``), and what
``test_frontends.py`` compares a live capture with (``ROUTING`` keys and param names).
``capture`` is that shared step.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.conftest import REPO_ROOT
from tests.deploy._frontends import BY_NAME, VARIANTS, Gateways, Variant, available, start
from tests.deploy._procs import request

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "frontends"
#: the params that decide routing, compared with a live capture
ROUTING = ("REQUEST_URI", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "REQUEST_METHOD")
FORM = b"a=1&b=%C3%A9"


def requests_for(variant: Variant) -> list[tuple[str, str]]:
    """(method, target) of the requests captured through ``variant``."""
    p = variant.prefix
    return [
        ("GET", f"{p}/hello/world?x=1"),
        ("GET", f"{p}/hello/caf%C3%A9%20x?x=%C3%A9"),
        ("GET", f"{p}/"),
        ("POST", f"{p}/hello/world"),
    ]


def capture(variant: Variant, workdir: Path, gateways: Gateways) -> dict[str, list[list[str]]]:
    """``"METHOD target"`` -> params, through ``variant`` in front of the dump app."""
    proc, base = start(variant, workdir, gateways.get("dump"))
    try:
        out: dict[str, list[list[str]]] = {}
        for method, target in requests_for(variant):
            body = FORM if method == "POST" else None
            headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
            r = request(method, base + target, body=body, headers=headers)
            assert r.status == 200, (variant.name, target, r.status, r.body[:500])
            out[f"{method} {target}"] = r.json()
        return out
    finally:
        proc.stop()


def dumps(data: dict[str, Any]) -> str:
    """JSON with one param pair a line."""
    text = json.dumps(data, indent=1)
    string = r'"(?:[^"\\]|\\.)*"'
    return re.sub(rf"\[\n\s*({string}),\n\s*({string})\n\s*\]", r"[\1, \2]", text) + "\n"


def fixture_path(server: str) -> Path:
    return FIXTURES / f"{server}.json"


def load(server: str) -> dict[str, Any]:
    return json.loads(fixture_path(server).read_text())


def captured(server: str, variant: str, key: str) -> list[tuple[bytes, bytes]]:
    """The params of one saved request (``"GET /hello/world?x=1"``), as the codec gives them."""
    pairs = load(server)["variants"][variant]["requests"][key]
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in pairs]


def every_capture() -> list[tuple[str, str, str]]:
    """(server, variant, request key) of every saved request."""
    return [
        (server, name, key)
        for server in ("nginx", "apache", "lighttpd", "caddy")
        for name, variant in load(server)["variants"].items()
        for key in variant["requests"]
    ]


def main(names: list[str]) -> int:
    chosen = [BY_NAME[n] for n in names] if names else VARIANTS
    workdir = Path(tempfile.mkdtemp(prefix="fcgw-capture-", dir="/tmp"))
    workdir.chmod(0o755)
    gateways = Gateways(workdir)
    try:
        for variant in chosen:
            why = available(variant.server)
            if why:
                print(f"{variant.name}: skipped ({why})")
                continue
            path = fixture_path(variant.server)
            data = json.loads(path.read_text()) if path.exists() else {"variants": {}}
            requests = capture(variant, workdir / variant.name, gateways)
            first = dict(next(iter(requests.values())))
            data["server_software"] = first.get("SERVER_SOFTWARE", "")
            data["variants"][variant.name] = {"recipe": variant.text(), "requests": requests}
            FIXTURES.mkdir(parents=True, exist_ok=True)
            path.write_text(dumps(data))
            print(f"{variant.name}: {len(requests)} requests -> {path.relative_to(REPO_ROOT)}")
    finally:
        gateways.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
