"""A background watcher that ends the circuit breaker's pause as soon as the server is back.

Why: after an outage the sampler should get quantum bytes again within a second or two of the
server's return, yet never block a step on a server that is still down. A timer alone cannot
do both: a short recovery window makes trial calls (each blocking a step, up to the call
timeout against a black-holed address) frequent; a long one delays the return. Watching
*connectivity* costs no RPC, no quota and no step time.

How: while the breaker is open, one daemon thread opens a fresh channel (same address and
credentials as the client, its own subchannel pool) and subscribes to its connectivity with
``try_to_connect``; gRPC then reconnects on its own short backoff (``_grpc_channel``: ≤ ~1.2 s).
No call is ever made on this channel.

- It fails (TRANSIENT_FAILURE) or stays CONNECTING longer than ``verdict_s``: the server is down
  or unreachable; the watcher *holds* the breaker open (no trial call would succeed, and one to
  a black hole would block its caller) until the channel becomes READY, then *releases* it at
  once: the next fetch is the trial (a fresh channel, a timeout that covers a reconnect).
- It reaches READY without having failed first. With ``assume_down`` (the breaker opened on
  calls that found no server, so it may simply have come back before the watcher looked) that
  is a return too: release. Otherwise the server accepts connections and the breaker opened for
  another reason (errors, timeouts, auth): the watcher leaves the pause to the breaker's
  recovery window and ends. The source grants ``assume_down`` once per outage, so a server that
  accepts connections but fails every call is paced by the window, not tried at every step.

Guarantees: one live watcher per source (a new trip replaces the old one, whose verdicts the
breaker then ignores); it ends when the breaker leaves ``open``, when released, or on
:meth:`ReadinessWatcher.stop`; a hold never outlives its watcher (the ``finally`` lifts it), so a
crashed watcher cannot pin the breaker open; the channel is always closed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import grpc

from qr_sampler.entropy._circuit_breaker import CircuitBreaker

logger = logging.getLogger(__name__)

#: How often the watcher re-checks whether it should still run (stop, breaker closed).
POLL_S = 0.1
#: How long gRPC's connectivity poller may take to end after the last unsubscribe (two of its
#: 0.2 s watches, and a margin).
_POLLER_EXIT_S = 0.5
#: Most re-subscriptions after an IDLE state (each adds a callback; IDLE after a failure is
#: rare, and a watch must stay bounded in what it allocates).
_MAX_NUDGES = 32


class ReadinessWatcher:
    """One watch of one server; :meth:`start` it when the breaker opens."""

    def __init__(self, open_channel: Callable[[], grpc.Channel], breaker: CircuitBreaker,
                 *, verdict_s: float, address: str, assume_down: bool = False) -> None:
        self._open_channel = open_channel
        self._breaker = breaker
        self._verdict_s = verdict_s
        self._assume_down = assume_down
        self._address = address
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="qr-grpc-readiness", daemon=True)
        #: How the watch ended: "released" (server back), "reachable" (it never went away),
        #: "stopped", "closed" (breaker left open by itself) or "error"; "" while running.
        self.outcome = ""

    def start(self) -> None:
        if self._assume_down:  # in force from the opening on, not from when the thread runs
            self._breaker.hold(self)
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, join_s: float = 1.0) -> None:
        """Ask the thread to end and wait up to ``join_s`` for it (it polls every POLL_S)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(join_s)

    def _run(self) -> None:
        states: queue.SimpleQueue[grpc.ChannelConnectivity] = queue.SimpleQueue()
        channel: grpc.Channel | None = None
        try:
            channel = self._open_channel()
            channel.subscribe(states.put, try_to_connect=True)
            self.outcome = self._watch(channel, states)
        except Exception as exc:  # never let the watcher die silently holding the breaker
            self.outcome = "error"
            logger.debug("readiness watcher for %s ended: %s", self._address, exc)
        finally:
            self._breaker.release(self, now=self.outcome == "released")
            if channel is not None:
                self._close(channel, states)

    @staticmethod
    def _close(channel: grpc.Channel,
               states: queue.SimpleQueue[grpc.ChannelConnectivity]) -> None:
        """Unsubscribe, let gRPC's polling thread notice, then close.

        gRPC polls a subscribed channel in 0.2 s watches; closing the channel in the middle of
        one makes that thread die with "Cannot monitor channel state: Channel closed!". After
        the last unsubscribe the poller ends within two watches, so the close waits that long
        (on this background thread; nobody waits for it).
        """
        for _ in range(_MAX_NUDGES + 1):  # once per subscription (a no-op past the last)
            channel.unsubscribe(states.put)
        time.sleep(_POLLER_EXIT_S)
        channel.close()

    def _watch(self, channel: grpc.Channel,
               states: queue.SimpleQueue[grpc.ChannelConnectivity]) -> str:
        """Follow the channel's states until a verdict; return the outcome."""
        started = time.monotonic()
        down, seen_connecting, nudges = self._assume_down, False, 0
        while not self._stop.is_set():
            if self._breaker.state != "open":
                return "closed"
            try:
                state = states.get(timeout=POLL_S)
            except queue.Empty:
                if not down and time.monotonic() - started >= self._verdict_s:
                    down = True  # connecting for ages: a black hole is as down as a refusal
                    self._breaker.hold(self)
                continue
            if state is grpc.ChannelConnectivity.READY:
                if not down:
                    return "reachable"
                logger.debug("entropy server %s accepts connections again", self._address)
                return "released"
            if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE and not down:
                down = True
                self._breaker.hold(self)
            elif (state is grpc.ChannelConnectivity.IDLE and seen_connecting
                  and nudges < _MAX_NUDGES):
                # After TRANSIENT_FAILURE gRPC keeps reconnecting by itself; a channel that went
                # IDLE (a connection came and went) waits for a reason to connect: give one.
                nudges += 1
                channel.subscribe(states.put, try_to_connect=True)
            seen_connecting = seen_connecting or state is not grpc.ChannelConnectivity.IDLE
        return "stopped"
