"""A small Django project (settings, one model, one view, one template) for the benchmark.

``djangosite.wsgi:application`` and ``djangosite.asgi:application`` are what the servers
load; both create the SQLite database on first import (``db.ensure_db``).
"""
