"""Production settings for the Django example: ``mysite.settings`` plus HTTPS hardening.

Use them with ``DJANGO_SETTINGS_MODULE=deploy.production`` (the working directory being
examples/django_site, as in the systemd unit), and check them on every release with::

    DJANGO_SETTINGS_MODULE=deploy.production python manage.py check --deploy --fail-level WARNING

nginx terminates TLS (nginx-https-prefix.conf) and its stock ``fastcgi_params`` pass
``HTTPS=on``, so ``request.is_secure()`` is right without ``SECURE_PROXY_SSL_HEADER``. Do
not set that setting here: nothing strips a client's X-Forwarded-Proto on the way, so a
client could claim HTTPS. (When TLS ends before nginx, let nginx say so with
``fastcgi_param HTTPS on;``.)
"""

import os

from django.core.exceptions import ImproperlyConfigured
from mysite.settings import *  # noqa: F403

if SECRET_KEY.startswith("django-insecure") or len(SECRET_KEY) < 50:  # noqa: F405
    raise ImproperlyConfigured("set DJANGO_SECRET_KEY (50+ random characters) for production")

DEBUG = False

# Every plain-HTTP request is redirected to HTTPS (nginx does it first; this is the backstop),
# except the health check a load balancer may probe over HTTP.
SECURE_SSL_REDIRECT = True
SECURE_REDIRECT_EXEMPT = [r"(^|/)health$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
# Start low and raise to a year (31536000) once every subdomain serves HTTPS.
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", "3600"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
# Preloading is a commitment to the browsers' lists that is hard to undo: opt in knowingly.
SECURE_HSTS_PRELOAD = False
SILENCED_SYSTEM_CHECKS = ["security.W021"]
