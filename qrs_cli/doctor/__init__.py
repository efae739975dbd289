"""The library behind ``qrs doctor``: read-only checks of this machine, in categories.

Flutter-doctor style: each category (Python & qr-sampler, vLLM, Docker, GPU, ports, profiles,
Hugging Face, disk space) returns :class:`Check` data with ✓ / ! / ✗, a fix hint for every
problem, and details for ``-v``. It imports neither typer nor rich; it never contacts the
network (only local sockets and local commands, each with a timeout) and finishes in under two
seconds. Modules, one job each:

- ``types``: checks, categories, the report.
- ``context``: the inputs, facts computed once (``docker info``, profile values), ``run_tool``.
- ``checks_python`` / ``checks_vllm`` / ``checks_docker`` / ``checks_host``: the checks.
- ``runner``: all categories in parallel under one deadline.
"""

from __future__ import annotations

from qrs_cli.doctor.context import DoctorContext, ToolResult, run_tool
from qrs_cli.doctor.runner import CHECKS, DEADLINE_S, run_doctor
from qrs_cli.doctor.types import CATEGORIES, MARKS, CategoryReport, Check, DoctorReport, Status

__all__ = [
    "CATEGORIES",
    "CHECKS",
    "DEADLINE_S",
    "MARKS",
    "CategoryReport",
    "Check",
    "DoctorContext",
    "DoctorReport",
    "Status",
    "ToolResult",
    "run_doctor",
    "run_tool",
]
