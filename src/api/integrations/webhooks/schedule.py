"""When a message that failed is tried again: at once, then after 5 s, 5 min,
30 min, 2 h, 5 h, 10 h and 10 h, each delay (but the first) moved by up to a
tenth either way so that many failures do not come back at one instant; after
the last, the message has failed. An endpoint that has been failing for five
days is disabled."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta

#: Seconds before each attempt: the first at once, the last 10 h after the one before.
DELAYS = (0, 5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
JITTER = 0.1
#: An endpoint failing for this long is disabled.
FAILING_LIMIT = timedelta(days=5)


def next_delay(tries: int, *, jitter: Callable[[], float] = random.random) -> timedelta | None:
    """After `tries` failed attempts, how long until the next; None when there
    is none (the message has failed). `jitter` returns a number in [0, 1)."""
    if tries >= len(DELAYS):
        return None
    seconds = DELAYS[tries]
    spread = seconds * JITTER * (2 * jitter() - 1)
    return timedelta(seconds=seconds + spread)
