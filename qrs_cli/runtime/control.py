"""``up``, ``down``, ``status`` and ``logs`` as library functions that return data.

``bring_up`` is the pipeline of DESIGN.md: validate → plan → preflight (a running stack, free
ports, a quick probe of a remote entropy server) → launch (compose or native) → readiness →
state. ``plan_up`` stops after the plan, for ``--dry-run``: it starts nothing, probes nothing
and writes nothing.

Re-running ``up`` on a healthy native stack reports it as already running (so scripts such as
``scripts/quickstart.sh`` are idempotent); a stack that is only partly alive must be brought
down first. Compose reconciles a running project itself, so ``up`` simply runs again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qrs_cli.errors import EXIT_USAGE
from qrs_cli.profiles import compose as profile_compose
from qrs_cli.runtime import compose, native, processes
from qrs_cli.runtime.engine import (
    choose_model,
    engine_info,
    ensure_embedded_model,
    require_engine,
)
from qrs_cli.runtime.errors import EXIT_INTERRUPTED, LaunchError
from qrs_cli.runtime.preflight import check_ports, quick_probe
from qrs_cli.runtime.state import (
    StackState,
    known_profiles,
    read_state,
    remove_state,
    write_state,
)
from qrs_cli.runtime.target import StackTarget, resolve_target
from qrs_cli.runtime.types import (
    LaunchPlan,
    Reporter,
    RuntimeName,
    ServiceStatus,
    StackStatus,
    UpResult,
)

DEFAULT_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class UpOptions:
    """What the command line says about a launch."""

    runtime: RuntimeName | None = None
    root: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    model: str = ""
    services: tuple[str, ...] = ()
    vllm_args: tuple[str, ...] = ()
    skip_probe: bool = False
    build: bool = True


def plan_up(profile: str, options: UpOptions, *,
            require_tools: bool = True) -> tuple[StackTarget, LaunchPlan]:
    """Validate the profile and decide every command; runs nothing.

    ``require_tools=False`` (``--dry-run``) plans even when Compose is missing, with a note
    saying a real launch would stop there.
    """
    if options.timeout_s <= 0:
        raise LaunchError("--timeout must be > 0 seconds", "e.g. --timeout 600", EXIT_USAGE)
    target = resolve_target(profile, root=options.root, runtime=options.runtime)
    if target.runtime == "native":
        if options.services:
            raise LaunchError("--service applies to the Compose runtime only",
                              "the native runtime always starts the whole stack", EXIT_USAGE)
        info = engine_info()
        plan = native.plan_native(target, choose_model(target.stack.hf_model, options.model),
                                  info, options.vllm_args)
        if not info.installed:
            plan = _with_note(plan, f"vLLM is not installed for {info.python}: a real launch "
                                    "stops here (see `qrs doctor`)")
        return target, plan
    if options.model or options.vllm_args:
        raise LaunchError("--model and --vllm-arg apply to the native runtime only",
                          "for Compose, set HF_MODEL in the profile's .env; or add --native",
                          EXIT_USAGE)
    unknown = [s for s in options.services if s not in (native.VLLM_SERVICE,
                                                        native.ENTROPY_SERVICE)]
    if unknown or (native.ENTROPY_SERVICE in options.services and not target.co_located):
        raise LaunchError(f"--service {(unknown or [native.ENTROPY_SERVICE])[0]} is not a "
                          f"service of profile {profile!r}",
                          "services: vllm" + (", entropy-server" if target.co_located else ""),
                          EXIT_USAGE)
    tool = compose.compose_tool() if require_tools else profile_compose.find_compose()
    plan = compose.plan_compose(target, tool, options.services, options.timeout_s,
                                options.build)
    return target, plan


def _with_note(plan: LaunchPlan, note: str) -> LaunchPlan:
    from dataclasses import replace

    return replace(plan, notes=(*plan.notes, note))


def bring_up(profile: str, options: UpOptions, reporter: Reporter) -> UpResult:
    """Launch ``profile`` and wait until it is ready (see the module docstring)."""
    try:
        return _bring_up(profile, options, reporter)
    except KeyboardInterrupt:
        raise LaunchError("interrupted", f"`qrs status {profile}` shows what runs; `qrs down "
                                         f"{profile}` stops it", EXIT_INTERRUPTED) from None


def _bring_up(profile: str, options: UpOptions, reporter: Reporter) -> UpResult:
    started = time.monotonic()
    deadline = started + options.timeout_s
    target, plan = plan_up(profile, options)
    for finding in target.warnings:
        reporter.step(f"profile warning: {finding.message}")
    existing = read_state(profile)
    if existing is not None and _already_up(existing, plan):
        return UpResult(plan, time.monotonic() - started, already_running=True)
    if existing is None or existing.runtime == "native":
        check_ports(_ports(plan, target))
    if target.remote_entropy and not options.skip_probe:
        reporter.step(f"entropy: quick probe of {target.entropy_address}")
        reporter.step(f"entropy: {quick_probe(target)}")
    root = str(target.layout.root)
    if plan.runtime == "native":
        info = engine_info(plan.steps[-1].argv[0])
        require_engine(info)
        ensure_embedded_model(choose_model(target.stack.hf_model, options.model), reporter.step)
        reporter.step(f"native: {info.flavour} {info.version} serving {plan.model}; logs in "
                      f"{plan.state_dir}")
        native.start_native(plan, root, reporter, deadline)
    else:
        write_state(StackState(profile=profile, runtime="compose", started_at=time.time(),
                               project_root=root, endpoint=plan.endpoint, model=plan.model,
                               project=plan.project, services=plan.services, ports=plan.ports,
                               checks=plan.checks))
        try:
            compose.run_up(plan, reporter, deadline)
        except LaunchError as exc:
            if compose.DAEMON_FAILURE in exc.message:
                remove_state(profile)  # nothing could start
            raise
    return UpResult(plan, time.monotonic() - started)


def _already_up(state: StackState, plan: LaunchPlan) -> bool:
    """True when the same native stack runs healthy; LaunchError when it runs otherwise."""
    alive = [p for p in state.processes if processes.is_running(p)]
    if state.runtime == "compose":
        if plan.runtime == "native":
            raise LaunchError(f"profile {state.profile!r} was started with Docker Compose",
                              f"`qrs down {state.profile}` first, then `qrs up --native`")
        return False  # Compose reconciles the running project itself
    if not alive:
        remove_state(state.profile)  # left by a crash or a reboot
        return False
    if plan.runtime == "compose":
        raise LaunchError(f"profile {state.profile!r} runs natively (pids "
                          f"{', '.join(str(p.pid) for p in alive)})",
                          f"`qrs down {state.profile}` first")
    status = native.status_native(state)
    if status.healthy and len(alive) == len(plan.steps):
        return True
    raise LaunchError(f"profile {state.profile!r} is only partly running",
                      f"`qrs down {state.profile}`, then `qrs up {state.profile} --native`")


def _ports(plan: LaunchPlan, target: StackTarget) -> dict[str, tuple[str, int, str]]:
    hosts = {native.VLLM_SERVICE: (target.stack.bind_address, "VLLM_PORT"),
             native.ENTROPY_SERVICE: ("127.0.0.1", "QRS_ENTROPY_SERVER_PORT")}
    return {name: (hosts[name][0], port, hosts[name][1]) for name, port in plan.ports}


@dataclass(frozen=True)
class DownResult:
    """What ``qrs down`` stopped."""

    profile: str
    runtime: RuntimeName | None
    stopped: tuple[str, ...] = ()
    details: tuple[str, ...] = field(default=())

    @property
    def was_running(self) -> bool:
        return self.runtime is not None

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "runtime": self.runtime, "was_running": self.was_running,
                "stopped": list(self.stopped), "details": list(self.details)}


def bring_down(profile: str, grace_s: float = native.STOP_GRACE_S) -> DownResult:
    """Stop everything ``up`` started for ``profile`` (nothing to do is not an error)."""
    state = read_state(profile)
    if state is None:
        return DownResult(profile, None)
    if state.runtime == "native":
        stopped = tuple(f"{p.service} (pid {p.pid})" for p in state.processes)
        leftovers = native.stop_native(state, grace_s)
        if leftovers:
            pids = ", ".join(f"{pid} ({service})" for service, pid in leftovers)
            raise LaunchError(f"processes still running after SIGKILL: {pids}",
                              "they may belong to another user; check with `ps -o pid,user,cmd`")
        return DownResult(profile, "native", stopped)
    # Compose deletes the containers' logs with the containers: keep the last lines beside
    # the state, where `qrs logs` finds them after the stack is gone.
    compose.save_logs(state.project, state.state_dir)
    lines = compose.down(state.project)
    remove_state(profile)
    removed = tuple(ln.split()[1] for ln in lines
                    if ln.startswith("Container") and ln.endswith("Removed"))
    return DownResult(profile, "compose", removed, tuple(lines))


def stack_status(profile: str | None = None) -> list[StackStatus]:
    """The stacks ``up`` started (all, or ``profile``'s); [] when none is recorded."""
    names = [profile] if profile else known_profiles()
    found = []
    for name in names:
        state = read_state(name)
        if state is None:
            continue
        if state.runtime == "native":
            found.append(native.status_native(state))
            continue
        try:
            found.append(compose.status_compose(state))
        except LaunchError as exc:
            found.append(StackStatus(name, "compose", state.started_at, state.endpoint,
                                     state.model, (ServiceStatus("docker", "unknown", "unknown",
                                                                 detail=exc.message),),
                                     str(state.state_dir)))
    return found


@dataclass(frozen=True)
class LogSource:
    """Where ``qrs logs`` reads: the native runtime's files, Compose's ``logs`` command, or —
    once the stack is gone (``state`` None) — the log files its last run left behind."""

    state: StackState | None
    files: tuple[tuple[str, Path], ...] = ()
    argv: tuple[str, ...] = ()

    @property
    def stopped(self) -> bool:
        """The stack no longer runs: these are the logs of its last run."""
        return self.state is None

    def alive(self) -> bool:
        if self.state is None:
            return False
        return any(processes.is_running(p) for p in self.state.processes)


#: Log files a stack leaves in its state folder (native runs write them; ``qrs down`` saves
#: Compose's there), in the order they are shown.
LOG_SERVICES = (native.ENTROPY_SERVICE, native.VLLM_SERVICE)


def log_source(profile: str, *, service: str = "", tail: int = 50,
               follow: bool = False) -> LogSource:
    """The logs of ``profile``'s stack, for one service or all; LaunchError if none."""
    state = read_state(profile)
    if state is None:
        return _last_run_logs(profile, service)
    if state.runtime == "compose":
        if service and service not in (native.VLLM_SERVICE, native.ENTROPY_SERVICE):
            raise LaunchError(f"--service {service} is not a service of the stack",
                              "services: vllm, entropy-server", EXIT_USAGE)
        return LogSource(state, argv=tuple(compose.logs_argv(state.project, tail=tail,
                                                             follow=follow, service=service)))
    files = tuple((p.service, Path(p.log)) for p in state.processes)
    if service:
        files = tuple(f for f in files if f[0] == service)
        if not files:
            names = ", ".join(p.service for p in state.processes)
            raise LaunchError(f"--service {service} is not a service of this stack",
                              f"services: {names}", EXIT_USAGE)
    return LogSource(state, files=files)


def require_known_profile(profile: str, root: str | None = None) -> None:
    """LaunchError (exit 2, with a did-you-mean) unless ``profile`` is a profile of the project
    or a stack ``qrs up`` started: ``status``, ``down`` and ``logs`` of a misspelt name must not
    answer "not running" (or "nothing to stop") as if the name were right."""
    import difflib

    from qrs_cli.profiles.discovery import find_project, profile_names
    from qrs_cli.profiles.errors import ProfileError
    from qrs_cli.runtime.state import profile_state_dir, state_root

    profile_state_dir(profile)  # a path-like name is a usage error of its own
    known = set(known_profiles())
    root_dir = state_root()
    if root_dir.is_dir():
        known |= {p.name for p in root_dir.iterdir()
                  if any((p / f"{name}.log").is_file() for name in LOG_SERVICES)}
    where = "not a stack qrs started, and no project here to look in"
    try:
        layout = find_project(root)
    except ProfileError:
        layout = None
    if layout is not None:
        known |= set(profile_names(layout, include_templates=True))
        where = f"not in {layout.deployments}/ and not a stack qrs started"
    if profile in known:
        return
    match = difflib.get_close_matches(profile, sorted(known), n=1, cutoff=0.6)
    maybe = f" (did you mean {match[0]}?)" if match else ""
    raise LaunchError(f"unknown profile {profile!r}: {where}{maybe}",
                      "`qrs profile list` shows the profiles here, `qrs status` every stack qrs "
                      "started; outside the project pass --root DIR", EXIT_USAGE)


def _last_run_logs(profile: str, service: str) -> LogSource:
    """The log files a stopped or crashed stack left; LaunchError when there are none."""
    from qrs_cli.runtime.state import profile_state_dir

    folder = profile_state_dir(profile)
    if service and service not in LOG_SERVICES:
        raise LaunchError(f"--service {service} is not a service of a qrs stack",
                          f"services: {', '.join(LOG_SERVICES)}", EXIT_USAGE)
    wanted = (service,) if service else LOG_SERVICES
    files = tuple((name, folder / f"{name}.log") for name in wanted
                  if (folder / f"{name}.log").is_file())
    if not files:
        raise LaunchError(f"profile {profile!r} is not running and left no logs in {folder}",
                          f"start it with `qrs up {profile}`; its logs then stay there after "
                          "it stops")
    return LogSource(None, files=files)
