"""The library behind ``qrs up | down | status | logs``: launch a profile's stack and track it.

It imports neither typer nor rich and returns data (a :class:`LaunchPlan`, an
:class:`UpResult`, :class:`StackStatus` lists) that the commands render as text or JSON.
Modules, one job each:

- ``types``: plans, steps, checks, statuses — the data everything else passes around.
- ``target``: profile + flags → a validated :class:`StackTarget` (same validation as
  ``qrs profile validate``).
- ``preflight``: free ports, and a quick probe (connect, tls, shape) of a remote entropy server.
- ``engine``: which vLLM the native runtime runs, its flags, and the model it serves.
- ``native``: the reference entropy server and vLLM as detached child processes.
- ``compose``: the real Compose v2 ``up --build --wait``, its failures named, ``down``/``ps``.
- ``processes``: start detached, recognise by pid + start time, stop a whole session.
- ``health``: vLLM ``/health`` and gRPC health SERVING, and the bounded readiness wait.
- ``state``: the per-profile state directory and its ``state.json``.
- ``logs``: tail and follow the native runtime's log files.
- ``control``: the four operations, in the order of DESIGN.md.
"""

from __future__ import annotations

from qrs_cli.runtime.control import (
    DEFAULT_TIMEOUT_S,
    DownResult,
    LogSource,
    UpOptions,
    bring_down,
    bring_up,
    log_source,
    plan_up,
    require_known_profile,
    stack_status,
)
from qrs_cli.runtime.errors import LaunchError
from qrs_cli.runtime.state import profile_state_dir, state_root
from qrs_cli.runtime.types import (
    LaunchPlan,
    PlanFile,
    ReadinessCheck,
    Reporter,
    ServiceStatus,
    SilentReporter,
    StackStatus,
    Step,
    UpResult,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DownResult",
    "LaunchError",
    "LaunchPlan",
    "LogSource",
    "PlanFile",
    "ReadinessCheck",
    "Reporter",
    "ServiceStatus",
    "SilentReporter",
    "StackStatus",
    "Step",
    "UpOptions",
    "UpResult",
    "bring_down",
    "bring_up",
    "log_source",
    "plan_up",
    "profile_state_dir",
    "require_known_profile",
    "stack_status",
    "state_root",
]
