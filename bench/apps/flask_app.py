"""A Flask view as Flask's tutorial writes one: a Jinja template (templates/posts.html) over
the latest 10 rows of a SQLite table, read with the stdlib ``sqlite3`` through a connection
opened per request (``g``) and closed at teardown."""

from __future__ import annotations

import os
import sqlite3

from benchdata import creation_lock, data_dir, posts
from flask import Flask, g, render_template

DB = os.path.join(data_dir(), "flask.sqlite3")


def _create_db() -> None:
    with creation_lock("flask"), sqlite3.connect(DB) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS post (id INTEGER PRIMARY KEY, title TEXT, body TEXT)")
        if conn.execute("SELECT count(*) FROM post").fetchone()[0] == 0:
            conn.executemany("INSERT INTO post (title, body) VALUES (?, ?)", posts())


_create_db()
app = Flask(__name__)


def get_db() -> sqlite3.Connection:
    if "db" not in g:
        g.db = sqlite3.connect(DB)
        g.db.row_factory = sqlite3.Row
    return g.db


@app.teardown_appcontext
def close_db(exc: BaseException | None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()


@app.route("/")
def index() -> str:
    rows = get_db().execute("SELECT id, title, body FROM post ORDER BY id DESC LIMIT 10").fetchall()
    return render_template("posts.html", posts=rows, total=len(rows))


wsgi_app = app
