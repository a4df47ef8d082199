"""Real frameworks behind a real nginx: a Starlette app and Django's ASGI handler (the
examples/django_site project) on the async worker.

Starlette: routing with path and query parameters, JSON and form bodies, a
StreamingResponse, a BackgroundTask after the response, and lifespan through the
``lifespan=`` context manager whose state reaches requests. Django: its ASGI handler raises
on the lifespan scope, which ``--lifespan auto`` must treat as "unsupported" (logged at
debug, the server starts; docs/protocol-notes.md, peer bug 12); the ORM works (each test
has its own SQLite file through ``FCGI_EXAMPLE_DJANGO_DB``).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DJANGO_SITE = REPO_ROOT / "examples" / "django_site"
STARLETTE = "starlette_app:app"
DJANGO_ASGI = "mysite.asgi:application"


def wait_for_file(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} was not written within {timeout}s"
        time.sleep(0.02)
    return path.read_text()


# -- Starlette -------------------------------------------------------------------------------


@pytest.fixture
def starlette(served, tmp_path):
    marker = tmp_path / "shutdown"
    s = served(STARLETTE, env={"STARLETTE_SHUTDOWN_MARKER": str(marker)})
    s.shutdown_marker = marker
    return s


def test_starlette_json_and_lifespan_state(starlette):
    r = starlette.get("/")
    assert r.status == 200
    assert r.header("Content-Type") == "application/json"
    assert r.json() == {
        "hello": "world",
        "greeting": "hello from the lifespan state",
        "started": "yes",
        "root_path": "",
    }
    starlette.gateway.wait_for_log(r"starlette_app:app loaded \(asgi, async worker\)")


def test_starlette_path_and_query_params(starlette):
    r = starlette.get("/items/42/caf%C3%A9%20cr%C3%A8me")
    assert r.status == 200
    assert r.json() == {"id": 42, "name": "café crème"}
    assert starlette.get("/items/not-a-number/x").status == 404
    r = starlette.get("/search?q=fast%20cgi&tag=a&tag=b%26c")
    assert r.json() == {"q": "fast cgi", "tags": ["a", "b&c"], "url": "/search"}


def test_starlette_json_and_form_posts(starlette):
    note = {"title": "hello", "body": "ünïcode " * 500}
    payload = json.dumps(note).encode()
    r = starlette.request("POST", "/notes", body=payload, headers={"Content-Type": "application/json"})
    assert r.status == 201
    assert r.json() == {"created": note, "length": len(payload)}
    r = starlette.request(
        "POST",
        "/form",
        body=b"name=Ada+Lovelace&lang=en&lang=fr&empty=x%26y",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status == 200
    assert r.json() == {"name": "Ada Lovelace", "lang": ["en", "fr"], "empty": "x&y"}
    assert starlette.request("GET", "/notes").status == 405


def test_starlette_streaming_response(starlette):
    r = starlette.get("/stream?n=50")
    assert r.status == 200
    assert r.header("Content-Length") is None  # streamed: nginx sends it chunked
    assert r.header("Transfer-Encoding") == "chunked"
    assert r.text == "".join(f"line {i}\n" for i in range(50))


def test_starlette_background_task_runs_after_the_response(starlette, tmp_path):
    marker = tmp_path / "background"
    r = starlette.get(f"/background?marker={marker}")
    assert (r.status, r.body) == (202, b"accepted")
    assert wait_for_file(marker) == "background ran"
    assert starlette.get("/").status == 200


def test_starlette_cookies_error_and_shutdown(starlette):
    r = starlette.get("/headers", headers={"User-Agent": "framework-test/1.0"})
    assert r.json() == {"user_agent": "framework-test/1.0"}
    assert [c.split(";")[0] for c in r.header_list("Set-Cookie")] == ["a=1", "b=2"]
    r = starlette.get("/boom")
    assert r.status == 500
    assert b"starlette boom" not in r.body
    starlette.gateway.wait_for_log(r"exception in ASGI application for GET /boom")
    assert starlette.get("/").status == 200
    starlette.gateway.send_signal(15)
    assert starlette.gateway.wait(10) == 0
    assert starlette.shutdown_marker.read_text() == "shutdown complete"


def test_starlette_under_root_path(served):
    s = served(STARLETTE, "--root-path", "/api")
    r = s.get("/api/items/7/seven")
    assert r.status == 200
    assert r.json() == {"id": 7, "name": "seven"}
    assert s.get("/api/").json()["root_path"] == "/api"


# -- Django (ASGI) ----------------------------------------------------------------------------


def django_env(tmp_path: Path) -> dict[str, str]:
    return {
        "FCGI_EXAMPLE_DJANGO_DB": str(tmp_path / "db" / "site.sqlite3"),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SETTINGS_MODULE": "mysite.settings",
    }


@pytest.fixture
def django(served, tmp_path):
    return served(DJANGO_ASGI, "--chdir", str(DJANGO_SITE), "--lifespan", "auto", env=django_env(tmp_path))


def test_django_asgi_starts_with_lifespan_auto(served, tmp_path):
    s = served(DJANGO_ASGI, "--chdir", str(DJANGO_SITE), "--log-level", "debug", env=django_env(tmp_path))
    # The socket is bound before the app loads: wait until the worker serves.
    log = s.gateway.wait_for_log(r"serving ASGI on .*async worker").string
    assert "[DEBUG] ASGI lifespan unsupported by the application" in log
    assert "Django can only handle ASGI/HTTP connections, not lifespan" in log
    assert "[ERROR]" not in log
    r = s.get("/health")
    assert r.status == 200
    assert r.json()["status"] == "ok"


def test_django_index_and_notes_api(django, tmp_path):
    r = django.get("/")
    assert r.status == 200
    assert r.header("Content-Type").startswith("text/html")
    assert b"<html" in r.body.lower()
    assert django.get("/api/notes").json() == []  # a fresh database
    note = {"title": "from the test", "body": "über fcgi-gateway"}
    r = django.request(
        "POST", "/api/notes", body=json.dumps(note).encode(), headers={"Content-Type": "application/json"}
    )
    assert r.status == 201
    created = r.json()
    assert (created["title"], created["body"]) == (note["title"], note["body"])
    assert r.header("Location") == f"/api/notes/{created['id']}"
    listed = django.get("/api/notes").json()
    assert [(n["id"], n["title"], n["body"]) for n in listed] == [(created["id"], *note.values())]
    assert django.get(f"/api/notes/{created['id']}").json()["title"] == "from the test"
    assert django.get("/api/notes/999999").status == 404
    assert (tmp_path / "db" / "site.sqlite3").exists()
    assert "[ERROR]" not in django.gateway.log_text()


def test_django_streaming_upload_and_errors(django):
    r = django.get("/download?size=300000")
    assert r.status == 200
    assert len(r.body) == 300000
    body = bytes(range(256)) * 1000
    r = django.request("POST", "/upload", body=body, headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200
    assert r.json() == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest(), "filename": None}
    assert django.request("POST", "/notes/new", body=b"title=x").status == 403  # CSRF enforced
    assert django.get("/boom").status == 500
    assert django.get("/health").status == 200
