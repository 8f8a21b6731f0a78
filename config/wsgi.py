import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

application = get_wsgi_application()

# A malformed catalogue stops the server here, with the file, line and problem.
from apikeys.catalogue import ensure_valid  # noqa: E402

ensure_valid()
