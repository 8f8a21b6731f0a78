"""gunicorn's logger with sign-in and invitation tokens scrubbed from every line
(`config.logging.scrub`): the access log's request lines and the error log's."""

from __future__ import annotations

from typing import Any

from gunicorn import glogging

from config.logging import ScrubbingFilter


class ScrubbingLogger(glogging.Logger):
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.access_log, self.error_log):
            if not any(isinstance(f, ScrubbingFilter) for f in log.filters):
                log.addFilter(ScrubbingFilter())
