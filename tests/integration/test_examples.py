"""The example apps (examples/flask_app, examples/django_site) behind a real nginx.

Five set-ups: Flask on the sync and the async (a2wsgi bridge) worker, Django's WSGI
handler on both, and Django's ASGI handler on the async worker. Each test gets a fresh
SQLite database in its tmp_path (the examples create/migrate it on import) and runs the
gateway with ``--chdir`` into the example's directory, as the READMEs describe. The admin
test runs ``manage.py collectstatic`` first and lets nginx serve ``/static/``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.conftest import REPO_ROOT

FLASK_DIR = REPO_ROOT / "examples" / "flask_app"
DJANGO_DIR = REPO_ROOT / "examples" / "django_site"

#: id -> (example dir, app, worker)
SETUPS = {
    "flask-sync": (FLASK_DIR, "app:app", "sync"),
    "flask-async": (FLASK_DIR, "app:app", "async"),
    "django-wsgi-sync": (DJANGO_DIR, "mysite.wsgi:application", "sync"),
    "django-wsgi-async": (DJANGO_DIR, "mysite.wsgi:application", "async"),
    "django-asgi-async": (DJANGO_DIR, "mysite.asgi:application", "async"),
}
DJANGO_SETUPS = [k for k in SETUPS if k.startswith("django")]


def _load_pattern():
    spec = importlib.util.spec_from_file_location("_example_pattern", FLASK_DIR / "download_pattern.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pattern = _load_pattern()


def example_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "FCGI_EXAMPLE_FLASK_DB": str(tmp_path / "flask.sqlite3"),
        "FCGI_EXAMPLE_DJANGO_DB": str(tmp_path / "django.sqlite3"),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        **extra,
    }


@pytest.fixture
def start(served, tmp_path):
    """``start(setup_id, env=None, **nginx_kwargs)``: the example behind nginx."""

    def make(setup: str, env: dict[str, str] | None = None, **nginx_kwargs):
        directory, app, worker = SETUPS[setup]
        args = ["--chdir", str(directory), "--worker", worker]
        return served(app, *args, env={**example_env(tmp_path), **(env or {})}, **nginx_kwargs)

    return make


def multipart(field: str, filename: str, data: bytes) -> tuple[str, bytes]:
    boundary = "fcgw-" + hashlib.sha256(data[:64]).hexdigest()[:24]
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return f"multipart/form-data; boundary={boundary}", head + data + f"\r\n--{boundary}--\r\n".encode()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def csrf_pair(s, path: str) -> tuple[str, str]:
    """(csrftoken cookie, csrfmiddlewaretoken of the form) from a GET of ``path``."""
    r = s.get(path)
    assert r.status == 200, r.text
    cookie = next(m.group(1) for c in r.header_list("Set-Cookie") if (m := re.match(r"csrftoken=([^;]+)", c)))
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', r.text).group(1)
    return cookie, token


@pytest.mark.parametrize("setup", SETUPS)
def test_notes_api_pages_and_form(start, setup):
    s = start(setup)
    title = f"Note from {setup} \u00e9\u2713"
    r = s.request(
        "POST",
        "/api/notes",
        body=json.dumps({"title": title, "body": "first body"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert r.status == 201, r.text
    note = r.json()
    assert (note["title"], note["body"]) == (title, "first body")
    assert r.header("Location").endswith(f"/api/notes/{note['id']}")
    assert s.get(f"/api/notes/{note['id']}").json() == note
    assert s.get("/api/notes").json() == [note]
    page = s.get("/")
    assert page.status == 200 and page.header("Content-Type").startswith("text/html")
    assert title in page.text

    form = {"title": "Form note", "body": "posted as a form"}
    if setup.startswith("flask"):
        r = s.request("POST", "/notes", body=urlencode(form).encode(), headers=FORM)
    else:
        # CSRF: without the cookie and token 403 (and nothing saved), with them 303
        r = s.request("POST", "/notes/new", body=urlencode(form).encode(), headers=FORM)
        assert r.status == 403
        assert [n["title"] for n in s.get("/api/notes").json()] == [title]
        cookie, token = csrf_pair(s, "/notes/new")
        body = urlencode({**form, "csrfmiddlewaretoken": token}).encode()
        r = s.request("POST", "/notes/new", body=body, headers={**FORM, "Cookie": f"csrftoken={cookie}"})
    assert r.status == 303, r.text
    assert r.header("Location") == "/"
    assert [n["title"] for n in s.get("/api/notes").json()] == ["Form note", title]


@pytest.mark.parametrize("setup", SETUPS)
def test_upload_and_download(start, setup):
    s = start(setup)
    data = os.urandom(10 * 1024 * 1024)
    ctype, body = multipart("file", "random.bin", data)
    r = s.request("POST", "/upload", body=body, headers={"Content-Type": ctype}, timeout=60)
    assert r.status == 200, r.text
    assert r.json() == {
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "filename": "random.bin",
    }

    size = 5 * 1024 * 1024 + 7  # not a multiple of the 64 KiB chunks nor of the 251 period
    r = s.get(f"/download?size={size}", timeout=60)
    assert r.status == 200
    assert r.header("Content-Length") is None  # streamed by a generator
    assert len(r.body) == size
    assert r.body == pattern.pattern_bytes(0, size)
    assert hashlib.sha256(r.body).hexdigest() == pattern.expected_sha256(size)


@pytest.mark.parametrize("setup", SETUPS)
def test_boom_is_a_500_and_the_worker_keeps_serving(start, setup):
    s = start(setup)
    health = s.get("/health").json()
    assert health["status"] == "ok"
    r = s.get("/boom")
    assert r.status == 500
    assert b"deliberate failure" not in r.body and b"Traceback" not in r.body
    s.gateway.wait_for_log(r"RuntimeError: boom: deliberate failure from the (flask|django) example")
    assert s.get("/health").json() == health  # same worker pid


@pytest.fixture(scope="module")
def static_root(tmp_path_factory) -> Path:
    """``manage.py collectstatic`` into a temporary STATIC_ROOT (once for the module)."""
    root = tmp_path_factory.mktemp("django-static")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "FCGI_"))}
    env |= example_env(root, DJANGO_STATIC_ROOT=str(root), FCGI_EXAMPLE_AUTOMIGRATE="0")
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=DJANGO_DIR,
        env=env,
        check=True,
        timeout=120,
    )
    assert (root / "admin" / "css" / "base.css").is_file()
    return root


@pytest.mark.parametrize("setup", DJANGO_SETUPS)
def test_django_admin_with_static_files_from_nginx(start, setup, static_root):
    s = start(
        setup,
        env={"DJANGO_STATIC_ROOT": str(static_root), "FCGI_EXAMPLE_CREATE_SUPERUSER": "1"},
        static_alias=("/static/", static_root),
    )
    r = s.get("/admin/login/")
    assert r.status == 200 and r.header("Content-Type").startswith("text/html")
    assert "/static/admin/css/base.css" in r.text
    css = s.get("/static/admin/css/base.css")  # served by nginx, not by the app
    assert css.status == 200
    assert css.header("Content-Type") == "text/css"
    assert css.body == (static_root / "admin" / "css" / "base.css").read_bytes()

    # log in as the superuser the bootstrap created: CSRF, session cookie, redirect
    cookie, token = csrf_pair(s, "/admin/login/")
    body = urlencode(
        {"username": "admin", "password": "admin", "csrfmiddlewaretoken": token, "next": "/admin/"}
    )
    r = s.request(
        "POST", "/admin/login/", body=body.encode(), headers={**FORM, "Cookie": f"csrftoken={cookie}"}
    )
    assert r.status == 302, r.text
    assert r.header("Location") == "/admin/"
    session = next(c.split(";")[0] for c in r.header_list("Set-Cookie") if c.startswith("sessionid="))
    r = s.get("/admin/notes/note/", headers={"Cookie": f"csrftoken={cookie}; {session}"})
    assert r.status == 200
    assert "Select note to change" in r.text
