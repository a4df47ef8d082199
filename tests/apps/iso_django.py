"""A one-module Django project for the isolation tests: ``application`` (WSGI) and
``asgi_application`` (Django's ASGI handler), SQLite file from ``ISO_DJANGO_DB``,
``CONN_MAX_AGE`` from ``ISO_DJANGO_CONN_MAX_AGE`` (default 0).

``/leak`` enters ``transaction.atomic()``, writes a row and never leaves the block;
``/count`` counts the rows; ``/orm-outside`` is a plain WSGI app (``plain_wsgi``) using
the ORM outside Django's request cycle, with DEBUG on (the query log then grows)."""

from __future__ import annotations

import os
import threading

import django
from django.conf import settings

settings.configure(
    DEBUG=os.environ.get("ISO_DJANGO_DEBUG") == "1",
    SECRET_KEY="isolation-tests-only",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[],
    MIDDLEWARE=[],
    USE_TZ=True,
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ["ISO_DJANGO_DB"],
            "CONN_MAX_AGE": int(os.environ.get("ISO_DJANGO_CONN_MAX_AGE", "0")),
        }
    },
)
django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
connection.close()


def _count() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM notes")
        return cursor.fetchone()[0]


def leak(request):
    transaction.atomic().__enter__()  # never exited: the bug under test
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO notes (body) VALUES ('left in a transaction')")
    return HttpResponse(f"atomic block left open on {threading.current_thread().name}")


def count(request):
    return HttpResponse(str(_count()))


urlpatterns = [path("leak", leak), path("count", count)]
application = get_wsgi_application()
asgi_application = get_asgi_application()


def plain_wsgi(environ, start_response):
    """Not Django's handler: no request_started/finished, so nothing resets or closes."""
    body = f"{_count()} {len(connection.queries_log)}".encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
