"""Wraps a source so a failure is served by a fallback source, says so, and tests the bytes.

Every batch served by the fallback carries ``fallback=True``, the reason and its machine-readable
``fallback_kind``, so each token record shows that its entropy did not come from the configured
source and why. With no fallback (``QR_FALLBACK_MODE=error``) failures propagate as EntropyError
(whose ``kind`` says why), and the sampler stops the affected requests.

The primary's bytes pass the online health tests (:mod:`qr_sampler.entropy.health`) before they
are used, when the primary is a device whose bytes can fail them (``health_tested``): a block
that fails is a source failure like any other (``fallback_kind="health_test"``).

Logging is per *outage*, not per token: one WARNING when the source fails over, at most one
summary WARNING per :data:`SUMMARY_INTERVAL_S` while it stays down (how many fetches the
fallback served, by kind), one INFO when it recovers. A source that flaps faster than that is
folded into the summaries.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from qr_sampler.entropy.base import EntropySource
from qr_sampler.errors import EntropyError, EntropyUnavailableError
from qr_sampler.types import EntropyBatch

if TYPE_CHECKING:
    from qr_sampler.entropy.health import HealthTests

logger = logging.getLogger(__name__)

#: Least time between two WARNING lines about one source's outage.
SUMMARY_INTERVAL_S = 10.0


class FallbackEntropySource(EntropySource):
    """``primary`` first; on EntropyError (or bytes failing the health tests) ``fallback``, flagged.

    Assumptions: the sources are thread-safe. Guarantees: a batch is either the primary's, with
    ``fallback=False`` and bytes that passed the health tests (when run), or the fallback's with
    ``fallback=True`` and a ``fallback_kind``; with no fallback, the EntropyError propagates.
    """

    def __init__(self, primary: EntropySource, fallback: EntropySource | None, *,
                 health_tests: HealthTests | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.primary = primary
        self.fallback = fallback
        self.name = primary.name  # the configured source's name, not "fallback"
        self.fetch_uses_cpu = primary.fetch_uses_cpu
        # Tests only where they can fail: a seeded or cryptographic generator passes by
        # construction, and its bytes would only cost time.
        self.health_tests = health_tests if primary.health_tested else None
        self._lock = threading.Lock()
        self._outage = _OutageLog(primary.name, fallback.name if fallback else None, clock)
        self.fallback_count = 0
        self.health_test_failures = 0
        self.last_error = ""

    def get_random_bytes(self, n: int) -> bytes:
        return self.fetch_batch((n,)).data

    def get_random_bytes_batch(self, counts: Sequence[int]) -> EntropyBatch:
        return self.fetch_batch(counts)

    def fetch_batch(self, counts: Sequence[int], nonce: bytes = b"") -> EntropyBatch:
        try:
            batch = self.primary.fetch_batch(counts, nonce)
            tests = self.health_tests
            if tests is not None:
                problem = tests.check(batch.data)
                if problem:
                    with self._lock:
                        self.health_test_failures += 1
                    raise EntropyUnavailableError(
                        f"the bytes of {self.primary.name!r} failed the online health tests: "
                        f"{problem}", kind="health_test")
        except EntropyError as exc:
            return self._serve_fallback(counts, nonce, exc)
        self._outage.recovered()
        return batch

    def _serve_fallback(self, counts: Sequence[int], nonce: bytes,
                        exc: EntropyError) -> EntropyBatch:
        reason = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.fallback_count += 1
            self.last_error = reason
        self._outage.failed(exc.kind, reason)
        if self.fallback is None:
            raise exc
        try:
            batch = self.fallback.fetch_batch(counts, nonce)
        except EntropyError as fallback_exc:
            raise EntropyUnavailableError(
                f"primary {self.primary.name!r} and fallback {self.fallback.name!r} both "
                f"failed: {reason}; {fallback_exc}", kind=exc.kind
            ) from fallback_exc
        return replace(batch, fallback=True, fallback_reason=reason, fallback_kind=exc.kind,
                       nonce=nonce, echo_verified=None)

    def close(self) -> None:
        self.primary.close()
        if self.fallback is not None:
            self.fallback.close()

    def health(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "quota_calls_left": None,  # contract keys, filled in by sources that have quotas
            "quota_bytes_left_today": None,
            **self.primary.health(),
            "fallback_source": self.fallback.name if self.fallback else None,
            "fallback_count": self.fallback_count,
            "last_error": self.last_error,
            "health_tests": self.health_tests is not None,
            "health_test_failures": self.health_test_failures,
            "failing_since_s": self._outage.down_for(),
        }
        return report


class _OutageLog:
    """Few, useful log lines for a failing source (see the module docstring). Thread-safe.

    Invariants: at most one WARNING per ``interval`` (a failover line or a summary); an INFO
    recovery line only for an outage whose start was announced; counts are never lost, a
    suppressed failure shows up in the next summary.
    """

    def __init__(self, primary: str, fallback: str | None, clock: Callable[[], float],
                 interval: float = SUMMARY_INTERVAL_S) -> None:
        self._primary = primary
        self._fallback = fallback
        self._clock = clock
        self._interval = interval
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._announced = False
        self._last_line = -float("inf")
        self._episode_fetches = 0
        self._pending: Counter[str] = Counter()  # kinds of the failures since the last line
        self._pending_since = 0.0

    def down_for(self) -> float | None:
        """Seconds the source has been failing, None while it works."""
        since = self._down_since
        return None if since is None else round(self._clock() - since, 3)

    def failed(self, kind: str, reason: str) -> None:
        now = self._clock()
        with self._lock:
            if not self._pending:
                self._pending_since = now
            self._pending[kind] += 1
            new_episode = self._down_since is None
            if new_episode:
                self._down_since, self._episode_fetches, self._announced = now, 0, False
            self._episode_fetches += 1
            if now - self._last_line < self._interval:
                return  # quiet: counted for the next summary
            fresh = new_episode and sum(self._pending.values()) == 1
            pending, span = dict(self._pending), now - self._pending_since
            self._pending.clear()
            self._last_line, self._announced = now, True
        if fresh:
            if self._fallback is None:
                logger.warning("entropy source %r failed (%s: %s); no fallback "
                               "(QR_FALLBACK_MODE=error): the affected requests are stopped",
                               self._primary, kind, reason)
            else:
                logger.warning("entropy source %r failed (%s: %s); serving from %r and flagging "
                               "tokens until it recovers", self._primary, kind, reason,
                               self._fallback)
            return
        served = f"served by {self._fallback!r}" if self._fallback else "refused"
        by_kind = ", ".join(f"{k}: {n}" for k, n in sorted(pending.items()))
        logger.warning("entropy source %r still failing: %d fetches %s in the last %.0f s "
                       "(%s); last: %s", self._primary, sum(pending.values()), served,
                       span, by_kind, reason)

    def recovered(self) -> None:
        if self._down_since is None:  # the hot path: nothing to do, no lock
            return
        now = self._clock()
        with self._lock:
            since, self._down_since = self._down_since, None
            if since is None or not self._announced:
                return
            fetches = self._episode_fetches
        logger.info("entropy source %r recovered after %.1f s; %d fetches failed meanwhile%s",
                    self._primary, now - since, fetches,
                    f" (served by {self._fallback!r}, flagged)" if self._fallback else "")
