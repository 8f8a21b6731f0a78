"""gunicorn settings of `make stack` (and a starting point for a production deployment).

Every value can be overridden from the environment: WEB_CONCURRENCY (worker processes,
default 2 x cores + 1), GUNICORN_WORKER_CLASS (`gthread` by default: keep-alive
connections), GUNICORN_THREADS (1 by default: on two cores, one thread per process gave
the highest throughput for both the baseline and the guarded endpoint, see
docs/performance.md), STACK_HOST / STACK_PORT.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

bind = f"{os.environ.get('STACK_HOST', '127.0.0.1')}:{os.environ.get('STACK_PORT', '8100')}"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
keepalive = 5
timeout = 30
graceful_timeout = 20
# Access lines cost as much CPU as a small view; the request id and the audit log
# identify requests. Set GUNICORN_ACCESS_LOG=- to get them.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
proc_name = "latchkey"


def worker_exit(server: Any, worker: Any) -> None:
    """A worker leaving (graceful stop, max-requests, reload) folds what only it holds.

    With Redis every request is already counted in Redis, so this is a no-op there; it
    matters only for a gunicorn run on the embedded default.
    """
    try:
        from apikeys.usage import flush_process

        flush_process()
    except Exception:  # a worker must exit even if the database is gone
        server.log.exception("Folding usage counters at worker exit failed.")
