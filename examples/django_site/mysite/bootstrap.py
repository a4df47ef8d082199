"""First-run database setup for the example site.

``mysite/wsgi.py`` and ``mysite/asgi.py`` call :func:`ensure_database` right after Django is
set up, so ``fcgi-gateway --chdir examples/django_site mysite.wsgi:application`` (or
``mysite.asgi:application``) works on a fresh checkout with no manual step:

* if ``$FCGI_EXAMPLE_AUTOMIGRATE`` is on (the default; ``0``/``false``/``no``/``off``
  disables it) and the database file is missing or has unapplied migrations, ``migrate``
  runs once;
* if ``$FCGI_EXAMPLE_CREATE_SUPERUSER`` is on (default off), a superuser ``admin`` with
  password ``admin`` is created unless a user called ``admin`` already exists. For local
  experiments only.

Several worker processes may import the application at the same moment, so the work is
serialised with an exclusive ``flock`` on a lock file in the temporary directory (named
after the database path; nothing is written next to the database but the database
itself), and each process re-checks the migration plan once it holds the lock.

The work runs in a short-lived thread, because the ORM refuses to run in a thread with a
running event loop (an async server may import ``mysite.asgi`` from inside one), and the
thread closes its database connections when done, so no SQLite connection opened here is
inherited by worker processes forked later.

In production you may prefer to run ``python manage.py migrate`` as a deploy step (see
deploy/) and set ``FCGI_EXAMPLE_AUTOMIGRATE=0``.
"""

import fcntl
import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

AUTOMIGRATE_ENV = "FCGI_EXAMPLE_AUTOMIGRATE"
SUPERUSER_ENV = "FCGI_EXAMPLE_CREATE_SUPERUSER"
SUPERUSER_USERNAME = "admin"
SUPERUSER_PASSWORD = "admin"


def _env_flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    return raw not in {"0", "false", "no", "off"}


def _lock_path(database: Path) -> Path:
    tag = hashlib.sha256(str(database).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"fcgi-gateway-example-migrate-{tag}.lock"


def _pending_migrations() -> bool:
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    return bool(executor.migration_plan(executor.loader.graph.leaf_nodes()))


def _migrate_and_seed(database: Path, migrate: bool, superuser: bool) -> None:
    from django.core.management import call_command
    from django.db import connections

    try:
        lock_path = _lock_path(database)
        with open(lock_path, "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                if migrate and (not database.exists() or _pending_migrations()):
                    logger.warning("fcgi-gateway example: applying migrations to %s", database)
                    call_command("migrate", interactive=False, verbosity=0)
                if superuser:
                    _create_superuser()
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)
    finally:
        connections.close_all()


def _create_superuser() -> None:
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    if not user_model.objects.filter(username=SUPERUSER_USERNAME).exists():
        user_model.objects.create_superuser(SUPERUSER_USERNAME, "admin@example.invalid", SUPERUSER_PASSWORD)
        logger.warning("fcgi-gateway example: created superuser %r", SUPERUSER_USERNAME)


def ensure_database() -> None:
    """Apply migrations / create the superuser as configured. Needs ``django.setup()`` first."""
    from django.conf import settings

    migrate = _env_flag(AUTOMIGRATE_ENV, True)
    superuser = _env_flag(SUPERUSER_ENV, False)
    if not (migrate or superuser):
        return
    database = Path(settings.DATABASES["default"]["NAME"])
    database.parent.mkdir(parents=True, exist_ok=True)

    errors: list[BaseException] = []

    def run() -> None:
        try:
            _migrate_and_seed(database, migrate, superuser)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="fcgi-example-bootstrap")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
