"""Django settings for the fcgi-gateway example site.

Everything deployment-specific comes from the environment (see README.md):

=============================== =============================================================
``DJANGO_DEBUG``                ``1``/``true``/``yes``/``on`` enables DEBUG (default: off)
``DJANGO_SECRET_KEY``           secret key (default: an insecure development key)
``DJANGO_ALLOWED_HOSTS``        comma-separated; ``*`` allowed (default: 127.0.0.1,localhost)
``DJANGO_CSRF_TRUSTED_ORIGINS`` comma-separated origins, e.g. ``http://127.0.0.1:8080``
``FCGI_EXAMPLE_DJANGO_DB``      SQLite file (default: ``db.sqlite3`` in examples/django_site)
``DJANGO_STATIC_ROOT``          collectstatic target (default: examples/django_site/staticfiles)
``FCGI_EXAMPLE_AUTOMIGRATE``    see mysite/bootstrap.py (default: on)
``FCGI_EXAMPLE_CREATE_SUPERUSER`` see mysite/bootstrap.py (default: off)
=============================== =============================================================
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}


def _env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    return default if raw is None or raw.strip() == "" else raw.strip().lower() in _TRUE


def _env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def _env_path(name: str, default: Path) -> Path:
    raw = os.environ.get(name, "").strip()
    return Path(raw).expanduser().resolve() if raw else default


SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY",
    "django-insecure-fcgi-gateway-example-only-never-use-this-key-in-production",
)

DEBUG = _env_bool("DJANGO_DEBUG", False)

ALLOWED_HOSTS = _env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost"])

CSRF_TRUSTED_ORIGINS = _env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "notes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mysite.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "mysite.wsgi.application"

DATABASE_PATH = _env_path("FCGI_EXAMPLE_DJANGO_DB", BASE_DIR / "db.sqlite3")

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DATABASE_PATH,
        "OPTIONS": {
            # Several worker processes share the file: wait for a lock rather than failing
            # with "database is locked", and take the write lock when a transaction starts.
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
        },
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Static files: `python manage.py collectstatic --noinput` copies them (admin CSS included)
# into STATIC_ROOT, which nginx serves at /static/ (see deploy/nginx.conf).
STATIC_URL = "/static/"
STATIC_ROOT = _env_path("DJANGO_STATIC_ROOT", BASE_DIR / "staticfiles")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Uploads larger than this are spooled to a temporary file instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440

# Log errors (e.g. the traceback of /boom) to stderr, where the server's log collection
# (journald, supervisord) picks them up. Django's default only does so when DEBUG is on.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": os.environ.get("DJANGO_LOG_LEVEL", "WARNING")},
}
