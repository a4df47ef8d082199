"""A plain WSGI app on SQLAlchemy (SQLite file from ``ISO_SQLA_DB``) with the two classic
leaks: a ``scoped_session`` never removed (``/stage?name=`` adds a row and neither commits
nor removes; ``/add?name=`` adds, commits and removes — and so commits what ``/stage``
left pending in the same thread's session) and a Session never closed (``/unclosed``).

Automatic garbage collection is off in this app so that the unclosed, unreferenced
Session keeps its pooled connection deterministically (it sits in a reference cycle;
with GC on, it is returned whenever a collection happens to run)."""

from __future__ import annotations

import gc
import json
import os
from urllib.parse import parse_qs

from sqlalchemy import String, create_engine, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, scoped_session, sessionmaker

gc.disable()

engine = create_engine(f"sqlite:///{os.environ['ISO_SQLA_DB']}", pool_size=2, max_overflow=0, pool_timeout=2)
ScopedSession = scoped_session(sessionmaker(engine))


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


Base.metadata.create_all(engine)


def _names() -> list[str]:
    with Session(engine) as session:
        return list(session.scalars(select(Item.name).order_by(Item.id)))


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
    if path == "/stage":
        ScopedSession.add(Item(name=query["name"]))  # neither committed nor removed
        body = "staged"
    elif path == "/add":
        ScopedSession.add(Item(name=query["name"]))
        ScopedSession.commit()
        ScopedSession.remove()
        body = "added"
    elif path == "/names":
        body = json.dumps(_names())
    elif path == "/unclosed":
        session = Session(engine)
        session.execute(text("SELECT 1"))  # checks out a pooled connection, never closed
        body = "left open"
    elif path == "/pool":
        body = str(engine.pool.checkedout())
    else:
        body = "ok"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]
