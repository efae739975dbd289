"""The gRPC client's quotas (calls per minute, bytes per UTC day), shared by every process of a
host that uses the same server, and kept across restarts.

Why: a metered QRNG counts calls and bytes per *key*, not per process. Two replicas, every TP
rank, or a restarted engine that each kept their own counters would together overspend the
server's limit (it rejects calls) or its daily budget (a bill, or a ban).

How: one small JSON state file per server identity under the state folder (``QR_QUOTA_STATE_DIR``,
default ``$XDG_STATE_HOME/qrs/quota`` or ``~/.local/state/qrs/quota``). The identity is the
SHA-256 of address, method path and the SHA-256 of the API key, so the key never touches the
disk and neither does a hash that could be checked against a guessed key on its own. Every
admission is one transaction: take an exclusive ``fcntl.flock`` on a separate lock file, read
the state, decide, write it to a temporary file and ``os.replace`` it over the old one (readers
never see half a file), unlock.

The state (wall-clock based, because processes share no monotonic clock across restarts)::

    {"schema": 1, "server": "<address> <method>", "day": <UTC day number>, "bytes": <used today>,
     "calls": [[<unix second>, <calls in that second>], ...]}

Strictness: calls are counted in whole-second buckets, and an admission at time ``t`` counts
every bucket that overlaps ``(t - 60, t]``. A call admitted at ``t`` sees every earlier call of
any 60-second window that ends at or after ``t``, so *no* 60-second window ever holds more than
the limit (the price: a bucket is counted up to one second longer than needed, ≤ 1/61 of the
throughput). The daily budget rolls at 00:00 UTC; a clock that goes backwards never rolls it
back (that would hand out a day's bytes twice).

Failure handling: a missing file is a fresh state; an unreadable (corrupt) one is replaced by
the last state this process saw (or a fresh one), logged once. When the folder cannot be used at
all (read-only, no space, no permission), the ledger keeps the same rules in process memory,
seeded with the last state it saw, and logs once: limits then hold per process only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], None]

SCHEMA = 1
#: Rate-limit window in seconds (limits are configured per minute).
WINDOW_S = 60
#: A call in bucket ``k`` (its second) overlaps windows that end before ``k + 1 + WINDOW_S``.
_BUCKET_LIFE_S = WINDOW_S + 1
_DAY_S = 86_400
#: How long one transaction waits for another process to release the lock before refusing.
LOCK_TIMEOUT_S = 2.0
_LOCK_POLL_S = 0.0005
#: Most sleep-and-retry rounds one admission makes while waiting for a permit; other processes
#: may take the freed permits first, and the loop must stay bounded even then.
_MAX_WAIT_ROUNDS = 8


class QuotaRefused(Exception):
    """The quota cannot admit the calls/bytes now; nothing was taken.

    ``kind`` is ``rate_limit`` or ``budget``; ``wait_s`` is how long until the calls would fit
    (``inf``: never, e.g. more calls than the limit); ``bytes_left`` is today's remaining budget
    (None when unlimited).
    """

    def __init__(self, kind: str, *, wait_s: float = math.inf,
                 bytes_left: int | None = None, waited: bool = False) -> None:
        super().__init__(kind)
        self.kind = kind
        self.wait_s = wait_s
        self.bytes_left = bytes_left
        self.waited = waited


class _LockBusy(Exception):
    """The lock file stayed locked by another process for :data:`LOCK_TIMEOUT_S`."""


@dataclass
class QuotaState:
    """One server's counters: today's bytes and the calls of the last minute by second."""

    day: int = 0
    bytes: int = 0
    calls: dict[int, int] = field(default_factory=dict)

    def roll(self, now: float) -> None:
        """Forget expired call buckets; start a new day's budget at 00:00 UTC (forward only)."""
        today = int(now // _DAY_S)
        if today > self.day:
            self.day, self.bytes = today, 0
        horizon = now - _BUCKET_LIFE_S
        if any(second <= horizon for second in self.calls):
            self.calls = {s: c for s, c in self.calls.items() if s > horizon}
        # A clock that jumped back by more than a window would keep old buckets "in the future"
        # for that long; count them as made now instead (still counted, never lost).
        late = [s for s in self.calls if s > now + _BUCKET_LIFE_S]
        for second in late:
            self.calls[int(now)] = self.calls.get(int(now), 0) + self.calls.pop(second)

    def calls_in_window(self) -> int:
        """Calls that still count (call :meth:`roll` first)."""
        return sum(self.calls.values())

    def wait_for(self, needed: int, now: float) -> float:
        """Seconds until ``needed`` more permits have expired (oldest buckets first)."""
        freed = 0
        for second in sorted(self.calls):
            freed += self.calls[second]
            if freed >= needed:
                return max(second + _BUCKET_LIFE_S - now, 0.0)
        return 0.0

    def to_json(self, server: str) -> str:
        return json.dumps({"schema": SCHEMA, "server": server, "day": self.day,
                           "bytes": self.bytes, "calls": sorted(self.calls.items())},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> QuotaState:
        """Parse a state file; ValueError when it is not one (corrupt, another schema)."""
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
            raise ValueError("not a quota state of schema 1")
        day, used, calls = raw.get("day"), raw.get("bytes"), raw.get("calls")
        if not (isinstance(day, int) and isinstance(used, int) and isinstance(calls, list)):
            raise ValueError("missing or mistyped fields")
        buckets: dict[int, int] = {}
        for item in calls:
            if not (isinstance(item, list) and len(item) == 2
                    and all(isinstance(v, int) for v in item) and item[1] > 0):
                raise ValueError("a call bucket is not [second, count]")
            buckets[item[0]] = buckets.get(item[0], 0) + item[1]
        return cls(day=day, bytes=max(used, 0), calls=buckets)

    def copy(self) -> QuotaState:
        return QuotaState(self.day, self.bytes, dict(self.calls))


def server_identity(address: str, method: str, api_key: str) -> str:
    """Hex SHA-256 naming one server account: address, method and a hash of the key."""
    key_hash = hashlib.sha256(api_key.encode()).hexdigest()
    return hashlib.sha256(f"{address}\n{method}\n{key_hash}".encode()).hexdigest()


def default_state_dir(environ: dict[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/qrs/quota``, or ``~/.local/state/qrs/quota`` when that is unset."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME", "").strip()
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "state"
    return root / "qrs" / "quota"


class QuotaLedger:
    """Admits calls and bytes against a per-minute call limit and a per-UTC-day byte budget.

    Assumptions: ``limit_per_min`` and ``daily_bytes`` are ≥ 0 (0 = unlimited); the wall clock
    is roughly the same for every process of the host. Guarantees: no 60-second window of the
    wall clock holds more than ``limit_per_min`` admitted calls of all processes sharing the
    folder, and no UTC day more than ``daily_bytes`` bytes (minus refunds); a refusal takes
    nothing; thread-safe; every method returns within its wait bound plus
    :data:`LOCK_TIMEOUT_S`. ``state_dir=None`` keeps the state in memory (this process only).
    """

    def __init__(self, *, limit_per_min: int, daily_bytes: int, identity: str, server: str,
                 state_dir: Path | None, wall_clock: Clock = time.time,
                 sleep: Sleep = time.sleep) -> None:
        self.limit = limit_per_min
        self.budget = daily_bytes
        self.server = server
        self._clock = wall_clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._state = QuotaState()  # the last state seen (the whole state when in memory)
        self._path: Path | None = None
        self._lock_path: Path | None = None
        self._lock_fd: int | None = None
        self._stamp: tuple[int, int, int] | None = None  # (inode, mtime_ns, size) we last wrote
        self._corrupt_logged = False
        self._tmp = ""
        if state_dir is not None:
            name = identity[:32]
            self._path = state_dir / f"{name}.json"
            self._lock_path = state_dir / f"{name}.lock"
            # Plain strings, built once: the hot path makes three file-system calls with them.
            self._tmp = str(state_dir / f".{name}.json.{os.getpid()}.tmp")

    @property
    def shared(self) -> bool:
        """True while the state lives in the shared file (False: in memory, this process)."""
        return self._path is not None

    @property
    def path(self) -> Path | None:
        return self._path

    # --- admission ------------------------------------------------------------------------------

    def admit(self, calls: int, nbytes: int, *, max_wait_s: float = 0.0) -> int:
        """Take ``calls`` call permits and ``nbytes`` of today's budget together.

        Waits (sleeping, outside the lock) up to ``max_wait_s`` in total for call permits; never
        for bytes, which only come back tomorrow. Returns the UTC day the bytes count against
        (pass it to :meth:`refund`); raises :class:`QuotaRefused` and takes nothing otherwise.
        """
        deadline = self._clock() + max_wait_s
        for round_ in range(_MAX_WAIT_ROUNDS + 1):
            refusal = self._try_admit(calls, nbytes)
            if isinstance(refusal, int):
                return refusal
            left = deadline - self._clock()
            if (refusal.kind != "rate_limit" or refusal.wait_s > left
                    or round_ == _MAX_WAIT_ROUNDS):
                refusal.waited = round_ > 0
                raise refusal
            self._sleep(refusal.wait_s)
        raise AssertionError("unreachable: the last round raises")

    def refund(self, nbytes: int, day: int) -> None:
        """Give back ``nbytes`` reserved on ``day`` and not drawn (a later day ignores it)."""
        if nbytes <= 0 or not self.budget:
            return
        # A refund lost to a busy lock only undercounts what is left: the safe direction.
        with contextlib.suppress(QuotaRefused), self._transaction() as state:
            state.roll(self._clock())
            if state.day == day:
                state.bytes = max(state.bytes - nbytes, 0)

    def _try_admit(self, calls: int, nbytes: int) -> int | QuotaRefused:
        now = self._clock()
        with self._transaction() as state:
            state.roll(now)
            if self.budget and nbytes > self.budget - state.bytes:
                return QuotaRefused("budget", bytes_left=max(self.budget - state.bytes, 0))
            if self.limit:
                if calls > self.limit:
                    return QuotaRefused("rate_limit", wait_s=math.inf)
                excess = state.calls_in_window() + calls - self.limit
                if excess > 0:
                    return QuotaRefused("rate_limit", wait_s=state.wait_for(excess, now))
            state.bytes += nbytes
            if calls:
                second = int(now)
                state.calls[second] = state.calls.get(second, 0) + calls
            return state.day

    # --- observation (no lock, never raises) ----------------------------------------------------

    def snapshot(self) -> dict[str, int | None]:
        """Calls in the window, calls left, bytes today and bytes left (None = unlimited).

        Reads the file without the lock (it is always whole, thanks to the atomic rename), so a
        metrics scrape never waits for, or slows, a fetch.
        """
        state = self._state.copy()
        if self._path is not None:
            with contextlib.suppress(OSError, ValueError):
                state = QuotaState.from_json(self._path.read_text(encoding="utf-8"))
        state.roll(self._clock())
        in_window = state.calls_in_window()
        return {
            "calls_in_window": in_window,
            "calls_left": max(self.limit - in_window, 0) if self.limit else None,
            "bytes_today": state.bytes,
            "bytes_left": max(self.budget - state.bytes, 0) if self.budget else None,
        }

    # --- storage --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[QuotaState]:
        """The current state, locked; written back when the block ends without an exception.

        Yields exactly once whatever happens to the files: a folder that fails mid-way turns
        the ledger local (the state it had is kept) and the transaction completes in memory.
        """
        with self._lock:
            if self._path is None:
                yield self._state
                return
            try:
                fd = self._acquire_file_lock()
            except _LockBusy:
                # Another process sits on the lock (stopped mid-transaction?): refuse this
                # admission rather than guess; the next one tries again.
                raise QuotaRefused("rate_limit", wait_s=LOCK_TIMEOUT_S) from None
            except OSError as exc:
                self._go_local(exc)
                self._close_lock_file()
                yield self._state
                return
            try:
                try:
                    state = self._load()
                except OSError as exc:
                    self._go_local(exc)
                    state = self._state
                before = state.copy()
                yield state
                if self._path is not None and state != before:
                    try:
                        self._save(state)
                    except OSError as exc:
                        self._go_local(exc)
                self._state = state
            finally:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_UN)
                if self._path is None:  # gone local during this transaction
                    self._close_lock_file()

    def _acquire_file_lock(self) -> int:
        """Lock the lock file (opened once per ledger), waiting up to :data:`LOCK_TIMEOUT_S`."""
        assert self._lock_path is not None
        if self._lock_fd is None:
            self._lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fd = self._lock_fd
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _LockBusy from None
                time.sleep(_LOCK_POLL_S)

    def _load(self) -> QuotaState:
        """The file's state; unchanged since our own write → the copy in memory (no parse)."""
        assert self._path is not None
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return self._state.copy() if self._stamp is not None else QuotaState()
        if (st.st_ino, st.st_mtime_ns, st.st_size) == self._stamp:
            return self._state.copy()
        try:
            return QuotaState.from_json(self._path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            if not self._corrupt_logged:
                self._corrupt_logged = True
                logger.warning("quota state %s is unreadable (%s); replacing it with the last "
                               "state this process saw", self._path, exc)
            return self._state.copy()

    def _save(self, state: QuotaState) -> None:
        """Write to a temporary file in the same folder, then rename it over the state file."""
        assert self._path is not None
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, state.to_json(self.server).encode())
            st = os.fstat(fd)
        finally:
            os.close(fd)
        os.replace(self._tmp, self._path)
        self._stamp = (st.st_ino, st.st_mtime_ns, st.st_size)

    def _go_local(self, exc: OSError) -> None:
        """The folder is unusable: keep the rules in memory from now on, and say so once."""
        logger.warning("quota state folder %s is unusable (%s); the rate limit and daily "
                       "budget now hold for this process only",
                       self._path.parent if self._path else "?", exc.strerror or exc)
        self._path = None  # the caller closes the lock file once it has unlocked it

    def _close_lock_file(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    def close(self) -> None:
        """Close the lock file (the state file stays for the next process)."""
        with self._lock:
            self._close_lock_file()
