"""The garbage collector, tuned for a process that serves: the API's, the
projector's (with the expiry worker) and the webhooks'.

Every command allocates thousands of short-lived objects; with CPython's
default threshold (700) the collector runs every few commands and each of its
passes walks what the process keeps (a writer's cache of users, their grants
and holds), which shows in throughput and in the tail latency. Objects made at
start-up never die: they are frozen out of its way.
https://docs.python.org/3/library/gc.html#gc.freeze
"""

from __future__ import annotations

import gc

#: Allocations between young-generation collections (LEDGER_GC_THRESHOLD for the API).
THRESHOLD = 20_000


def tune_garbage_collector(threshold: int = THRESHOLD) -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold, 20, 100)
