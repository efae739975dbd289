"""Checks before a launch: the ports are free, and a remote entropy server answers.

A taken port is the most common reason a stack "starts" and then is not reachable; it is found
by binding the port the way the service will (same address, no ``SO_REUSEADDR``, which Linux
would let succeed over a TIME_WAIT socket but not over a listener).

The quick probe runs three stages of ``qrs probe`` — connect, tls, shape — against the entropy
server the profile names when this launch does not start it: one entropy call of one request's
size, counted by the probe's call budget, so the profile's rate limit and daily budget hold.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Mapping

from qrs_cli.runtime.errors import LaunchError
from qrs_cli.runtime.target import StackTarget

#: The stages of the quick probe, in order.
QUICK_STAGES = ("connect", "tls", "shape")
QUICK_CONNECT_TIMEOUT_S = 3.0


def port_problem(host: str, port: int) -> str:
    """Why ``host:port`` cannot be listened on ('' when it can)."""
    if not 1 <= port <= 65535:
        return "not a port number (1–65535)"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except (OverflowError, ValueError) as exc:  # e.g. a malformed host
            return str(exc)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "in use"
            if exc.errno == errno.EACCES:
                return "needs privileges (ports below 1024)"
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"{host} is not an address of this machine"
            return exc.strerror or str(exc)
    return ""


def check_ports(ports: Mapping[str, tuple[str, int, str]]) -> None:
    """``ports``: service → (host, port, the key that sets it). LaunchError on the first taken."""
    for service, (host, port, key) in ports.items():
        problem = port_problem(host, port)
        if problem:
            raise LaunchError(
                f"port {port} on {host} for {service} is {problem}",
                f"stop what listens there (e.g. `ss -ltnp 'sport = :{port}'`), or choose another "
                f"port: {key}=<port> in the profile's .env or the environment",
            )


def quick_probe(target: StackTarget) -> str:
    """Probe the profile's remote entropy server; return a one-line summary.

    Raises LaunchError (exit 1) naming the failed stage and its hint.
    """
    from qrs_cli.probe import TargetOverrides
    from qrs_cli.probe import resolve_target as probe_target
    from qrs_cli.probe.call_budget import BudgetSpent, CallBudget, shared_ledger
    from qrs_cli.probe.channel import parse_endpoint
    from qrs_cli.probe.context import ProbeContext
    from qrs_cli.probe.runner import STAGES
    from qrs_cli.probe.types import ProbeOptions

    resolved = probe_target(
        target.profile,
        TargetOverrides(connect_timeout_s=QUICK_CONNECT_TIMEOUT_S),
        root=str(target.layout.root),
        environ=target.sources.environ,
    )
    t = resolved.target
    ctx = ProbeContext(target=t, options=ProbeOptions(), endpoint=parse_endpoint(t.address),
                       budget=CallBudget(t.rate_limit_per_min, t.daily_byte_budget,
                                         ledger=shared_ledger(t)))
    secrets = t.secret_values()
    summaries = []
    try:
        for stage in (s for s in STAGES if s.name in QUICK_STAGES):
            if stage.needs(ctx):
                continue
            try:
                outcome = stage.run(ctx)
            except BudgetSpent:
                continue  # the profile's limits forbid another call now: launch unprobed
            if outcome.status == "fail":
                raise LaunchError(
                    _scrub(f"entropy server {t.address} failed the quick probe ({stage.name}): "
                           f"{outcome.summary}", secrets),
                    _scrub(outcome.hint or f"run `qrs probe {target.profile}` for details",
                           secrets) + "; --skip-probe launches anyway",
                )
            if outcome.status == "ok":
                summaries.append(outcome.summary)
    finally:
        ctx.close()
    return _scrub(summaries[-1] if summaries else f"{t.address} reachable", secrets)


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "****")
    return text
