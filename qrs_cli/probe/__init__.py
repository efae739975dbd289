"""The library behind ``qrs probe``: is an entropy server usable, and how well?

It imports neither typer nor rich, and returns data (a :class:`ProbeReport` of
:class:`StageResult`) that the command renders as text or JSON. grpc, numpy and the profile
library load only when this package is imported, never for ``qrs --help``. Modules, one job
each:

- ``types``: the target, the options, the results, the exit codes.
- ``target``: profile + flags → a validated :class:`ProbeTarget`.
- ``wire`` / ``calls`` / ``channel``: the protocol by hand, raw gRPC calls, reaching the server.
- ``call_budget``: every call counted; the profile's rate limit and daily budget never exceeded.
- ``stages_network`` (connect, tls, health, reflection), ``stages_calls`` (auth, shape,
  streaming, limits), ``latency``, ``randomness``, ``capacity`` (budget): the stages.
- ``runner``: the stages in order, their dependencies, the report.
"""

from __future__ import annotations

from qrs_cli.probe.call_budget import DAILY_BUDGET_SHARE, CallBudget
from qrs_cli.probe.errors import ProbeError
from qrs_cli.probe.randomness import RandomnessAssessment, assess
from qrs_cli.probe.runner import STAGE_NAMES, ProbeObserver, run_probe
from qrs_cli.probe.target import ResolvedTarget, TargetOverrides, resolve_target
from qrs_cli.probe.types import (
    EXIT_CODES,
    ProbeOptions,
    ProbeReport,
    ProbeTarget,
    StageResult,
    Status,
    TlsOptions,
)

__all__ = [
    "DAILY_BUDGET_SHARE",
    "EXIT_CODES",
    "STAGE_NAMES",
    "CallBudget",
    "ProbeError",
    "ProbeObserver",
    "ProbeOptions",
    "ProbeReport",
    "ProbeTarget",
    "RandomnessAssessment",
    "ResolvedTarget",
    "StageResult",
    "Status",
    "TargetOverrides",
    "TlsOptions",
    "assess",
    "resolve_target",
    "run_probe",
]
