"""Call-rate and daily-byte limits, shared by the gRPC client and the reference server.

Both limits are *strict*: :class:`SlidingWindowLimiter` guarantees that no 60-second window (of
its clock) ever holds more than ``limit`` permits, so a client that obeys it can never trip a
server that counts per calendar minute, per sliding minute or with a token bucket of the same
size. A plain token bucket would not: it lets ``2 × limit`` calls through in the first minute.

Clocks and ``sleep`` are injectable so tests advance time without sleeping.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

Clock = Callable[[], float]
Sleep = Callable[[float], None]

#: Length of the rate-limit window in seconds (limits are configured "per minute").
WINDOW_S = 60.0
#: Most sleep-and-retry rounds one ``acquire`` makes while waiting; other threads may take the
#: freed permits first, and the loop must stay bounded even then.
_MAX_WAIT_ROUNDS = 8


class SlidingWindowLimiter:
    """At most ``limit`` permits in any window of :data:`WINDOW_S` seconds; ``limit=0`` = no limit.

    Thread-safe. Keeps the time of the last ``limit`` permits, so memory is O(limit).
    """

    def __init__(self, limit: int, *, clock: Clock = time.monotonic,
                 sleep: Sleep = time.sleep) -> None:
        if limit < 0:
            raise ValueError("limit must be ≥ 0")
        self.limit = limit
        self._clock = clock
        self._sleep = sleep
        self._stamps: deque[float] = deque()
        self._lock = threading.Lock()

    def try_acquire(self, count: int = 1) -> float:
        """Take ``count`` permits now and return 0.0, or take none and return the wait in seconds.

        The returned wait is how long until ``count`` permits would be free if nobody else took
        any; ``inf`` when ``count`` exceeds the limit itself.
        """
        if self.limit == 0:
            return 0.0
        if count > self.limit:
            return float("inf")
        with self._lock:
            now = self._clock()
            stamps = self._stamps
            while stamps and now - stamps[0] >= WINDOW_S:
                stamps.popleft()
            free = self.limit - len(stamps)
            if count <= free:
                stamps.extend([now] * count)
                return 0.0
            # The permit that must expire before ``count`` fit is the (count - free)-th oldest.
            return stamps[count - free - 1] + WINDOW_S - now

    def acquire(self, count: int = 1, *, max_wait_s: float = 0.0) -> float:
        """Take ``count`` permits, sleeping up to ``max_wait_s`` in total for them.

        Returns 0.0 on success, otherwise the wait that would still be needed (> 0) and takes
        nothing. Never sleeps when the needed wait is already longer than what is left.
        """
        deadline = self._clock() + max_wait_s
        wait = self.try_acquire(count)
        for _ in range(_MAX_WAIT_ROUNDS):
            if wait == 0.0 or wait > deadline - self._clock():
                return wait
            self._sleep(wait)
            wait = self.try_acquire(count)
        return wait

    def in_window(self) -> int:
        """Permits taken in the current window (for health and tests)."""
        with self._lock:
            now = self._clock()
            return sum(1 for t in self._stamps if now - t < WINDOW_S)


class DailyByteBudget:
    """At most ``budget`` bytes per UTC day; ``budget=0`` = unlimited.

    Bytes are *reserved* before a fetch and the unused part is refunded afterwards, so concurrent
    callers can never overdraw together. The day rolls over at 00:00 UTC of ``wall_clock`` (Unix
    seconds), which is how hardware vendors count daily quotas.
    """

    def __init__(self, budget: int, *, wall_clock: Clock = time.time) -> None:
        if budget < 0:
            raise ValueError("budget must be ≥ 0")
        self.budget = budget
        self._wall_clock = wall_clock
        self._day = self._today()
        self._used = 0
        self._lock = threading.Lock()

    def _today(self) -> int:
        return int(self._wall_clock() // 86_400)

    def _roll(self) -> None:
        today = self._today()
        if today != self._day:
            self._day, self._used = today, 0

    def reserve(self, n: int) -> int | None:
        """Reserve ``n`` bytes; return the UTC day they count against, or None if too few are left.

        Pass the returned day to :meth:`refund` so a refund never lands in a later day's budget.
        """
        with self._lock:
            self._roll()
            if self.budget and n > self.budget - self._used:
                return None
            self._used += n
            return self._day

    def refund(self, n: int, day: int) -> None:
        """Give back ``n`` bytes reserved on ``day`` that were not drawn after all."""
        if n <= 0:
            return
        with self._lock:
            self._roll()
            if day == self._day:  # yesterday's reservation is already forgotten
                self._used = max(self._used - n, 0)

    @property
    def used(self) -> int:
        """Bytes drawn (or reserved) so far today; counted even when the budget is unlimited."""
        with self._lock:
            self._roll()
            return self._used

    @property
    def day(self) -> int:
        """The current UTC day number (days since 1970-01-01)."""
        with self._lock:
            self._roll()
            return self._day

    @property
    def left(self) -> int | None:
        """Bytes still available today; None when unlimited."""
        if self.budget == 0:
            return None
        with self._lock:
            self._roll()
            return max(self.budget - self._used, 0)
