"""Views of the notes app.

* ``GET /``                  HTML list of notes
* ``GET|POST /api/notes``    JSON list / create from JSON ``{"title", "body"}`` (201 + the note)
* ``GET /api/notes/<id>``    one note as JSON (404 if missing)
* ``GET|POST /notes/new``    CSRF-protected HTML form; a valid POST redirects (303) to ``/``
* ``POST /upload``           multipart field ``file`` (or, for any other content type, the raw
                             request body); JSON ``{"size", "sha256", "filename"}``
* ``GET /download?size=N``   N bytes of the pattern in ``download_pattern.py``, streamed in
                             64 KiB chunks (StreamingHttpResponse, no Content-Length)
* ``GET /boom``              raises ``RuntimeError`` (500)
* ``GET /health``            JSON ``{"status": "ok", "pid": ...}``

The JSON API and /upload are ``csrf_exempt``; the HTML form is not.
"""

import hashlib
import json
import os
from collections.abc import AsyncIterator, Iterable
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.db import connection
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from .download_pattern import CHUNK_SIZE, iter_pattern, parse_size
from .forms import NoteForm
from .models import Note


class HttpResponseSeeOther(HttpResponseRedirect):
    status_code = 303


def _error(message: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    return render(request, "notes/index.html", {"notes": Note.objects.all()})


@csrf_exempt
@require_http_methods(["GET", "POST"])
def api_notes(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return JsonResponse([note.to_dict() for note in Note.objects.all()], safe=False)
    try:
        data = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        return _error("expected a JSON object with 'title' and 'body'")
    title, body = data.get("title"), data.get("body")
    if body is None:
        body = ""
    if not isinstance(title, str) or not isinstance(body, str):
        return _error("'title' is required; 'title' and 'body' must be strings")
    form = NoteForm({"title": title, "body": body})
    if not form.is_valid():
        return JsonResponse({"error": "invalid note", "fields": form.errors.get_json_data()}, status=400)
    note = form.save()
    response = JsonResponse(note.to_dict(), status=201)
    response["Location"] = reverse("api-note", args=[note.id])
    return response


@require_GET
def api_note(request: HttpRequest, note_id: int) -> HttpResponse:
    note = Note.objects.filter(pk=note_id).first()
    if note is None:
        return _error("no such note", status=404)
    return JsonResponse(note.to_dict())


@require_http_methods(["GET", "POST"])
def new_note(request: HttpRequest) -> HttpResponse:
    # CSRF protection comes from CsrfViewMiddleware; the template renders {% csrf_token %}.
    if request.method == "POST":
        form = NoteForm(request.POST)
        if form.is_valid():
            form.save()
            return HttpResponseSeeOther(reverse("index"))
        return render(request, "notes/new.html", {"form": form}, status=400)
    return render(request, "notes/new.html", {"form": NoteForm()})


def _hash_chunks(chunks: Iterable[bytes]) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    for chunk in chunks:
        size += len(chunk)
        digest.update(chunk)
    return size, digest.hexdigest()


def _read_body(request: HttpRequest) -> Iterable[bytes]:
    while chunk := request.read(CHUNK_SIZE):
        yield chunk


@csrf_exempt
@require_POST
def upload(request: HttpRequest) -> HttpResponse:
    if request.content_type == "multipart/form-data":
        uploaded = request.FILES.get("file")
        if uploaded is None:
            return _error("multipart field 'file' is missing")
        size, sha256 = _hash_chunks(uploaded.chunks(CHUNK_SIZE))
        filename: str | None = uploaded.name
    else:
        size, sha256 = _hash_chunks(_read_body(request))
        filename = None
    return JsonResponse({"size": size, "sha256": sha256, "filename": filename})


async def _aiter_pattern(size: int) -> AsyncIterator[bytes]:
    for chunk in iter_pattern(size):
        yield chunk


@require_GET
def download(request: HttpRequest) -> HttpResponse:
    try:
        size = parse_size(request.GET.get("size"))
    except ValueError as exc:
        return _error(str(exc))
    # Under ASGI hand Django an async iterator (a sync one would make it warn and consume
    # it in a thread); under WSGI a plain generator.
    content: Any = _aiter_pattern(size) if isinstance(request, ASGIRequest) else iter_pattern(size)
    response = StreamingHttpResponse(content, content_type="application/octet-stream")
    response["Cache-Control"] = "no-store"
    return response


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom: deliberate failure from the django example")


@require_GET
def health(request: HttpRequest) -> HttpResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok", "pid": os.getpid()})
