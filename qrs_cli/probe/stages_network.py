"""Stages 1–4: connect, tls, health, reflection — is there a gRPC server, and what does it say
about itself? Health and reflection are optional services: a server without them skips those
stages, it does not fail them.
"""

from __future__ import annotations

import difflib
import time
from typing import Any

import grpc

from qrs_cli.probe.call_budget import CallBudget
from qrs_cli.probe.channel import CERT_WARN_DAYS, ReachProblem, reach, tls_handshake, wait_ready
from qrs_cli.probe.context import (
    ProbeContext,
    StageOutcome,
    fail,
    ms,
    ok,
    service_of,
    skipped,
    warn,
)
from qrs_cli.probe.types import EXIT_CONNECT, EXIT_METHOD, EXIT_STREAMING, EXIT_TLS

_TLS_HINT = "does the server use TLS? then pass --tls (QR_GRPC_TLS=true) and its CA"


def run_connect(ctx: ProbeContext) -> StageOutcome:
    """The address resolves, a connection opens, and (without TLS) the gRPC channel is READY."""
    target = ctx.target
    start = time.monotonic()
    try:
        reached = reach(ctx.endpoint, target.connect_timeout_s)
    except ReachProblem as problem:
        return fail(problem.message, {"address": target.address}, problem.hint, EXIT_CONNECT)
    details: dict[str, Any] = {
        "address": target.address,
        "resolved": list(reached.resolved),
        "connected_to": reached.connected_to,
        "connect_ms": round(reached.connect_s * 1000, 3),
    }
    what = "unix socket" if ctx.endpoint.kind == "unix" else "TCP"
    if target.tls.enabled:
        return ok(f"{target.address}: {what} connect {ms(reached.connect_s)} (TLS next)", details)
    left = target.connect_timeout_s - (time.monotonic() - start)
    ready_start = time.perf_counter()
    if not wait_ready(ctx.open_channel(), left):
        return fail(f"{what} connects, but no gRPC channel came up within "
                    f"{target.connect_timeout_s:g} s", details,
                    f"{_TLS_HINT}; or is something other than a gRPC server on this port?",
                    EXIT_CONNECT)
    details["channel_ready_ms"] = round((time.perf_counter() - ready_start) * 1000, 3)
    return ok(f"{target.address}: {what} connect {ms(reached.connect_s)}, gRPC channel ready "
              f"in {ms(details['channel_ready_ms'] / 1000)}", details)


def run_tls(ctx: ProbeContext) -> StageOutcome:
    """With TLS: handshake, certificate details, secure channel READY. Without: say what that
    means (a key sent in plaintext over a network is a warning)."""
    target = ctx.target
    if not target.tls.enabled:
        if target.has_key and not ctx.endpoint.is_loopback:
            return warn(f"TLS is off: the API key travels unencrypted to {ctx.endpoint.host}",
                        {"enabled": False},
                        "turn TLS on at the server, then pass --tls (QR_GRPC_TLS=true)")
        return skipped("TLS is off (plaintext channel)", {"enabled": False})
    try:
        details = tls_handshake(ctx.endpoint, target.tls, target.connect_timeout_s)
    except ReachProblem as problem:
        return fail(problem.message, {"enabled": True}, problem.hint, EXIT_TLS)
    details["enabled"] = True
    if not wait_ready(ctx.open_channel(), target.connect_timeout_s):
        return fail("the TLS handshake works, but the gRPC channel did not come up", details,
                    "does the server want a client certificate (--tls-client-cert, "
                    "--tls-client-key)? does it speak HTTP/2 (ALPN h2)?", EXIT_TLS)
    days = details.get("days_left")
    summary = (f"{details['tls_version']}, certificate {details['subject'] or '?'} issued by "
               f"{details['issuer'] or '?'}, valid for {target.tls.server_name or 'the host'}")
    if days is not None and days < CERT_WARN_DAYS:
        return warn(f"{summary}; it expires in {days} days", details,
                    "renew the server certificate before it expires")
    return ok(f"{summary}, {days} days left" if days is not None else summary, details)


def run_health(ctx: ProbeContext) -> StageOutcome:
    """``grpc.health.v1`` for the server ("") and for the entropy service, if it is served."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = ctx.target
    stub = health_pb2_grpc.HealthStub(ctx.open_channel())
    service = service_of(target.active_method_path)
    statuses: dict[str, str] = {}
    for name in ("", service):
        ctx.budget.take(1)
        label = name or "(server)"
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=name),
                               timeout=target.rpc_timeout_s, metadata=target.metadata())
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            if code == grpc.StatusCode.UNIMPLEMENTED:
                return skipped("grpc.health.v1 is not served (optional)")
            statuses[label] = code.name
            continue
        statuses[label] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    details = {"statuses": statuses}
    not_serving = [k for k, v in statuses.items() if v == "NOT_SERVING"]
    if not_serving:
        return fail(f"the server reports NOT_SERVING for {', '.join(not_serving)}", details,
                    "the server is up but says it cannot serve: check its logs and device")
    overall, own = statuses.get("(server)", ""), statuses.get(service, "")
    if overall == "SERVING" and own == "SERVING":
        return ok(f"SERVING (server and {service})", details)
    if overall == "SERVING" and own == "NOT_FOUND":
        return ok(f"SERVING (no health entry of its own for {service})", details)
    shown = ", ".join(f"{k}: {v}" for k, v in statuses.items())
    return warn(f"health check inconclusive: {shown}", details,
                "the health service answers, but not SERVING; later stages show whether "
                "calls work")


# --- reflection ---------------------------------------------------------------------------

#: Field types encoded as a plain varint (sint* use zigzag and would be misread).
_VARINT_TYPES = {"int32", "int64", "uint32", "uint64"}


class _MeteredChannel:
    """Hands grpc's reflection client a channel whose calls are counted by the call budget and
    carry a deadline and the target's metadata (the reflection client sets neither)."""

    def __init__(self, channel: grpc.Channel, budget: CallBudget, timeout_s: float,
                 metadata: tuple[tuple[str, str], ...]) -> None:
        self._channel = channel
        self._budget = budget
        self._timeout_s = timeout_s
        self._metadata = metadata

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        inner = self._channel.stream_stream(method, *args, **kwargs)

        def call(requests: Any, *c_args: Any, **c_kwargs: Any) -> Any:
            self._budget.take(1)
            c_kwargs.setdefault("timeout", self._timeout_s)
            c_kwargs.setdefault("metadata", self._metadata)
            return inner(requests, *c_args, **c_kwargs)

        return call


def run_reflection(ctx: ProbeContext) -> StageOutcome:
    """If reflection is served: the configured methods exist and have the protocol's shape."""
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    target = ctx.target
    metered: Any = _MeteredChannel(ctx.open_channel(), ctx.budget, target.rpc_timeout_s,
                                   target.metadata())
    database = ProtoReflectionDescriptorDatabase(metered)
    try:
        services = [s for s in database.get_services() if not s.startswith("grpc.")]
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return skipped("server reflection is not served (optional)")
        return warn(f"server reflection failed: {code.name}", {},
                    "reflection is optional; later stages test the methods directly")
    pool = DescriptorPool(database)
    checks: list[tuple[str, str, str, bool]] = [
        ("QR_GRPC_METHOD_PATH", target.method_path, "unary", target.mode == "unary")]
    if target.stream_method_path:
        # In unary mode the stream method is not used: any streaming shape will do.
        stream_role: str = target.mode if target.mode != "unary" else "any_stream"
        checks.append(("QR_GRPC_STREAM_METHOD_PATH", target.stream_method_path, stream_role,
                       target.mode != "unary"))
    details: dict[str, Any] = {"services": services, "methods": {}}
    problems: list[tuple[bool, str, int]] = []
    for key, path, role, used in checks:
        missing, problem, described = _check_method(ctx, pool, services, path, role)
        details["methods"][path] = described or missing or problem
        exit_code = EXIT_METHOD if key == "QR_GRPC_METHOD_PATH" else EXIT_STREAMING
        if missing:
            problems.append((used, f"method not implemented: check {key} ({path}): {missing}",
                             exit_code))
        elif problem:
            problems.append((used, f"{key} ({path}): {problem}", exit_code))
    blocking = [p for p in problems if p[0]]
    if blocking:
        return fail(blocking[0][1], details, _methods_hint(ctx), blocking[0][2])
    if problems:
        return warn(f"{problems[0][1]} (not used in mode {target.mode})", details,
                    _methods_hint(ctx))
    return ok("; ".join(str(v) for v in details["methods"].values()), details)


def _check_method(ctx: ProbeContext, pool: Any, services: list[str], path: str,
                  mode: str) -> tuple[str, str, str]:
    """(missing, problem, description): why ``path`` does not exist, or why it does not have the
    protocol's shape for ``mode``, or (when both are '') what it looks like."""
    service, _, method_name = path.strip("/").rpartition("/")
    if service not in services:
        match = difflib.get_close_matches(service, services, n=1, cutoff=0.5)
        maybe = f" (did you mean {match[0]}?)" if match else ""
        return (f"service {service} is not served{maybe}; the server has: "
                f"{', '.join(services) or 'no services'}", "", "")
    try:
        svc = pool.FindServiceByName(service)
    except (KeyError, AssertionError):  # the reflection client asserts on non-NOT_FOUND errors
        return "", f"reflection does not describe service {service}", ""
    names = [m.name for m in svc.methods]
    ctx.known_methods += [f"/{svc.full_name}/{n}" for n in names
                          if f"/{svc.full_name}/{n}" not in ctx.known_methods]
    method = svc.methods_by_name.get(method_name)
    if method is None:
        return f"{service} has no method {method_name}; it has: {', '.join(names)}", "", ""
    request_field = method.input_type.fields_by_number.get(1)
    reply_field = method.output_type.fields_by_number.get(1)
    if request_field is None:
        return "", f"request {method.input_type.name} has no field 1 (the byte count)", ""
    request_type = _type_name(request_field)
    if request_type not in _VARINT_TYPES:
        return "", (f"request field 1 ({request_field.name}) is {request_type}; the protocol "
                    "needs a plain varint count (int32, int64, uint32 or uint64)"), ""
    if reply_field is None:
        return "", f"reply {method.output_type.name} has no field 1 (the bytes)", ""
    reply_type = _type_name(reply_field)
    if reply_type != "bytes":
        return "", f"reply field 1 ({reply_field.name}) is {reply_type}; it must be bytes", ""
    shape = _streaming_problem(method, mode)
    if shape:
        return "", shape, ""
    kind = ("bidi" if method.client_streaming and method.server_streaming
            else "server-streaming" if method.server_streaming else "unary")
    return "", "", (f"{method_name} ({kind}): {method.input_type.name}.{request_field.name} "
                    f"{request_type} → {method.output_type.name}.{reply_field.name} bytes")


def _streaming_problem(method: Any, mode: str) -> str:
    cs, ss = method.client_streaming, method.server_streaming
    if mode == "unary" and (cs or ss):
        return f"{method.name} is a streaming method; QR_GRPC_METHOD_PATH needs a unary one"
    if mode == "bidi_streaming" and not (cs and ss):
        return f"{method.name} is not bidi-streaming, but QR_GRPC_MODE=bidi_streaming"
    if mode == "server_streaming" and not ss:
        return f"{method.name} does not stream replies, but QR_GRPC_MODE=server_streaming"
    if mode == "any_stream" and not ss:
        return f"{method.name} is not a streaming method"
    return ""


def _type_name(field: Any) -> str:
    from google.protobuf.descriptor import FieldDescriptor

    for name in dir(FieldDescriptor):
        if name.startswith("TYPE_") and getattr(FieldDescriptor, name) == field.type:
            return name[len("TYPE_"):].lower()
    return f"type {field.type}"


def _methods_hint(ctx: ProbeContext) -> str:
    if ctx.known_methods:
        return "the server has: " + ", ".join(ctx.known_methods)
    return "set the method paths to /package.Service/Method as the server's .proto declares them"
