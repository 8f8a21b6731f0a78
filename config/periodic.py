"""Background jobs of the embedded default, where no Celery beat runs.

`Periodic(name, job, interval)` runs `job()` on a daemon thread every `interval` seconds,
started on first need (`ensure_started`), optionally once more at interpreter exit. It
stays off when the interval is 0 and on an in-memory database (the test suite's), which a
background thread must not write into. A failed run is logged and the next one tries
again; the thread's database connection is closed after every run.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable

from django.db import connection

logger = logging.getLogger("latchkey.periodic")


def database_in_memory() -> bool:
    checker = getattr(connection.creation, "is_in_memory_db", None)
    if checker is None:
        return False
    return bool(checker(connection.settings_dict["NAME"]))


class Periodic:
    def __init__(
        self,
        name: str,
        job: Callable[[], object],
        interval: Callable[[], float],
        *,
        at_exit: bool = False,
    ) -> None:
        self.name = name
        self.job = job
        self.interval = interval
        self.at_exit = at_exit
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def ensure_started(self) -> None:
        if self._thread is not None:
            return
        interval = self.interval()
        if interval <= 0 or database_in_memory():
            return
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, args=(interval,), name=self.name, daemon=True
            )
            self._thread.start()
            if self.at_exit:
                atexit.register(self.final_run)

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.run_logged()

    def run_logged(self) -> None:
        try:
            self.job()
        except Exception:
            logger.exception("The background job %s failed; it runs again later.", self.name)
        finally:
            connection.close()

    def final_run(self) -> None:
        self._stop.set()
        self.run_logged()
