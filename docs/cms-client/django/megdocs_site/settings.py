"""Settings of the reference project: only what the Microsoft integration
needs (auth, sessions, messages, CSRF). In MEGDocs, add the two
MEGDOCS_CONNECTOR_* settings and the ``microsoft`` app to its settings."""

import os
import secrets
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# The client, megdocs_connector.py, lives one folder up so the plain-Python
# tests and this project share one file. In MEGDocs, copy it into the app
# instead and drop this line.
sys.path.insert(0, str(BASE_DIR.parent))

# The connector's base URL and the CMS API key (Key Vault secret cms-api-key).
# Server side only: never in a page, a URL or a log.
MEGDOCS_CONNECTOR_URL = os.environ.get("MEGDOCS_CONNECTOR_URL", "http://localhost:7071")
MEGDOCS_CONNECTOR_KEY = os.environ.get("MEGDOCS_CONNECTOR_KEY", "")

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(50)
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "microsoft",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

# The browser comes back from Microsoft and the connector in a top-level
# redirect from another site: the session cookie must be "Lax" (Django's
# default), not "Strict", or the return view sees no logged-in user.
SESSION_COOKIE_SAMESITE = "Lax"

ROOT_URLCONF = "megdocs_site.urls"
LOGIN_URL = "/accounts/login/"

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

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
