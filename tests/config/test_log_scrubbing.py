"""Sign-in and invitation tokens never reach the log output (SPEC 15)."""

from __future__ import annotations

import io
import logging
import secrets

from django.test import Client

from config.logging import ScrubbingFormatter


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
