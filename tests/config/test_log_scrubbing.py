"""Sign-in and invitation tokens never reach the log output (docs/product.md#reliability)."""

from __future__ import annotations

import io
import logging
import secrets
import subprocess
import sys
import time

from django.test import Client

from config.logging import ScrubbingFormatter
from tests.apikeys.guards.conftest import child_env, free_port, project_root, template  # noqa: F401
from tests.apikeys.guards.servers import DatabaseTemplate, Server, http


def _console_formatter() -> logging.Formatter:
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, ScrubbingFormatter):
            return handler.formatter
    raise AssertionError("the console handler does not scrub tokens")


def test_the_configured_console_output_scrubs_token_paths() -> None:
    formatter = _console_formatter()
    token = secrets.token_urlsafe(32)
    invitation = secrets.token_urlsafe(32)
    record = logging.LogRecord(
        "django.request",
        logging.ERROR,
        __file__,
        1,
        "Forbidden (CSRF token missing.): %s and %s",
        (f"/login/magic/{token}/", f"https://x.test/invitations/{invitation}/"),
        None,
    )
    line = formatter.format(record)
    assert token not in line and invitation not in line
    assert "/login/magic/[redacted]/" in line and "/invitations/[redacted]/" in line
    # Ids are not tokens: an invitation's public id stays readable.
    kept = logging.LogRecord("x", logging.INFO, __file__, 1, "/invitations/id/inv_ab12/", (), None)
    assert formatter.format(kept).endswith("/invitations/id/inv_ab12/")


def test_a_request_for_a_token_path_logs_no_token(db: None) -> None:
    """A refused magic-link POST (no CSRF token) logs through django.request."""
    token = secrets.token_urlsafe(32)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_console_formatter())
    logger = logging.getLogger("django.security.csrf")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.WARNING)
    try:
        response = Client(enforce_csrf_checks=True).post(f"/login/magic/{token}/")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    assert response.status_code == 403
    output = stream.getvalue()
    assert "/login/magic/[redacted]/" in output
    assert token not in output


# --- the servers' own request lines ---------------------------------------------------------


def _token_paths() -> tuple[str, list[str]]:
    token = secrets.token_urlsafe(32)
    return token, [f"/login/magic/{token}/", f"/invitations/{token}/"]


def test_gunicorns_access_and_error_logs_carry_no_token(
    template: DatabaseTemplate,  # noqa: F811
) -> None:
    server = Server(
        db_path=template.copy(),
        redis_url="",
        workers=1,
        settings={"GUNICORN_ACCESS_LOG": "-"},
    )
    token, paths = _token_paths()
    server.start()
    try:
        for path in paths:
            server.call("GET", path)
    finally:
        server.stop()
    assert server.log_path is not None
    output = server.log_path.read_text()
    assert "GET /login/magic/[redacted]/" in output  # the access line is there, scrubbed
    assert token not in output


def test_the_development_servers_request_lines_carry_no_token(
    template: DatabaseTemplate,  # noqa: F811
) -> None:
    port = free_port()
    env = child_env(
        DATABASE_URL=f"sqlite:///{template.copy()}",
        CELERY_TASK_ALWAYS_EAGER="true",
        CELERY_BROKER_URL="memory://",
        LATCHKEY_USAGE_FLUSH_SECONDS="0",
    )
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=project_root(),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    token, paths = _token_paths()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                http("GET", f"http://127.0.0.1:{port}/api/v1/ping", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "runserver did not answer"
                time.sleep(0.2)
        for path in paths:
            http("GET", f"http://127.0.0.1:{port}{path}", timeout=5)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)
    text = output.decode()
    assert '"GET /login/magic/[redacted]/ HTTP/1.1"' in text
    assert token not in text
