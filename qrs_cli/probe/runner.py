"""Runs the stages in order and assembles the :class:`ProbeReport`.

The order, and what each stage needs before it can say anything (otherwise it is skipped and
says why)::

    connect → tls → health → reflection → auth → shape → streaming → limits → latency
      → randomness → budget

- every stage after ``tls`` needs a channel (connect and tls did not fail);
- shape, streaming, limits and latency need auth not to have failed;
- latency needs the method the sampler calls in this mode to work (limits does not: it is most
  useful exactly when the first request was refused for its size);
- randomness needs bytes; budget needs nothing (it is arithmetic on the limits).

A stage that the call budget stops is skipped with the reason. Every text that leaves the runner
is redacted: the API key and header values are replaced by ``****`` even if a server echoed them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from qrs_cli.probe.call_budget import BudgetSpent, CallBudget, shared_ledger
from qrs_cli.probe.capacity import run_budget
from qrs_cli.probe.channel import parse_endpoint
from qrs_cli.probe.context import ProbeContext, StageOutcome
from qrs_cli.probe.latency import run_latency
from qrs_cli.probe.randomness import run_randomness
from qrs_cli.probe.stages_calls import run_auth, run_limits, run_shape, run_streaming
from qrs_cli.probe.stages_network import run_connect, run_health, run_reflection, run_tls
from qrs_cli.probe.types import (
    EXIT_AUTH,
    EXIT_CONNECT,
    EXIT_FAILED,
    EXIT_METHOD,
    EXIT_STREAMING,
    EXIT_TLS,
    MASK,
    ProbeOptions,
    ProbeReport,
    ProbeTarget,
    StageResult,
)


class ProbeObserver(Protocol):
    """Told when a stage starts and ends (the command shows progress and prints results)."""

    def started(self, stage: str) -> None: ...

    def finished(self, result: StageResult) -> None: ...


@dataclass(frozen=True)
class Stage:
    """One step: its function, its exit code on failure, and what it needs to run."""

    name: str
    run: Callable[[ProbeContext], StageOutcome]
    exit_code: int
    needs: Callable[[ProbeContext], str]


def _nothing(_ctx: ProbeContext) -> str:
    return ""


def _failed(ctx: ProbeContext, *names: str) -> str:
    for name in names:
        result = ctx.results.get(name)
        if result is not None and result.status == "fail":
            return name
    return ""


def _needs_channel(ctx: ProbeContext) -> str:
    failed = _failed(ctx, "connect", "tls")
    return f"{failed} failed" if failed else ""


def _needs_auth(ctx: ProbeContext) -> str:
    return _needs_channel(ctx) or ("auth failed" if _failed(ctx, "auth") else "")


def _needs_working_method(ctx: ProbeContext) -> str:
    reason = _needs_auth(ctx)
    if reason:
        return reason
    if not ctx.active_works:
        which = "shape" if ctx.target.mode == "unary" else "streaming"
        return f"the {ctx.target.mode} method did not work ({which})"
    return ""


def _needs_bytes(ctx: ProbeContext) -> str:
    return "" if ctx.sample.replies else "no bytes were received"


STAGES: tuple[Stage, ...] = (
    Stage("connect", run_connect, EXIT_CONNECT, _nothing),
    Stage("tls", run_tls, EXIT_TLS, lambda ctx: "connect failed" if _failed(ctx, "connect")
          else ""),
    Stage("health", run_health, EXIT_FAILED, _needs_channel),
    Stage("reflection", run_reflection, EXIT_METHOD, _needs_channel),
    Stage("auth", run_auth, EXIT_AUTH, _needs_channel),
    Stage("shape", run_shape, EXIT_METHOD, _needs_auth),
    Stage("streaming", run_streaming, EXIT_STREAMING, _needs_auth),
    Stage("limits", run_limits, EXIT_FAILED, _needs_auth),
    Stage("latency", run_latency, EXIT_FAILED, _needs_working_method),
    Stage("randomness", run_randomness, EXIT_FAILED, _needs_bytes),
    Stage("budget", run_budget, EXIT_FAILED, _nothing),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def run_probe(target: ProbeTarget, options: ProbeOptions | None = None, *,
              notes: tuple[str, ...] = (), observer: ProbeObserver | None = None) -> ProbeReport:
    """Probe ``target`` stage by stage; never raises for a misbehaving server (that is a failed
    stage in the report)."""
    options = options or ProbeOptions()
    budget = CallBudget(target.rate_limit_per_min, target.daily_byte_budget,
                        max_calls=options.calls, ledger=shared_ledger(target))
    ctx = ProbeContext(target=target, options=options, endpoint=parse_endpoint(target.address),
                       budget=budget)
    secrets = target.secret_values()
    start = time.perf_counter()
    try:
        for stage in STAGES:
            if observer is not None:
                observer.started(stage.name)
            result = _redacted(_run_stage(ctx, stage), secrets)
            ctx.results[stage.name] = result
            if observer is not None:
                observer.finished(result)
    finally:
        ctx.close()
    return ProbeReport(
        target=target.public_view(),
        stages=tuple(ctx.results[name] for name in STAGE_NAMES),
        calls=ctx.budget.calls,
        bytes_received=ctx.budget.bytes_received,
        duration_s=time.perf_counter() - start,
        strict=options.strict,
        notes=tuple(_scrub(n, secrets) for n in notes),
        budget=_scrub_any(ctx.budget.to_dict(), secrets),
        quota_refused=_scrub(ctx.budget.server_refusal, secrets),
    )


#: Stages that call the server; none runs after it answered RESOURCE_EXHAUSTED.
CALLING_STAGES = frozenset({"health", "reflection", "auth", "shape", "streaming", "limits",
                            "latency"})


def _run_stage(ctx: ProbeContext, stage: Stage) -> StageResult:
    start = time.perf_counter()
    reason = stage.needs(ctx)
    if not reason and stage.name in CALLING_STAGES and ctx.budget.server_refusal:
        reason = "the server answered RESOURCE_EXHAUSTED before this stage (no further calls)"
    if reason:
        return StageResult(stage.name, "skipped", 0.0, f"skipped: {reason}")
    try:
        outcome = stage.run(ctx)
    except BudgetSpent as spent:
        outcome = StageOutcome("skipped", f"stopped by the call budget: {spent.reason}",
                               hint="the probe never exceeds the profile's limits or its --calls; "
                                    "rerun in a minute, or allow more calls (--calls N)")
    exit_code = (outcome.exit_code or stage.exit_code) if outcome.status == "fail" else 0
    return StageResult(stage.name, outcome.status, time.perf_counter() - start, outcome.summary,
                       outcome.details, outcome.hint, exit_code)


def _redacted(result: StageResult, secrets: list[str]) -> StageResult:
    if not secrets:
        return result
    return StageResult(result.name, result.status, result.duration_s,
                       _scrub(result.summary, secrets), _scrub_any(result.details, secrets),
                       _scrub(result.hint, secrets), result.exit_code)


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def _scrub_any(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return _scrub(value, secrets)
    if isinstance(value, dict):
        return {_scrub_any(k, secrets): _scrub_any(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_any(v, secrets) for v in value]
    return value
