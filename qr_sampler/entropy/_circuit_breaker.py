"""An adaptive circuit breaker: per-call timeouts that follow the server, and a pause when it fails.

Why: a sampler step waits for its entropy, so a dead or hung server must cost at most a few
short timeouts, then nothing at all (the fallback serves) until the server is worth trying again.

States::

    closed ──N consecutive failures──▶ open ──recovery window elapsed (not held)──▶ half_open
      ▲                                  │  ▲      or released by the readiness watcher   │
      │                                  │  └──── trial call fails (window ×2, capped) ◀──┤
      └──────────────────────────────────┴─────────── trial call succeeds ◀──────────────┘

Invariants:
- While open, :meth:`CircuitBreaker.before_call` refuses every call; in half-open exactly one
  caller (the trial) is let through and the others are refused until the trial reports.
- The readiness watcher (``_grpc_readiness``) may *hold* the open state (the server refuses
  connections: no timer-driven trial would succeed, and one against a black-holed address would
  block its caller) and *release* it (the server accepts connections again: try at once). A hold
  lasts until its owner releases it or ends; a new trip clears it, and a release from a watcher
  that no longer owns the hold (a newer one does, or the breaker tripped since) is ignored.
- A failure is what the caller reports: the entropy source reports one per fetch that failed
  after its retries, so the retry budget and the threshold do not multiply.
- The adaptive timeout is ``clamp(P99(recent latencies) × multiplier, min, max)``; until
  ``_MIN_SAMPLES`` latencies are known it is ``max`` (the configured call timeout). A timed-out call
  is recorded as a latency equal to the timeout it had (:meth:`CircuitBreaker.note_timeout`), so
  repeated timeouts raise the timeout instead of locking it at a value the server cannot meet.
- Disabled, the breaker never opens and every call gets ``max``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from qr_sampler.settings import setting_default

State = Literal["closed", "open", "half_open"]

#: Latency samples needed before the adaptive timeout replaces the configured maximum.
_MIN_SAMPLES = 10


@dataclass(frozen=True)
class BreakerConfig:
    """The ``QR_CB_*`` settings in seconds. See the settings schema for their meaning.

    Defaults are the schema's (one source of defaults: a changed default cannot drift).
    """

    enabled: bool = setting_default("cb_enabled")
    window_size: int = setting_default("cb_window_size")
    min_timeout_s: float = setting_default("cb_min_timeout_ms") / 1000
    timeout_multiplier: float = setting_default("cb_timeout_multiplier")
    failure_threshold: int = setting_default("cb_failure_threshold")
    recovery_window_s: float = setting_default("cb_recovery_window_s")
    max_recovery_window_s: float = setting_default("cb_max_recovery_window_s")


class CircuitOpenError(Exception):
    """Raised by :meth:`CircuitBreaker.before_call` when the breaker refuses a call."""

    def __init__(self, retry_in_s: float, failures: int, *, held: bool = False) -> None:
        self.retry_in_s = retry_in_s
        self.failures = failures
        self.held = held
        then = ("the server does not accept connections; trying again as soon as it does"
                if held else f"next trial call in {retry_in_s:.2f} s")
        super().__init__(f"circuit breaker open after {failures} consecutive failures; {then}")


class CircuitBreaker:
    """Thread-safe breaker and adaptive timeout for calls to one server."""

    def __init__(self, config: BreakerConfig, max_timeout_s: float, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.max_timeout_s = max_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._latencies: deque[float] = deque(maxlen=config.window_size)
        self._timeout_s = max_timeout_s
        self._state: State = "closed"
        self._failures = 0
        self._window_s = config.recovery_window_s
        self._open_until = 0.0
        self._held = False
        self._holder: object | None = None
        self._trial_in_flight = False
        self._samples_since_p99 = 0
        # The P99 needs a sorted copy of the window: refresh it every window/10 samples (a
        # tenth of the window is new by then) and at once on a timeout, not on every call.
        self._p99_every = max(1, config.window_size // 10)
        self.opened_count = 0

    @property
    def state(self) -> State:
        return self._state

    def before_call(self) -> bool:
        """Allow a call (return True if it is the half-open trial) or raise CircuitOpenError."""
        if not self.config.enabled or self._state == "closed":  # fast path, no lock
            return False
        with self._lock:
            state: State = self._state  # re-read under the lock
            if state == "closed":
                return False
            now = self._clock()
            if state == "open" and now >= self._open_until and not self._held:
                state = self._state = "half_open"
            if state == "half_open" and not self._trial_in_flight:
                self._trial_in_flight = True
                return True
            raise CircuitOpenError(max(self._open_until - now, 0.0), self._failures,
                                   held=self._held)

    def hold(self, owner: object) -> None:
        """Keep the breaker open past its recovery window (the server refuses connections)."""
        with self._lock:
            if self._state == "open":
                self._held, self._holder = True, owner

    def release(self, owner: object, *, now: bool) -> None:
        """End ``owner``'s hold; ``now=True`` also ends the recovery window (the server is back).

        Ignored when another owner holds the breaker: a stale watcher cannot end a newer one's
        hold nor start a trial on an outdated verdict.
        """
        with self._lock:
            if self._holder is not None and self._holder is not owner:
                return
            self._held, self._holder = False, None
            if now and self._state == "open":
                self._open_until = self._clock()

    def timeout_s(self) -> float:
        """The timeout the next call should use, in seconds."""
        return self._timeout_s

    def record_success(self, latency_s: float) -> bool:
        """Count a successful call; return True if it closed the breaker (a recovery)."""
        if self._state == "closed" and self._failures == 0:
            # Hot path, no lock: deque.append is atomic, and a lost increment of the refresh
            # counter under a race only delays one P99 refresh.
            self._latencies.append(latency_s)
            self._samples_since_p99 += 1
            if self._samples_since_p99 >= self._p99_every:
                with self._lock:
                    self._refresh_timeout()
            return False
        with self._lock:
            self._add_latency(latency_s)
            self._failures = 0
            recovered = self._state != "closed"
            if recovered:
                self._state, self._trial_in_flight = "closed", False
                self._held, self._holder = False, None
                self._window_s = self.config.recovery_window_s
            return recovered

    def cancel_trial(self) -> None:
        """The admitted trial made no call after all (e.g. the client's own limit refused it)."""
        with self._lock:
            self._trial_in_flight = False

    def note_timeout(self, timeout_s: float) -> None:
        """A call timed out after ``timeout_s``: a latency sample (the P99 refreshes at once)."""
        with self._lock:
            self._add_latency(timeout_s, force=True)

    def record_failure(self) -> bool:
        """Count a failure (a fetch that failed despite retries); True if it opened the breaker."""
        with self._lock:
            self._failures += 1
            if not self.config.enabled:
                return False
            if self._state == "half_open":
                # The trial failed: wait longer before the next one.
                self._window_s = min(self._window_s * 2, self.config.max_recovery_window_s)
                self._trip()
                return True
            if self._state == "closed" and self._failures >= self.config.failure_threshold:
                self._trip()
                return True
            return False

    def _trip(self) -> None:
        self._state, self._trial_in_flight = "open", False
        self._held, self._holder = False, None
        self._open_until = self._clock() + self._window_s
        self.opened_count += 1

    def _add_latency(self, latency_s: float, *, force: bool = False) -> None:
        self._latencies.append(latency_s)
        self._samples_since_p99 += 1
        if force or self._samples_since_p99 >= self._p99_every:
            self._refresh_timeout()

    def _refresh_timeout(self) -> None:
        """Recompute the adaptive timeout from the window (caller holds the lock)."""
        self._samples_since_p99 = 0
        if not self.config.enabled or len(self._latencies) < _MIN_SAMPLES:
            return
        ordered = sorted(self._latencies)
        p99 = ordered[min(math.ceil(0.99 * len(ordered)) - 1, len(ordered) - 1)]
        adaptive = p99 * self.config.timeout_multiplier
        self._timeout_s = min(max(adaptive, self.config.min_timeout_s), self.max_timeout_s)

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state for health reports."""
        with self._lock:
            retry_in = max(self._open_until - self._clock(), 0.0) if self._state == "open" else 0.0
            return {
                "circuit": self._state if self.config.enabled else "disabled",
                "consecutive_failures": self._failures,
                "adaptive_timeout_ms": round(self._timeout_s * 1000, 3),
                "recovery_window_s": self._window_s,
                "next_trial_in_s": round(retry_in, 3),
                "waiting_for_server": self._held,
                "times_opened": self.opened_count,
            }
