"""``qrs up | down | status | logs``: run a profile's stack and keep track of it.

Thin by design: options become a :class:`~qrs_cli.runtime.UpOptions`, the runtime library does
the work and returns data, and this module renders it — results on stdout, progress on stderr
(a live line on a terminal, plain lines otherwise), the same data as JSON with ``--json``. The
runtime library (pydantic, grpc, the profile code) is imported inside the commands so
``qrs --help`` stays fast.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Annotated

import typer

from qrs_cli import output
from qrs_cli.commands.completion import complete_profile
from qrs_cli.errors import EXIT_FAILED, CLIError

if TYPE_CHECKING:
    from qrs_cli.runtime import LaunchPlan, StackStatus, UpResult

RootOption = Annotated[
    str | None,
    typer.Option("--root", envvar="QRS_ROOT", metavar="DIR",
                 help="Project folder holding deployments/ (default: found from the working "
                      "directory)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
ProfileArgument = Annotated[str, typer.Argument(metavar="PROFILE",
                                                help="Profile under deployments/, e.g. urandom.",
                                                autocompletion=complete_profile)]
#: The per-request example every success message shows.
XARGS_EXAMPLE = {"qr_top_k": 20}


class _ConsoleReporter:
    """Progress on stderr: permanent step lines and one transient waiting line."""

    def __init__(self) -> None:
        self._line = output.StatusLine()

    def step(self, message: str) -> None:
        self._line.clear()
        output.info(message)

    def waiting(self, message: str) -> None:
        self._line.update(message)

    def close(self) -> None:
        self._line.clear()


def up(
    profile: ProfileArgument,
    native: Annotated[bool | None, typer.Option(
        "--native/--compose", show_default=False,
        help="Run vLLM (and the co-located entropy server) as local processes, or with Docker "
             "Compose. Default: the profile's QRS_RUNTIME (compose).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the exact commands, environment and files; run nothing.")
    ] = False,
    timeout: Annotated[float, typer.Option(
        "--timeout", metavar="SECONDS",
        help="Deadline for builds, model loading and readiness.")] = 900.0,
    model: Annotated[str, typer.Option(
        "--model", metavar="DIR|ID", show_default=False,
        help="Native only: a Hugging Face model folder or hub id instead of HF_MODEL.")] = "",
    services: Annotated[list[str] | None, typer.Option(
        "--service", metavar="[vllm|entropy-server]", show_default=False,
        help="Compose only: start just this service (repeatable).")
    ] = None,
    vllm_args: Annotated[list[str] | None, typer.Option(
        "--vllm-arg", metavar="ARG", show_default=False,
        help="Native only: one more argument for vLLM (repeatable), e.g. "
             "--vllm-arg=--max-model-len=2048.")] = None,
    skip_probe: Annotated[bool, typer.Option(
        "--skip-probe", help="Do not probe a remote entropy server before launching.")] = False,
    no_build: Annotated[bool, typer.Option(
        "--no-build", help="Compose only: use the existing images, build nothing.")] = False,
    as_json: JsonOption = False,
    root: RootOption = None,
) -> None:
    """Start PROFILE's stack and wait until vLLM (and its entropy server) are ready.

    Validates the profile first (as `qrs profile validate`), checks that the ports are free
    and that a remote entropy server answers, then launches with Docker Compose (base file +
    the profile's override + env files: up --build --wait) or, with --native, as local
    processes (logs and state under ~/.local/state/qrs/PROFILE or $QRS_STATE_DIR). Prints the
    endpoint, the model and a curl command to try it.
    """
    from qrs_cli.runtime import UpOptions, bring_up, plan_up

    options = UpOptions(
        runtime=None if native is None else ("native" if native else "compose"),
        root=root, timeout_s=timeout, model=model, services=tuple(services or ()),
        vllm_args=tuple(vllm_args or ()), skip_probe=skip_probe, build=not no_build)
    if dry_run:
        _target, plan = plan_up(profile, options, require_tools=False)
        if as_json:
            output.json_data({**plan.to_dict(), "dry_run": True})
        else:
            _render_plan(plan)
        return
    reporter = _ConsoleReporter()
    try:
        result = bring_up(profile, options, reporter)
    finally:
        reporter.close()
    if as_json:
        output.json_data({**result.to_dict(), "curl": curl_command(result.plan)})
    else:
        _render_ready(result)


def curl_command(plan: LaunchPlan) -> str:
    """A ready-to-paste completion request with a per-request ``vllm_xargs`` example."""
    if not plan.endpoint:
        return ""
    body = {"model": plan.model, "prompt": "The capital of France is", "max_tokens": 16,
            "vllm_xargs": XARGS_EXAMPLE}
    return (f"curl -s {plan.endpoint}/v1/completions -H 'Content-Type: application/json' "
            f"-d {shlex.quote(json.dumps(body))}")


def _render_plan(plan: LaunchPlan) -> None:
    output.data(f"Plan for {plan.profile} ({plan.runtime} runtime) — dry run, nothing started")
    output.data("Commands:")
    for number, step in enumerate(plan.steps, start=1):
        output.data(f"  {number}. {step.name}")
        output.data(f"     {step.shell()}")
    output.data("Readiness (in order):")
    output.data(_indent(output.table(["SERVICE", "CHECK", "TARGET"],
                                     [[c.service, c.kind, c.target] for c in plan.checks])))
    output.data("Files:")
    output.data(_indent(output.table(["ROLE", "PATH"], [[f.role, f.path] for f in plan.files])))
    if plan.endpoint:
        output.data(f"Endpoint: {plan.endpoint}/v1 (model {plan.model})")
    if plan.vllm_flags:
        where = "in the vLLM command above" if plan.runtime == "native" else (
            "deployments/compose.yaml passes them to vLLM")
        output.data(f"vLLM flags from the profile ({where}): {shlex.join(plan.vllm_flags)}")
    for note in plan.notes:
        output.data(f"Note: {note}")


def _render_ready(result: UpResult) -> None:
    plan = result.plan
    when = "already running" if result.already_running else f"ready in {result.duration_s:.1f} s"
    output.data(f"✓ {plan.profile} is {when} ({plan.runtime})")
    rows = []
    if plan.endpoint:
        rows += [["endpoint", f"{plan.endpoint}/v1"], ["model", plan.model]]
    rows += [[f"{name} port", str(port)] for name, port in plan.ports]
    if plan.diagnostics:
        rows.append(["token records", plan.diagnostics])
    rows += [["logs", f"qrs logs {plan.profile} --follow"], ["status", f"qrs status "
                                                                       f"{plan.profile}"],
             ["stop", f"qrs down {plan.profile}"]]
    width = max(len(key) for key, _value in rows)
    for key, value in rows:
        output.data(f"  {key.ljust(width)}  {value}")
    for note in (*plan.notes, *result.notes):
        output.info(f"note: {note}")
    if plan.endpoint:
        output.data("")
        output.data("Try it (qr_top_k: a per-request sampler setting, via vllm_xargs):")
        output.data(f"  {curl_command(plan)}")


def _indent(text: str, by: str = "  ") -> str:
    return "\n".join(by + line for line in text.splitlines())


def down(profile: ProfileArgument, as_json: JsonOption = False, root: RootOption = None) -> None:
    """Stop PROFILE's stack: every process or container `qrs up` started (Compose's logs are
    kept for `qrs logs`). Exit 0 when it was not running; 2 for an unknown profile."""
    from qrs_cli.runtime import bring_down, require_known_profile

    require_known_profile(profile, root)
    result = bring_down(profile)
    if as_json:
        output.json_data(result.to_dict())
    elif not result.was_running:
        output.data(f"{profile} is not running; nothing to stop")
    else:
        stopped = ", ".join(result.stopped) or "nothing left"
        output.data(f"✓ stopped {profile} ({result.runtime}): {stopped}")


def status(
    profile: Annotated[str | None, typer.Argument(
        metavar="PROFILE", show_default=False, autocompletion=complete_profile,
        help="One profile (default: every stack qrs started).")] = None,
    as_json: JsonOption = False,
    root: RootOption = None,
) -> None:
    """What runs, since when, how healthy, on which ports. Exit 1 if something is down or
    PROFILE is not running; 2 for an unknown profile."""
    from qrs_cli.runtime import require_known_profile, stack_status

    if profile:
        require_known_profile(profile, root)

    stacks = stack_status(profile)
    from qrs_cli.runtime.sampler_metrics import sampler_figures

    figures = [sampler_figures(s) for s in stacks]  # the qr_sampler_* key figures, if served
    if as_json:
        output.json_data({"stacks": [{**s.to_dict(), "sampler": f.to_dict() if f else None}
                                     for s, f in zip(stacks, figures, strict=True)]})
    elif not stacks:
        output.data(f"{profile} is not running" if profile else "no stack started by qrs runs")
    else:
        for stack, found in zip(stacks, figures, strict=True):
            _render_status(stack)
            if found:
                output.data(_indent(f"sampler: {found.summary()}  [{found.url}]"))
    if (profile and not stacks) or any(not s.healthy for s in stacks):
        raise typer.Exit(EXIT_FAILED)


def _render_status(stack: StackStatus) -> None:
    data = stack.to_dict()
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stack.started_at))
    verdict = "healthy" if stack.healthy else ("degraded" if stack.running else "down")
    output.data(f"{stack.profile}  {stack.runtime}  {verdict}  since {since} "
                f"({_duration(data['uptime_s'])})"
                + (f"  {stack.endpoint}/v1  model {stack.model}" if stack.endpoint else ""))
    rows = [[s.name, s.state, s.health, str(s.pid or s.container or "-"),
             ",".join(map(str, s.ports)) or "-", s.detail] for s in stack.services]
    output.data(_indent(output.table(["SERVICE", "STATE", "HEALTH", "PID/CONTAINER", "PORTS",
                                      "DETAIL"], rows)))


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def logs(
    profile: ProfileArgument,
    follow: Annotated[bool, typer.Option("--follow", "-f",
                                         help="Keep printing new lines until the stack stops "
                                              "(or Ctrl-C).")] = False,
    service: Annotated[str, typer.Option("--service", metavar="[vllm|entropy-server]",
                                         show_default=False, help="Only this service.")
                       ] = "",
    tail: Annotated[int, typer.Option("--tail", min=0, metavar="INTEGER",
                                      help="Lines to show from the end of each log.")] = 50,
    root: RootOption = None,
) -> None:
    """Show PROFILE's logs: the native runtime's log files, or Compose's service logs.

    After the stack stopped or crashed, the logs of its last run (Compose's are saved by
    `qrs down`). Exit 2 for an unknown profile, 1 when there are no logs yet.
    """
    from qrs_cli.runtime import log_source, require_known_profile
    from qrs_cli.runtime.logs import follow as follow_files
    from qrs_cli.runtime.logs import tail_lines

    require_known_profile(profile, root)
    source = log_source(profile, service=service, tail=tail, follow=follow)
    if source.stopped:
        output.info(f"note: {profile} is not running; these are the logs of its last run")
    try:
        if source.argv:
            from qrs_cli.profiles.compose import compose_env

            try:
                code = subprocess.run(list(source.argv), check=False, env=compose_env()).returncode
            except OSError as exc:
                raise CLIError(f"cannot run {source.argv[0]}: {exc.strerror or exc}",
                               "install Compose v2: pip install 'qr-sampler[compose]'",
                               exit_code=EXIT_FAILED) from None
            if code:
                raise typer.Exit(code)
            return
        prefix = len(source.files) > 1

        def emit(name: str, line: str) -> None:
            output.data(f"{name} | {line}" if prefix else line)
            if follow:
                sys.stdout.flush()  # followers pipe into grep & co.: no block buffering

        for name, path in source.files:
            for line in tail_lines(path, tail):
                emit(name, line)
        if follow:
            follow_files(source.files, emit, alive=source.alive)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("down")(down)
    app.command("status")(status)
    app.command("logs")(logs)
