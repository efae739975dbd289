"""The Compose runtime: the real Docker Compose v2 over the base file, the override and env files.

One ``up -d --build --wait`` does the work (build, create, start in dependency order, wait for
the healthchecks); its output is streamed to the progress line and its tail kept for errors.
Afterwards the host checks what a user will use: vLLM's ``/health`` on the published port and,
when co-located, the entropy server's gRPC health on its loopback port.

Known failures get a message of their own, recognised in Compose's output: no NVIDIA runtime
(``could not select device driver "nvidia"``: install the NVIDIA Container Toolkit), no Docker
engine (``Cannot connect to the Docker daemon``), a base image that cannot be pulled. The project
is named ``qrs-<profile>`` (as ``deployments/compose.yaml`` names it), and ``down``, ``ps`` and
``logs`` address it by that name alone, so they work even after the profile's files changed.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from qrs_cli.profiles.compose import (
    ComposeTool,
    compose_env,
    compose_files,
    env_files,
    find_compose,
)
from qrs_cli.profiles.parallel import single_host_problem, vllm_flags
from qrs_cli.runtime import health
from qrs_cli.runtime.errors import LaunchError
from qrs_cli.runtime.native import ENTROPY_SERVICE, VLLM_SERVICE, client_host
from qrs_cli.runtime.state import STATE_FILE, StackState, profile_state_dir
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

GPU_FAILURE = 'could not select device driver "nvidia"'
DAEMON_FAILURE = "Cannot connect to the Docker daemon"
TOOLKIT_URL = ("https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/"
               "install-guide.html")
_PULL_FAILURES = ("pull access denied", "failed to resolve source metadata",
                  "failed to do request", "manifest unknown", "no such host")
_CALL_TIMEOUT_S = 30.0
_TAIL = 15


def compose_tool() -> ComposeTool:
    """The Compose v2 command, or LaunchError saying how to get one."""
    tool = find_compose()
    if tool is None:
        raise LaunchError(
            "Docker Compose v2 was not found",
            "pip install 'qr-sampler[compose]' (ships Compose v2) or install Docker's compose "
            "plugin; without Docker: qrs up PROFILE --native")
    return tool


def project_name(profile: str) -> str:
    return f"qrs-{profile}"


def _scrubbed_env() -> tuple[str, ...]:
    """COMPOSE_* variables would change which files and project Compose uses: unset them."""
    return tuple(sorted(k for k in os.environ if k.startswith("COMPOSE_")))


def plan_compose(target: StackTarget, tool: ComposeTool | None, services: tuple[str, ...],
                 timeout_s: float, build: bool = True) -> LaunchPlan:
    """The ``up`` command and the host-side readiness checks of a Compose launch."""
    layout, stack = target.layout, target.stack
    problem = single_host_problem(stack)
    if problem:
        raise LaunchError(f"profile {target.profile!r}: {problem}",
                          "lower the parallel sizes, or deploy it on Kubernetes with `qrs render "
                          f"k8s {target.profile} --out DIR`")
    project = project_name(target.profile)
    files = compose_files(layout, target.folder,
                          api_key=bool(target.values.get("QR_GRPC_API_KEY")))
    envs = env_files(target.folder)
    # No Compose here (a dry run on a machine without it): show the usual plugin command.
    argv = tool.argv if tool is not None else ("docker", "compose")
    base = [*argv, "-p", project, "--project-directory", str(layout.deployments)]
    for f in files:
        base += ["-f", str(f)]
    for f in envs:
        base += ["--env-file", str(f)]
    up = [*base, "up", "-d", *(["--build"] if build else []), "--wait",
          "--wait-timeout", str(max(1, int(timeout_s))), *services]
    wanted = set(services) if services else {VLLM_SERVICE, ENTROPY_SERVICE}
    checks: list[ReadinessCheck] = []
    ports: list[tuple[str, int]] = []
    if target.co_located and ENTROPY_SERVICE in wanted:
        address = f"127.0.0.1:{stack.entropy_server_port}"
        checks.append(ReadinessCheck(ENTROPY_SERVICE, "grpc-health", address))
        ports.append((ENTROPY_SERVICE, stack.entropy_server_port))
    endpoint = ""
    if VLLM_SERVICE in wanted:
        endpoint = f"http://{client_host(stack.bind_address)}:{stack.vllm_port}"
        checks.append(ReadinessCheck(VLLM_SERVICE, "http", f"{endpoint}/health"))
        ports.append((VLLM_SERVICE, stack.vllm_port))
    folder = profile_state_dir(target.profile)
    plan_files = [PlanFile("compose file", str(f)) for f in files]
    plan_files += [PlanFile("env file", str(f)) for f in envs]
    plan_files += [PlanFile("state", str(folder / STATE_FILE))]
    step = Step("compose up", tuple(up), unset=_scrubbed_env(), cwd=str(layout.deployments))
    notes = () if tool is not None else (
        "Docker Compose v2 was not found: a real launch stops here (pip install "
        "'qr-sampler[compose]', or Docker's compose plugin; without Docker: --native)",)
    return LaunchPlan(
        profile=target.profile, runtime="compose", steps=(step,), checks=tuple(checks),
        files=tuple(plan_files), state_dir=str(folder), endpoint=endpoint,
        model=stack.hf_model if endpoint else "", project=project, services=services,
        ports=tuple(ports), vllm_flags=vllm_flags(stack) if endpoint else (), notes=notes)


def run_up(plan: LaunchPlan, reporter: Reporter, deadline: float) -> None:
    """Run the plan's ``up`` and the host checks; LaunchError with a named cause on failure."""
    step = plan.steps[0]
    reporter.step(f"compose: building and starting project {plan.project} "
                  "(images are built on the first run)")
    lines, code = _stream(step, reporter, deadline)
    if code is None:
        _show(reporter, "last lines of docker compose up:", lines[-_TAIL:])
        _show(reporter, "last lines of the service logs:", service_logs(plan.project, _TAIL))
        raise LaunchError(
            f"docker compose up did not finish within --timeout ({_left(plan, deadline)})",
            f"`qrs logs {plan.profile}` shows the services' output; raise --timeout for slow "
            f"builds or model downloads; `qrs down {plan.profile}` stops what started")
    if code != 0:
        _explain_failure(plan, lines, code, reporter)
    outcome = health.wait_ready(
        plan.checks, deadline,
        on_wait=lambda c, t, d: reporter.waiting(f"{c.service}: waiting for {c.target} "
                                                 f"({t:.0f} s, {d})"))
    if not outcome.ready:
        _show(reporter, "last lines of the service logs:", service_logs(plan.project, _TAIL))
        raise LaunchError(
            f"{outcome.service} is up in Docker but {outcome.reason} from this host",
            f"check the published port and `qrs logs {plan.profile} --service "
            f"{outcome.service}`")


def _left(plan: LaunchPlan, deadline: float) -> str:
    return f"{max(0, int(deadline - time.monotonic()))} s left"


def _stream(step: Step, reporter: Reporter, deadline: float) -> tuple[list[str], int | None]:
    """Run ``step`` until it exits or the deadline passes; (last lines, exit code | None).

    A reader thread collects the output; this thread redraws the progress line once a second
    with Compose's latest line and the elapsed time, so a long image build or model load is
    visibly alive even when Compose itself prints nothing new.
    """
    env = {k: v for k, v in os.environ.items() if k not in step.unset}
    tail: collections.deque[str] = collections.deque(maxlen=200)
    try:
        proc = subprocess.Popen(step.argv, cwd=step.cwd or None, env=env, text=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, errors="replace")
    except OSError as exc:
        raise LaunchError(f"cannot run Compose: {exc.strerror or exc}",
                          "pip install 'qr-sampler[compose]'") from exc

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            if raw.strip():
                tail.append(raw.rstrip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    start = time.monotonic()
    killed = False
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            last = " ".join(tail[-1].split())[:100] if tail else "starting"
            reporter.waiting(f"compose ({time.monotonic() - start:.0f} s): {last}")
            try:
                proc.wait(timeout=max(0.05, min(1.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                continue
    finally:
        if proc.poll() is None:  # the deadline passed, or Ctrl-C
            killed = True
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        reader.join(timeout=5)
    return list(tail), None if killed else proc.returncode


def _explain_failure(plan: LaunchPlan, lines: list[str], code: int, reporter: Reporter) -> None:
    text = "\n".join(lines)
    down = f"`qrs down {plan.profile}` removes what did start"
    if GPU_FAILURE in text:
        detail = next((ln for ln in lines if GPU_FAILURE in ln), GPU_FAILURE)
        raise LaunchError(
            "the vLLM container needs an NVIDIA GPU, but Docker has no NVIDIA runtime "
            f"({detail.removeprefix('Error response from daemon: ').strip()})",
            f"install the NVIDIA Container Toolkit and restart Docker ({TOOLKIT_URL}); on a "
            f"machine without an NVIDIA GPU run `qrs up {plan.profile} --native`; {down}")
    if DAEMON_FAILURE in text:
        detail = next(ln for ln in lines if DAEMON_FAILURE in ln)
        raise LaunchError(
            f"the Docker engine is not reachable: {detail.strip()}",
            "start Docker (e.g. `sudo systemctl start docker`) or point DOCKER_HOST at its "
            f"socket; without Docker: qrs up {plan.profile} --native")
    _show(reporter, "last lines of docker compose up:", lines[-_TAIL:])
    pulled = next((ln for ln in lines if any(p in ln for p in _PULL_FAILURES)), "")
    if pulled:
        raise LaunchError(
            f"an image could not be pulled: {pulled.strip()[:200]}",
            "check network access to the registry, or build from an image that exists locally "
            f"(QRS_VLLM_BASE_IMAGE); {down}")
    _show(reporter, "last lines of the service logs:", service_logs(plan.project, _TAIL))
    last = next((ln for ln in reversed(lines) if "rror" in ln), lines[-1] if lines else "")
    raise LaunchError(
        f"docker compose up failed (exit {code}): {last.strip()[:200]}",
        f"`qrs logs {plan.profile}` shows the services' output; {down}")


def _show(reporter: Reporter, title: str, lines: list[str]) -> None:
    if lines:
        reporter.step(title)
        for line in lines:
            reporter.step(f"  {line}")


def _run(argv: list[str], timeout_s: float = _CALL_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    env = compose_env()
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                              check=False, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise LaunchError(f"{' '.join(argv[-3:])} did not answer within {timeout_s:.0f} s",
                          "is the Docker engine responsive? (`docker info`)") from exc
    except OSError as exc:
        raise LaunchError(f"cannot run Compose: {exc.strerror or exc}",
                          "pip install 'qr-sampler[compose]'") from exc


def _daemon_check(proc: subprocess.CompletedProcess[str]) -> None:
    if DAEMON_FAILURE in proc.stderr:
        raise LaunchError(
            f"the Docker engine is not reachable: {proc.stderr.strip().splitlines()[-1]}",
            "start Docker or point DOCKER_HOST at its socket")


def service_logs(project: str, lines: int, service: str = "") -> list[str]:
    """The last ``lines`` of each service's output ([] when Compose cannot say)."""
    try:
        argv = [*compose_tool().argv, "-p", project, "logs", "--no-color", "--tail", str(lines)]
        proc = _run([*argv, *([service] if service else [])], timeout_s=15)
    except LaunchError:
        return []
    return [ln for ln in proc.stdout.splitlines() if ln.strip()]


#: Lines per service ``save_logs`` keeps when a stack goes down.
SAVED_LOG_LINES = 5000


def save_logs(project: str, folder: Path) -> list[Path]:
    """Write each service's last lines to ``folder/<service>.log`` (before ``down`` removes the
    containers and their logs). Best effort: Compose or the disk failing loses only these
    copies, never stops ``down``."""
    saved: list[Path] = []
    for service in (ENTROPY_SERVICE, VLLM_SERVICE):
        try:
            argv = [*compose_tool().argv, "-p", project, "logs", "--no-color", "--no-log-prefix",
                    "--tail", str(SAVED_LOG_LINES), service]
            proc = _run(argv, timeout_s=30)
        except LaunchError:
            return saved
        if proc.returncode != 0 or not proc.stdout.strip():
            continue
        path = folder / f"{service}.log"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(proc.stdout, encoding="utf-8")
        except OSError:
            continue
        saved.append(path)
    return saved


def logs_argv(project: str, *, tail: int, follow: bool, service: str) -> list[str]:
    """The ``logs`` command the ``qrs logs`` command runs in the foreground."""
    argv = [*compose_tool().argv, "-p", project, "logs", "--tail", str(tail)]
    return argv + (["--follow"] if follow else []) + ([service] if service else [])


def down(project: str) -> list[str]:
    """``down --remove-orphans`` for the project; Compose's output lines."""
    argv = [*compose_tool().argv, "-p", project, "down", "--remove-orphans", "--timeout", "10"]
    proc = _run(argv, timeout_s=120)
    _daemon_check(proc)
    if proc.returncode != 0:
        raise LaunchError(f"docker compose down failed: {_last(proc)}",
                          f"see `docker ps --filter label=com.docker.compose.project={project}`")
    return [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]


def containers(project: str) -> list[dict[str, Any]]:
    """``ps --all --format json`` of the project (one object per line, or one array)."""
    proc = _run([*compose_tool().argv, "-p", project, "ps", "--all", "--format", "json"])
    _daemon_check(proc)
    if proc.returncode != 0:
        raise LaunchError(f"docker compose ps failed: {_last(proc)}", "is Docker running?")
    text = proc.stdout.strip()
    if text.startswith("["):
        return [c for c in json.loads(text) if isinstance(c, dict)]
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


def _last(proc: subprocess.CompletedProcess[str]) -> str:
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit {proc.returncode}"


def status_compose(state: StackState) -> StackStatus:
    """The project's containers with Docker's health, or a host check without a healthcheck."""
    services = []
    for c in containers(state.project):
        name = str(c.get("Service", c.get("Name", "?")))
        running = c.get("State") == "running"
        docker_health = str(c.get("Health") or "")
        check = next((k for k in state.checks if k.service == name), None)
        verdict: Any
        if not running:
            verdict, detail = "stopped", str(c.get("Status", ""))
        elif docker_health in ("healthy", "unhealthy", "starting"):
            verdict, detail = docker_health, str(c.get("Status", ""))
        elif check is not None:
            verdict, detail = health.health_of(check)
        else:
            verdict, detail = "unknown", str(c.get("Status", ""))
        ports = tuple(int(p["PublishedPort"]) for p in c.get("Publishers") or []
                      if p.get("PublishedPort"))
        services.append(ServiceStatus(name, str(c.get("State", "?")), verdict,
                                      container=str(c.get("Name", "")), ports=ports,
                                      detail=detail))
    return StackStatus(state.profile, "compose", state.started_at, state.endpoint, state.model,
                       tuple(services), str(state.state_dir))
