"""Flask + Flask-SQLAlchemy example app for fcgi-gateway.

Run it behind nginx (see README.md and deploy/)::

    fcgi-gateway --chdir examples/flask_app --bind unix:/run/fcgi-gateway/flask.sock app:app

The SQLite database and its tables are created automatically when this module is imported.
Its location is ``$FCGI_EXAMPLE_FLASK_DB`` (a file path; relative paths are resolved against
the current directory), defaulting to ``flask_app.sqlite3`` next to this file.

Routes:

* ``GET /``                  HTML page listing the notes, with a form posting to ``/notes``
* ``GET /api/notes``         JSON list of notes, newest first
* ``GET /api/notes/<id>``    one note as JSON (404 if missing)
* ``POST /api/notes``        create a note from JSON ``{"title", "body"}``; 201 + the note
* ``POST /notes``            create a note from an urlencoded form; 303 redirect to ``/``
* ``POST /upload``           multipart field ``file`` (or, for any other content type, the raw
                             request body); JSON ``{"size", "sha256", "filename"}``
* ``GET /download?size=N``   N bytes of the pattern in ``download_pattern.py``, streamed from a
                             generator in 64 KiB chunks, without a Content-Length
* ``GET /boom``              raises ``RuntimeError`` (500)
* ``GET /health``            JSON ``{"status": "ok", "pid": ...}``
"""

import hashlib
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import DateTime, String, Text, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

try:
    from download_pattern import CHUNK_SIZE, iter_pattern, parse_size
except ModuleNotFoundError:  # loaded by file path, without this directory on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from download_pattern import CHUNK_SIZE, iter_pattern, parse_size

HERE = Path(__file__).resolve().parent
DB_ENV_VAR = "FCGI_EXAMPLE_FLASK_DB"
DEFAULT_DB_PATH = HERE / "flask_app.sqlite3"
MAX_UPLOAD_BYTES = 256 * 1024 * 1024
TITLE_MAX_LENGTH = 200


def database_path() -> Path:
    """Absolute path of the SQLite database file (``$FCGI_EXAMPLE_FLASK_DB`` or the default)."""
    raw = os.environ.get(DB_ENV_VAR, "").strip()
    return Path(raw).expanduser().resolve() if raw else DEFAULT_DB_PATH


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Note(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(TITLE_MAX_LENGTH))
    body: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[datetime] = mapped_column(DateTime, default=lambda: datetime.now(UTC))

    def to_dict(self) -> dict[str, Any]:
        created = self.created
        if created.tzinfo is None:  # SQLite stores naive datetimes; they are UTC
            created = created.replace(tzinfo=UTC)
        return {"id": self.id, "title": self.title, "body": self.body, "created": created.isoformat()}


def init_db(app: Flask) -> None:
    """Create the database file and tables if they are missing.

    Several worker processes may import the app at the same time: ``create_all`` checks for
    the table and then creates it, so a worker can lose that race and see "table already
    exists" (or "database is locked"); retrying makes it see the finished table. The
    engine's pooled connections are disposed afterwards so that none is inherited by
    processes forked after import.
    """
    with app.app_context():
        for attempt in range(10):
            try:
                db.create_all()
                break
            except OperationalError:
                if attempt == 9:
                    raise
                time.sleep(0.05 * (attempt + 1))
        db.engine.dispose()


def _note_from(title: Any, body: Any) -> tuple[Note | None, str | None]:
    if not isinstance(title, str) or not title.strip():
        return None, "'title' is required and must be a non-empty string"
    if len(title) > TITLE_MAX_LENGTH:
        return None, f"'title' must be at most {TITLE_MAX_LENGTH} characters"
    if body is None:
        body = ""
    if not isinstance(body, str):
        return None, "'body' must be a string"
    return Note(title=title.strip(), body=body), None


def _hash_stream(stream: Any) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK_SIZE):
        size += len(chunk)
        digest.update(chunk)
    return size, digest.hexdigest()


def create_app(db_path: str | os.PathLike[str] | None = None) -> Flask:
    """Build the app; ``db_path`` overrides ``$FCGI_EXAMPLE_FLASK_DB`` (handy in tests)."""
    path = Path(db_path).resolve() if db_path is not None else database_path()
    path.parent.mkdir(parents=True, exist_ok=True)

    # An explicit root_path finds templates/ and static/ however the module was imported.
    app = Flask(__name__, root_path=str(HERE))
    app.config.update(
        # Flask-SQLAlchemy resolves relative SQLite paths against the instance folder, so
        # always hand it an absolute one.
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{path}",
        # Wait for other workers' write locks instead of failing with "database is locked".
        SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"timeout": 30}},
        MAX_CONTENT_LENGTH=MAX_UPLOAD_BYTES,
    )
    db.init_app(app)
    init_db(app)

    @app.get("/")
    def index() -> ResponseReturnValue:
        notes = db.session.scalars(select(Note).order_by(Note.created.desc(), Note.id.desc())).all()
        return render_template("index.html", notes=notes)

    @app.get("/api/notes")
    def list_notes() -> ResponseReturnValue:
        notes = db.session.scalars(select(Note).order_by(Note.created.desc(), Note.id.desc())).all()
        return jsonify([note.to_dict() for note in notes])

    @app.get("/api/notes/<int:note_id>")
    def get_note(note_id: int) -> ResponseReturnValue:
        note = db.session.get(Note, note_id)
        if note is None:
            return jsonify(error="no such note"), 404
        return jsonify(note.to_dict())

    @app.post("/api/notes")
    def create_note_json() -> ResponseReturnValue:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            return jsonify(error="expected a JSON object with 'title' and 'body'"), 400
        note, error = _note_from(data.get("title"), data.get("body"))
        if note is None:
            return jsonify(error=error), 400
        db.session.add(note)
        db.session.commit()
        return jsonify(note.to_dict()), 201, {"Location": url_for("get_note", note_id=note.id)}

    @app.post("/notes")
    def create_note_form() -> ResponseReturnValue:
        note, error = _note_from(request.form.get("title"), request.form.get("body", ""))
        if note is None:
            abort(400, description=error)
        db.session.add(note)
        db.session.commit()
        return redirect(url_for("index"), code=303)

    @app.post("/upload")
    def upload() -> ResponseReturnValue:
        if request.mimetype == "multipart/form-data":
            upload = request.files.get("file")
            if upload is None:
                return jsonify(error="multipart field 'file' is missing"), 400
            size, sha256 = _hash_stream(upload.stream)
            filename = upload.filename
        else:
            size, sha256 = _hash_stream(request.stream)
            filename = None
        return jsonify(size=size, sha256=sha256, filename=filename)

    @app.get("/download")
    def download() -> ResponseReturnValue:
        try:
            size = parse_size(request.args.get("size"))
        except ValueError as exc:
            return jsonify(error=str(exc)), 400
        # A generator body: Werkzeug sends no Content-Length and the server streams it.
        return Response(
            iter_pattern(size),
            mimetype="application/octet-stream",
            headers={"Cache-Control": "no-store"},
        )

    @app.get("/boom")
    def boom() -> ResponseReturnValue:
        raise RuntimeError("boom: deliberate failure from the flask example")

    @app.get("/health")
    def health() -> ResponseReturnValue:
        db.session.execute(text("SELECT 1"))
        return jsonify(status="ok", pid=os.getpid())

    return app


app = create_app()
