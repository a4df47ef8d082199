"""The single-instance nginx recipes, served for real: each server block as written (host
paths and ports rewritten), in front of the gateway started from the matching systemd unit.

- Flask, ``nginx.conf``: unix socket, connections kept alive (the gateway's status page
  counts far fewer accepted connections than requests), static files from disk, a 30 MB
  upload through nginx's request buffering, 413 above ``client_max_body_size``.
- Django, ``nginx-https-prefix.conf`` with ``deploy/production.py``: the unit's
  ExecStartPre migrates, ``manage.py check --deploy`` passes, collectstatic output is served
  by nginx; over TLS under /notes-site/ with ``--root-path``: HTTPS reaches Django (HSTS,
  secure redirects), reverse()/redirects carry the prefix, CSRF works with the port-ful
  origin trusted, plain HTTP is redirected, an unknown Host gets 400.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlencode

from gateway.client import FastCGIClient
from tests.deploy._procs import request, self_signed_cert, start_nginx
from tests.deploy._render import DJANGO_DEPLOY, FLASK_DEPLOY, HOST_ROOT, Rewriter, Unit, listen_on, option
from tests.integration.nginx import free_port

STYLE = (FLASK_DEPLOY.parent / "static" / "style.css").read_bytes()


def test_flask_unix_socket_keepalive_static_uploads(workdir: Path, unit_gateway) -> None:
    rewrite = Rewriter.for_dir(workdir)
    gw = unit_gateway(FLASK_DEPLOY / "fcgi-gateway-flask.service", extra=("--status-path", "/fpm-status"))
    port = free_port()
    conf = listen_on(rewrite((FLASK_DEPLOY / "nginx.conf").read_text()), {8080: port})
    nginx = start_nginx(workdir / "nginx", conf, [port])
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(60):
            assert request("GET", f"{base}/health").status == 200
        # A worker counts a request in the scoreboard just after sending its answer: the
        # status page (served by any worker) may see the last one a moment later.
        deadline = time.monotonic() + 5
        while True:
            with FastCGIClient(option(gw.argv, "--bind") or "", timeout=10) as client:
                status = json.loads(client.request("GET", "/fpm-status?json").body)
            if status["requests"] >= 60 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        print(f"keepalive: {status['accepted conn']} connections for {status['requests']} requests")
        assert status["requests"] >= 60
        kept_alive = status["accepted conn"] <= 8

        r = request("GET", f"{base}/static/style.css")
        assert r.status == 200 and r.body == STYLE
        assert r.header("Cache-Control") == "max-age=3600"  # nginx's `expires 1h`, not Flask

        data = os.urandom(1 << 20) * 30
        r = request("POST", f"{base}/upload", body=data, headers={"Content-Type": "application/octet-stream"},
                    timeout=60)  # fmt: skip
        assert r.status == 200, r.body[:300]
        assert r.json() == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "filename": None}
        assert too_large_status(port, 100 * 1024 * 1024 + 1) == 413
        assert kept_alive, (
            f"nginx opened {status['accepted conn']} connections for {status['requests']} requests"
        )
    finally:
        nginx.stop()
        print(f"----- nginx error log -----\n{nginx.log_text()[-3000:]}")


def too_large_status(port: int, length: int) -> int:
    """nginx refuses a body over client_max_body_size from its Content-Length alone."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n\r\n".encode())
        return int(s.recv(4096).split(b" ", 2)[1])


def django_env(workdir: Path, tls_port: int) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": "deploy.production",
        "DJANGO_SECRET_KEY": hashlib.sha256(os.urandom(32)).hexdigest(),
        "DJANGO_CSRF_TRUSTED_ORIGINS": f"https://127.0.0.1:{tls_port}",
        "DJANGO_STATIC_ROOT": str(workdir / "staticfiles"),
    }


def manage(
    unit: Unit, rewrite: Rewriter, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    cwd = rewrite(unit.get("Service", "WorkingDirectory"))
    unit.make_directories(rewrite)
    full = {**os.environ, **unit.environment(rewrite), **env}
    pre = unit.command("ExecStartPre", rewrite)
    if args:  # manage.py <args> the way ExecStartPre runs manage.py
        pre = [*pre[: pre.index("manage.py") + 1], *args]
    return subprocess.run(pre, cwd=cwd, env=full, capture_output=True, text=True, timeout=120)


def test_django_https_prefix_production(workdir: Path, unit_gateway) -> None:
    http_port, tls_port = free_port(), free_port()
    rewrite = Rewriter.for_dir(workdir)
    rewrite.add(f"{HOST_ROOT}/examples/django_site/staticfiles/", f"{workdir}/staticfiles/", first=True)
    unit_path = DJANGO_DEPLOY / "fcgi-gateway-django.service"
    unit = Unit.load(unit_path)
    env = django_env(workdir, tls_port)
    # Release steps: migrations (the unit's ExecStartPre), the deploy checks, collectstatic.
    for args in ((), ("check", "--deploy", "--fail-level", "WARNING"), ("collectstatic", "--noinput")):
        done = manage(unit, rewrite, env, *args)
        assert done.returncode == 0, f"manage.py {args or 'ExecStartPre'}:\n{done.stdout}\n{done.stderr}"
    unit_gateway(unit_path, extra=("--root-path", "/notes-site"), env=env, rewrite=rewrite)
    self_signed_cert(workdir)
    conf = listen_on(
        rewrite((DJANGO_DEPLOY / "nginx-https-prefix.conf").read_text()), {80: http_port, 443: tls_port}
    )
    nginx = start_nginx(workdir / "nginx", conf, [http_port, tls_port])
    base = f"https://127.0.0.1:{tls_port}"
    try:
        r = request("GET", f"http://127.0.0.1:{http_port}/notes-site/api/notes")
        assert r.status == 301 and r.header("Location") == "https://127.0.0.1/notes-site/api/notes"
        r = request("GET", f"{base}/notes-site/api/notes")
        assert r.status == 200 and r.json() == [], r.body[:500]
        assert r.header("Strict-Transport-Security", "").startswith("max-age=")  # is_secure(): HTTPS=on
        assert request("GET", f"{base}/notes-site").header("Location") == f"{base}/notes-site/"

        title = "Over TLS under a prefix"
        r = request("POST", f"{base}/notes-site/api/notes", body=json.dumps({"title": title}).encode(),
                    headers={"Content-Type": "application/json"})  # fmt: skip
        assert r.status == 201 and r.header("Location") == f"/notes-site/api/notes/{r.json()['id']}"

        form = request("GET", f"{base}/notes-site/notes/new")
        assert form.status == 200 and 'action="/notes-site/notes/new"' in form.text
        cookie = next(c for c in form.header_list("Set-Cookie") if c.startswith("csrftoken="))
        assert "Secure" in cookie
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)[1]
        post = {"title": "Form over TLS", "body": "", "csrfmiddlewaretoken": token}
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie.split(";")[0]}
        r = request("POST", f"{base}/notes-site/notes/new", body=urlencode(post).encode(), headers=headers)
        assert r.status == 403  # HTTPS: Django also wants a Referer (or Origin) of a trusted origin
        headers["Origin"] = base
        r = request("POST", f"{base}/notes-site/notes/new", body=urlencode(post).encode(), headers=headers)
        assert r.status == 303 and r.header("Location") == "/notes-site/", r.text[:500]
        assert {n["title"] for n in request("GET", f"{base}/notes-site/api/notes").json()} == {
            title,
            post["title"],
        }

        assert request("GET", f"{base}/notes-site/api/notes", headers={"Host": "evil.example"}).status == 400
        static = request("GET", f"{base}/static/admin/css/base.css")
        assert static.status == 200 and static.header("Cache-Control") == "max-age=3600"
    finally:
        nginx.stop()
        print(f"----- nginx error log -----\n{nginx.log_text()[-3000:]}")
