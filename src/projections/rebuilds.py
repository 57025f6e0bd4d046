"""Rebuilds asked for by the active projector, run on a thread of its process."""

from __future__ import annotations

import logging
import threading
import time

from ledger.application import Ledger
from ledger.db import Database
from projections.rebuild import Rebuild, RebuildInProgress
from projections.users import UsersProjection

log = logging.getLogger(__name__)


class BackgroundRebuilds:
    """Runs requested rebuilds on a thread of this process, one at a time. The
    active projector calls `request()` while its status row asks for one."""

    def __init__(
        self,
        database: Database,
        ledger: Ledger,
        projection: UsersProjection | None = None,
        *,
        retry_after: float = 5.0,
    ) -> None:
        self.database = database
        self.ledger = ledger
        self.projection = projection or UsersProjection()
        self.retry_after = retry_after
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._last_start = -retry_after

    def request(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            if time.monotonic() - self._last_start < self.retry_after:
                return
            self._last_start = time.monotonic()
            self._thread = threading.Thread(target=self._run, name="ledger-rebuild", daemon=True)
            self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        try:
            result = Rebuild(self.database, self.ledger, self.projection).run()
            log.info(
                "rebuilt %r: %d users from %d events in %.1fs (%.0f events/s)",
                self.projection.name,
                result.users,
                result.events,
                result.seconds,
                result.events_per_second,
            )
        except RebuildInProgress:
            pass
        except Exception:
            log.exception("rebuild of %r failed", self.projection.name)
