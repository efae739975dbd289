"""Child processes of the native runtime: start detached, recognise later, stop completely.

Each service starts in a new session (``start_new_session``), so it leads its own process group
and session: vLLM's engine-core and worker processes inherit both, and stopping the service
means signalling every process of that session — nothing is left behind as an orphan, even a
child that moved to another process group.

A pid alone is not an identity (pids are reused), so a record keeps the kernel's start time of
the process (``/proc/<pid>/stat`` field 22); a pid whose start time differs is someone else's.
A zombie counts as gone. Without ``/proc`` (macOS), liveness falls back to signal 0 and the
process group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from qrs_cli.runtime.errors import LaunchError
from qrs_cli.runtime.state import ProcessRecord
from qrs_cli.runtime.types import Step

_PROC = Path("/proc")
#: Popen objects of the children this process started: kept so they are not garbage-collected
#: (and reaped or warned about) while ``qrs up`` still runs; the children outlive ``qrs``.
_STARTED: list[subprocess.Popen[bytes]] = []


def spawn(step: Step, base_env: Mapping[str, str], port: int) -> ProcessRecord:
    """Start ``step`` detached, output appended to its log file; return its record."""
    env = {k: v for k, v in base_env.items() if k not in step.unset}
    env.update(dict(step.env))
    log_path = Path(step.log)
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                step.argv,
                cwd=step.cwd or None,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    except OSError as exc:
        raise LaunchError(
            f"cannot start {step.name}: {exc.strerror or exc} ({step.argv[0]})",
            "check that the interpreter exists (QRS_VLLM_PYTHON) and the state folder is writable",
        ) from exc
    _STARTED.append(proc)
    ticks = start_ticks(proc.pid)
    return ProcessRecord(step.name, proc.pid, ticks or 0, port, step.log, step.argv)


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, or None if gone."""
    try:
        text = (_PROC / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    _, _, rest = text.rpartition(")")
    fields = rest.split()
    return fields if len(fields) > 19 else None


def start_ticks(pid: int) -> int | None:
    """The kernel start time of ``pid`` in clock ticks; None when it is gone or a zombie."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _reap(pid: int) -> None:
    """Collect the exit status when ``pid`` is a child of this very process (``up`` waiting for
    readiness, or tests running ``qrs`` in-process), so it does not linger as a zombie."""
    for proc in _STARTED:
        if proc.pid == pid:
            proc.poll()


def is_running(record: ProcessRecord) -> bool:
    """The recorded process itself still runs (not a zombie, not a reused pid)."""
    _reap(record.pid)
    if _PROC.is_dir():
        ticks = start_ticks(record.pid)
        return ticks is not None and (record.start_ticks in (0, ticks))
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``, or of process group ``sid`` without /proc."""
    if not _PROC.is_dir():
        try:
            os.killpg(sid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [sid]
    members = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and fields[0] not in ("Z", "X") and (fields[3] == str(sid)):
            members.append(int(entry.name))
    return members


def stop(record: ProcessRecord, grace_s: float = 20.0) -> list[int]:
    """SIGTERM the record's session, then SIGKILL what is left after ``grace_s``.

    Returns the pids still alive afterwards (empty when everything stopped). A record whose
    leader already exited still has its session swept: its children may have outlived it.
    """
    leader_alive = is_running(record)
    members = session_members(record.pid)
    if not leader_alive and not members:
        return []
    _signal_all(record.pid, members, signal.SIGTERM)
    if _wait_gone(record, grace_s):
        return []
    _signal_all(record.pid, session_members(record.pid), signal.SIGKILL)
    _wait_gone(record, 5.0)
    return session_members(record.pid)


def _signal_all(sid: int, members: list[int], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sid, sig)
    for pid in members:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait_gone(record: ProcessRecord, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(record.pid)
        if not session_members(record.pid):
            return True
        time.sleep(0.1)
    return False


def exit_code(record: ProcessRecord) -> int | None:
    """The exit code of a child started by this process, when it has exited; else None."""
    for proc in _STARTED:
        if proc.pid == record.pid:
            return proc.poll()
    return None
