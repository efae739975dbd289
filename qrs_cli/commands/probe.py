"""``qrs probe PROFILE``: is the profile's entropy server usable, and how well?

Thin by design: the options become a :class:`~qrs_cli.probe.TargetOverrides` and a
:class:`~qrs_cli.probe.ProbeOptions`, :func:`~qrs_cli.probe.run_probe` does the work and returns a
report, and this module renders it: one line per stage on stdout as each finishes (human), or
the whole report as JSON (``--json``, with the stage lines on stderr as progress). The probe
library (grpc, numpy) is imported inside the command so ``qrs --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from qrs_cli import output
from qrs_cli.commands.completion import complete_profile
from qrs_cli.errors import CLIError

if TYPE_CHECKING:
    from qrs_cli.probe import ProbeReport, ProbeTarget, StageResult

MARKS = {"ok": "✓", "warn": "!", "fail": "✗", "skipped": "-"}
_COLORS = {"ok": "\033[32m", "warn": "\033[33m", "fail": "\033[31m", "skipped": "\033[2m"}
_RESET = "\033[0m"

# The exit-code table is spelled out here (not imported) so `qrs --help` loads no grpc; a test
# keeps it equal to qrs_cli.probe.types.EXIT_CODES.
_HELP = """Probe the entropy server of PROFILE stage by stage, and say what it can sustain.

Stages: connect, tls, health, reflection, auth, shape, streaming, limits (--limits), latency,
randomness, budget; each shows its mark (ok, ! warning, x failed, - skipped) and its time.

The target comes from the profile (flags > process environment > profile files > defaults);
without PROFILE, from QR_* variables and the flags. The probe counts its calls and never
exceeds the profile's QR_GRPC_RATE_LIMIT_PER_MIN (shared on this host with a running vLLM of
the same server), nor 1 % of QR_GRPC_DAILY_BYTE_BUDGET. With a rate limit it makes at most
10 % of a minute's calls, fewer when fewer are free (--calls N sets the cap); the cap is
printed before the first call. Secrets are never printed.

\b
Exit codes:
  0  all stages passed (warnings and skipped stages allowed)
  1  another stage failed (e.g. health NOT_SERVING, every latency call failed)
  2  usage: bad flag, unknown profile or invalid setting
  3  connect: address does not resolve, refuses, or no gRPC channel comes up
  4  TLS: handshake, certificate or secure channel failed
  5  auth: the API key is missing or wrong
  6  method/shape: method not implemented, wrong message shape or reply length
  7  streaming: the stream fails in the profile's streaming mode
  8  randomness warning, escalated by --strict
  9  quota: the server answered RESOURCE_EXHAUSTED (rate limit or quota used up)
"""


def _opt(flag: str, help_text: str, metavar: str | None = None) -> Any:
    return typer.Option(flag, help=help_text, metavar=metavar, show_default=False)


def probe(
    profile: Annotated[
        str | None,
        typer.Argument(metavar="PROFILE",
                       help="Profile under deployments/ (omit: QR_* variables and flags only).",
                       show_default=False, autocompletion=complete_profile),
    ] = None,
    address: Annotated[str | None, _opt("--address", "Server address (QR_GRPC_SERVER_ADDRESS): "
                                        "host:port, [v6]:port or unix:///path.",
                                        "ADDRESS")] = None,
    method: Annotated[str | None, _opt("--method", "Unary method path "
                                       "(QR_GRPC_METHOD_PATH).", "PATH")] = None,
    stream_method: Annotated[str | None, _opt("--stream-method", "Streaming method path "
                                              "(QR_GRPC_STREAM_METHOD_PATH).", "PATH")] = None,
    mode: Annotated[str | None, _opt("--mode", "How to call the server (QR_GRPC_MODE).",
                                     "[unary|server_streaming|bidi_streaming]")] = None,
    api_key_env: Annotated[str, _opt("--api-key-env", "Read the API key from this environment "
                                     "variable (keys never go on a command line).", "VAR")] = "",
    headers: Annotated[list[str] | None, _opt("--header", "Extra call metadata, name:value "
                                              "(repeatable; values are treated as secrets).",
                                              "NAME:VALUE")] = None,
    tls: Annotated[bool | None, typer.Option("--tls/--no-tls", help="Use TLS (QR_GRPC_TLS).",
                                             show_default=False)] = None,
    tls_ca_cert: Annotated[str | None, _opt("--tls-ca-cert", "PEM CA to trust "
                                            "(QR_GRPC_TLS_CA_CERT).", "FILE")] = None,
    tls_server_name: Annotated[str | None, _opt("--tls-server-name", "Name to verify in the "
                                                "server certificate.", "NAME")] = None,
    tls_client_cert: Annotated[str | None, _opt("--tls-client-cert", "PEM client certificate "
                                                "(mutual TLS).", "FILE")] = None,
    tls_client_key: Annotated[str | None, _opt("--tls-client-key", "PEM client key "
                                               "(mutual TLS).", "FILE")] = None,
    connect_timeout: Annotated[float | None, typer.Option(
        "--connect-timeout", min=0.001, metavar="SECONDS", show_default=False,
        help="Time allowed to resolve, connect and bring the channel up [default: 5].")] = None,
    rpc_timeout: Annotated[float | None, typer.Option(
        "--rpc-timeout", min=0.001, metavar="SECONDS", show_default=False,
        help="Deadline of each call [default: QR_GRPC_TIMEOUT_MS].")] = None,
    max_bytes_per_request: Annotated[int | None, typer.Option(
        "--max-bytes-per-request", min=0, metavar="INTEGER", show_default=False,
        help="Largest request the sampler makes; 0 = no cap "
             "(QR_GRPC_MAX_BYTES_PER_REQUEST).")] = None,
    sample_count: Annotated[int | None, typer.Option(
        "--sample-count", min=1, metavar="INTEGER", show_default=False,
        help="Bytes per token, i.e. per latency fetch (QR_SAMPLE_COUNT).")] = None,
    calls: Annotated[int | None, typer.Option(
        "--calls", min=1, metavar="INTEGER", show_default=False,
        help="Most calls the whole probe makes [default: 10 % of QR_GRPC_RATE_LIMIT_PER_MIN, "
             "at most the calls free this minute; no cap without a rate limit].")] = None,
    limits: Annotated[bool, typer.Option("--limits", help="Find the largest request the server "
                                         "accepts (bisection, at most 20 calls).")] = False,
    total: Annotated[int, typer.Option("--total", min=1, max=10_000, metavar="INTEGER",
                                       help="Latency: most fetches of QR_SAMPLE_COUNT bytes to "
                                            "time (fewer when --calls runs out).")] = 50,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=64, metavar="INTEGER",
                                             help="Latency: fetches in flight.")] = 1,
    strict: Annotated[bool, typer.Option("--strict", help="A randomness warning fails the "
                                         "probe (exit 8).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
    root: Annotated[str | None, typer.Option("--root", envvar="QRS_ROOT", metavar="DIR",
                                             help="Project folder holding deployments/ "
                                                  "(default: found from the working "
                                                  "directory).")] = None,
) -> None:
    """Probe PROFILE's entropy server (the full help text is _HELP)."""
    from qrs_cli.probe import ProbeOptions, TargetOverrides, resolve_target, run_probe
    from qrs_cli.probe.call_budget import call_plan_for

    overrides = TargetOverrides(
        address=address, method=method, stream_method=stream_method, mode=mode,
        api_key_env=api_key_env, headers=tuple(headers or ()), tls=tls, tls_ca_cert=tls_ca_cert,
        tls_server_name=tls_server_name, tls_client_cert=tls_client_cert,
        tls_client_key=tls_client_key, connect_timeout_s=connect_timeout,
        rpc_timeout_s=rpc_timeout, max_bytes_per_request=max_bytes_per_request,
        sample_count=sample_count)
    resolved = resolve_target(profile, overrides, root=root)
    target = resolved.target
    plan = call_plan_for(target, calls)
    what = f"{target.profile}: " if target.profile else ""
    output.info(f"probe: {what}{target.address}, {target.mode} {target.active_method_path}; "
                f"{plan.describe()}")
    for note in resolved.notes:
        output.info(f"note: {note}")
    observer = _JsonProgress() if as_json else _HumanLines()
    report = run_probe(target, ProbeOptions(limits=limits, total=total, concurrency=concurrency,
                                            strict=strict, calls=plan.max_calls),
                       notes=resolved.notes, observer=observer)
    if as_json:
        output.json_data(report.to_dict())
    else:
        output.data(_summary_line(report))
    _raise_for(report)



class _HumanLines:
    """Prints each stage's line on stdout as soon as it finishes (the results are the progress)."""

    def __init__(self) -> None:
        self._color = _use_color(sys.stdout)

    def started(self, stage: str) -> None:
        """Nothing: the line comes when the stage ends."""

    def finished(self, result: StageResult) -> None:
        output.data(stage_line(result, color=self._color))


class _JsonProgress:
    """With --json, stdout holds only the JSON; the stage lines go to stderr as progress."""

    def started(self, stage: str) -> None:
        """Nothing: the line comes when the stage ends."""

    def finished(self, result: StageResult) -> None:
        output.info(stage_line(result, color=False))


def stage_line(result: StageResult, *, color: bool = False) -> str:
    """``✓ connect     7 ms  summary`` plus an indented hint line for warnings and failures."""
    mark = MARKS[result.status]
    if color:
        mark = f"{_COLORS[result.status]}{mark}{_RESET}"
    line = f"{mark} {result.name:<10} {_duration(result.duration_s):>8}  {result.summary}"
    if result.hint and result.status in ("warn", "fail"):
        line += f"\n{'':>22}hint: {result.hint}"
    return line


def _duration(seconds: float) -> str:
    if seconds < 0.001:
        return "-" if seconds == 0 else "<1 ms"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _summary_line(report: ProbeReport) -> str:
    counts = {s: sum(1 for r in report.stages if r.status == s) for s in MARKS}
    shown = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    verdict = "passed" if report.passed else f"FAILED (exit {report.exit_code})"
    return (f"{verdict}: {shown}; {report.calls} calls, {report.bytes_received:,} bytes "
            f"received, {report.duration_s:.2f} s")


def _raise_for(report: ProbeReport) -> None:
    """Turn a failed probe into the CLI's one error line, with the stage's own hint."""
    code = report.exit_code
    if code == 0:
        return
    failed = next((s for s in report.stages if s.status == "fail"), None)
    if failed is not None:
        raise CLIError(f"probe failed at {failed.name}: {failed.summary}",
                       failed.hint or "see the stage lines above", code)
    if report.quota_refused:
        from qrs_cli.probe.stages_calls import quota_hint

        raise CLIError(f"the server answered RESOURCE_EXHAUSTED ({report.quota_refused}); the "
                       "stages after it were cut short", quota_hint(_target_of(report)), code)
    randomness = report.stage("randomness")
    raise CLIError(f"randomness warning with --strict: {randomness.summary}",
                   randomness.hint, code)


def _target_of(report: ProbeReport) -> ProbeTarget:
    """The few target fields the quota hint reads, from the report's public view."""
    from qrs_cli.probe import ProbeTarget

    view = report.target
    return ProbeTarget(address=str(view.get("address", "")), profile=str(view.get("profile", "")),
                       rate_limit_per_min=int(view.get("rate_limit_per_min", 0) or 0),
                       daily_byte_budget=int(view.get("daily_byte_budget", 0) or 0))


def _use_color(stream: object) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def register(app: typer.Typer) -> None:
    app.command("probe", help=_HELP)(probe)
