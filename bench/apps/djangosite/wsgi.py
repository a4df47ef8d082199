import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangosite.settings")

from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()

from .db import ensure_db  # noqa: E402  (models need the app registry: after setup)

ensure_db()
