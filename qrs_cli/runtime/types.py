"""Value types of the runtime: what a launch will do (:class:`LaunchPlan`) and what runs.

A plan is data before it is action: ``qrs up --dry-run`` prints it, ``--json`` dumps it, and
the launchers execute exactly its steps, so what is shown is what runs. Secret values (the API
key, ``HF_TOKEN``) travel inside a step's environment because the child needs them, but every
rendering (:meth:`Step.shell`, ``to_dict``) masks them.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

RuntimeName = Literal["compose", "native"]
#: What a readiness or status check concluded about one service.
Health = Literal["healthy", "starting", "unhealthy", "stopped", "unknown"]
CheckKind = Literal["http", "grpc-health"]

MASK = "****"
#: Keys whose values are never shown (the sampler's secret keys plus the hub token).
SECRET_KEYS = frozenset({"QR_GRPC_API_KEY", "HF_TOKEN"})


class Reporter(Protocol):
    """Where a long operation says what it is doing (the command renders it on stderr)."""

    def step(self, message: str) -> None:
        """A permanent progress line: a phase began or ended."""

    def waiting(self, message: str) -> None:
        """A transient line while waiting (rewritten in place on a terminal)."""


class SilentReporter:
    """A reporter that says nothing (library callers and tests)."""

    def step(self, message: str) -> None:
        pass

    def waiting(self, message: str) -> None:
        pass


@dataclass(frozen=True)
class Step:
    """One command of a launch.

    ``env`` is set on top of the inherited environment and ``unset`` removed from it (vLLM must
    not see the profile's ``VLLM_PORT``, which it would read as its internal port). ``log`` is
    the file receiving the command's output ('' = the launcher reads it).
    """

    name: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    unset: tuple[str, ...] = ()
    cwd: str = ""
    log: str = ""

    def shown_env(self) -> list[tuple[str, str]]:
        # The profile code's rule (schema secrets, tokens, *_KEY/_SECRET names), not a fixed list:
        # every QR_* key of secrets.env reaches a step's environment.
        from qrs_cli.profiles.secrets_check import is_secret_key

        return [(k, MASK if v and (k in SECRET_KEYS or is_secret_key(k)) else v)
                for k, v in self.env]

    def shell(self) -> str:
        """A shell line that does what this step does (secrets masked), for ``--dry-run``."""
        parts = []
        if self.cwd:
            parts.append(f"cd {shlex.quote(self.cwd)} &&")
        if self.env or self.unset:
            parts.append("env")
            parts += [f"-u {shlex.quote(k)}" for k in self.unset]
            parts += [shlex.quote(f"{k}={v}") for k, v in self.shown_env()]
        parts.append(shlex.join(self.argv))
        if self.log:
            parts.append(f">{shlex.quote(self.log)} 2>&1")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "argv": list(self.argv),
            "env": dict(self.shown_env()),
            "unset": list(self.unset),
            "cwd": self.cwd,
            "log": self.log,
            "shell": self.shell(),
        }


@dataclass(frozen=True)
class ReadinessCheck:
    """How the host tells that a service is ready: vLLM's ``/health`` or gRPC health SERVING."""

    service: str
    kind: CheckKind
    target: str

    def to_dict(self) -> dict[str, str]:
        return {"service": self.service, "kind": self.kind, "target": self.target}


@dataclass(frozen=True)
class PlanFile:
    """A file a launch reads or writes, and its role (compose file, env file, log, state…)."""

    role: str
    path: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "path": self.path}


@dataclass(frozen=True)
class LaunchPlan:
    """Everything ``qrs up`` will do for one profile, decided before anything runs."""

    profile: str
    runtime: RuntimeName
    steps: tuple[Step, ...]
    checks: tuple[ReadinessCheck, ...]
    files: tuple[PlanFile, ...]
    state_dir: str
    endpoint: str = ""
    model: str = ""
    #: Compose project name ('' for native).
    project: str = ""
    #: Services to start ('' = all of the stack).
    services: tuple[str, ...] = ()
    #: Host ports the stack publishes, by service.
    ports: tuple[tuple[str, int], ...] = ()
    diagnostics: str = ""
    notes: tuple[str, ...] = ()
    #: The vLLM flags that come from the profile (parallel keys, QRS_VLLM_ARGS): part of the
    #: native step's argv; for Compose, what deployments/compose.yaml interpolates into vLLM's
    #: command.
    vllm_flags: tuple[str, ...] = ()

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "runtime": self.runtime,
            "project": self.project,
            "services": list(self.services),
            "endpoint": self.endpoint,
            "model": self.model,
            "ports": {name: port for name, port in self.ports},
            "state_dir": self.state_dir,
            "diagnostics": self.diagnostics,
            "steps": [s.to_dict() for s in self.steps],
            "readiness": [c.to_dict() for c in self.checks],
            "files": [f.to_dict() for f in self.files],
            "notes": list(self.notes),
            "vllm_flags": list(self.vllm_flags),
        }


@dataclass(frozen=True)
class ServiceStatus:
    """One service of a running (or half-running) stack, as seen now."""

    name: str
    state: str  # running, exited, created, stopped, …
    health: Health
    pid: int = 0
    container: str = ""
    ports: tuple[int, ...] = ()
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "health": self.health,
            "pid": self.pid or None,
            "container": self.container or None,
            "ports": list(self.ports),
            "detail": self.detail,
        }


@dataclass(frozen=True)
class StackStatus:
    """A profile's stack: what runs, since when, how healthy, where."""

    profile: str
    runtime: RuntimeName
    started_at: float
    endpoint: str
    model: str
    services: tuple[ServiceStatus, ...]
    state_dir: str
    diagnostics: str = ""

    @property
    def running(self) -> bool:
        return any(s.state == "running" for s in self.services)

    @property
    def healthy(self) -> bool:
        return bool(self.services) and all(s.health == "healthy" for s in self.services)

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "runtime": self.runtime,
            "running": self.running,
            "healthy": self.healthy,
            "started_at": _iso(self.started_at),
            "uptime_s": round(max(0.0, time.time() - self.started_at), 1),
            "endpoint": self.endpoint,
            "model": self.model,
            "state_dir": self.state_dir,
            "diagnostics": self.diagnostics,
            "services": [s.to_dict() for s in self.services],
        }


@dataclass(frozen=True)
class UpResult:
    """What ``qrs up`` achieved: the plan it ran, how long it took, whether it was running."""

    plan: LaunchPlan
    duration_s: float
    already_running: bool = False
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.plan.to_dict(),
            "ready": True,
            "already_running": self.already_running,
            "duration_s": round(self.duration_s, 2),
            "notes": [*self.plan.notes, *self.notes],
        }


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(epoch))
