"""The project's WSGI application, wrapped for in-process use inside a test transaction.

Django's request signals close database connections that are not in autocommit mode at
the start and end of every request. Inside a test transaction that would close the test's
own connection (PostgreSQL), so, exactly like Django's test client, the wrapper detaches
`close_old_connections` while a request is handled, and closes the response as a WSGI
server does (PEP 3333), which runs its closers (ADR 0104) and `request_finished`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.core.signals import request_finished, request_started
from django.db import close_old_connections

from config.wsgi import application as _application


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        response = _application(environ, start_response)
        try:
            return list(response)
        finally:
            response.close()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
