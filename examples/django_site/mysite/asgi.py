"""ASGI entry point: ``fcgi-gateway --chdir examples/django_site mysite.asgi:application``.

Django's own ASGI handler. Importing this module also runs mysite/bootstrap.py
(migrations on first run).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

application = get_asgi_application()

from mysite.bootstrap import ensure_database  # noqa: E402  (needs django.setup() first)

ensure_database()
