"""gunicorn settings of `make stack` (and a starting point for a production deployment).

Every value can be overridden from the environment: WEB_CONCURRENCY (worker processes,
default 2 x cores + 1), GUNICORN_WORKER_CLASS (`gthread` by default: keep-alive
connections), GUNICORN_THREADS (1 by default: on two cores, one thread per process gave
the highest throughput for both the baseline and the guarded endpoint, see
docs/performance.md), GUNICORN_WORKER_CONNECTIONS (8 per thread), STACK_HOST / STACK_PORT.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

bind = f"{os.environ.get('STACK_HOST', '127.0.0.1')}:{os.environ.get('STACK_PORT', '8100')}"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
# How many connections one worker holds at most (gthread). gunicorn's default (1000) lets
# the first worker to wake accept every new keep-alive connection while its one thread
# serves them in turn and the other workers idle: `make bench` saw all 16 connections on
# one worker and half the CPU idle. With 8 per thread a busy worker leaves new connections
# to the others; idle keep-alive connections beyond 7 per worker are closed after their
# response (gunicorn keeps at most worker_connections - threads), never left waiting.
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", str(8 * threads)))
keepalive = 5
# gunicorn has no body-size limit: the app refuses a body over MAX_REQUEST_BYTES by its
# Content-Length before reading it (config.middleware.BoundedBodyMiddleware); request
# lines and headers are bounded here.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
timeout = 30
graceful_timeout = 20
# Access lines cost as much CPU as a small view; the request id and the audit log
# identify requests. Set GUNICORN_ACCESS_LOG=- to get them.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
# Sign-in and invitation tokens never reach a log line (config/logging.py).
logger_class = "config.gunicorn_logging.ScrubbingLogger"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
proc_name = "latchkey"


def post_worker_init(worker: Any) -> None:
    """The application is loaded: move everything it allocated so far out of the cyclic
    garbage collector's sight (`gc.freeze`). Those objects live as long as the worker; a
    full collection no longer walks them, which made rare 50-100 ms pauses."""
    import gc

    gc.collect()
    gc.freeze()


def worker_exit(server: Any, worker: Any) -> None:
    """A worker leaving (graceful stop, max-requests, reload) folds what only it holds:
    its local usage counters on the embedded default; on Redis, the usage and unused
    tokens of its admission leases (ADR 0065).
    """
    try:
        from apikeys.usage import fold_process

        fold_process()
    except Exception:  # a worker must exit even if the database is gone
        server.log.exception("Folding usage counters at worker exit failed.")
