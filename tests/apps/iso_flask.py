"""A Flask + Flask-SQLAlchemy app (SQLite file from ``ISO_SQLA_DB``): ``/stage`` leaves a
change pending in ``db.session`` (Flask-SQLAlchemy removes the session at app-context
teardown: nothing leaks), ``/connect`` checks out a connection with ``db.engine.connect()``
and never closes it, ``/pool`` shows the pool's ``checkedout()``. GC is off, as in
``iso_sqla``."""

from __future__ import annotations

import gc
import os

from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import text

gc.disable()

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{os.environ['ISO_SQLA_DB']}"
app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_size": 2, "max_overflow": 0, "pool_timeout": 2}
db = SQLAlchemy(app)


class Note(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    body = db.Column(db.String(100))


with app.app_context():
    db.create_all()


@app.get("/stage")
def stage():
    db.session.add(Note(body=request.args["body"]))
    return "staged"


@app.get("/add")
def add():
    db.session.add(Note(body=request.args["body"]))
    db.session.commit()
    return "added"


@app.get("/notes")
def notes():
    return [n.body for n in db.session.scalars(db.select(Note).order_by(Note.id))]


@app.get("/connect")
def connect():
    conn = db.engine.connect()
    conn.execute(text("SELECT 1"))  # never closed
    return "connected"


@app.get("/pool")
def pool():
    return str(db.engine.pool.checkedout())
