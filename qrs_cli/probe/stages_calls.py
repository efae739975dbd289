"""Stages 5–8: auth, shape, streaming, limits — do entropy calls work as the sampler makes them?

Each stage makes a handful of calls through the caller (so the call budget counts them) and
turns status codes into named findings: a wrong method path is "method not implemented: check
QR_GRPC_METHOD_PATH", a missing key and a wrong key are told apart (UNAUTHENTICATED vs
PERMISSION_DENIED), a capped request size points at QR_GRPC_MAX_BYTES_PER_REQUEST.
"""

from __future__ import annotations

from typing import Any

from qrs_cli.probe.call_budget import BudgetSpent
from qrs_cli.probe.calls import CallOutcome, is_quota_refusal
from qrs_cli.probe.context import (
    ProbeContext,
    StageOutcome,
    chunk_size,
    fail,
    ms,
    ok,
    request_size,
    skipped,
    warn,
)
from qrs_cli.probe.types import (
    EXIT_AUTH,
    EXIT_FAILED,
    EXIT_METHOD,
    EXIT_QUOTA,
    EXIT_STREAMING,
    ProbeTarget,
)

#: Bytes asked for by the auth calls: small, far below any server's cap.
AUTH_PROBE_BYTES = 16
#: A key no server should accept; sent to check that the server compares keys at all.
WRONG_KEY = "qrs-probe-deliberately-wrong-key"
#: Most calls the --limits bisection makes: enough to pin a cap anywhere below 1 MiB exactly.
MAX_LIMIT_CALLS = 20
#: Status codes a server uses to refuse a request size.
_SIZE_REFUSALS = {"INVALID_ARGUMENT", "OUT_OF_RANGE", "FAILED_PRECONDITION"}
_AUTH_CODES = {"UNAUTHENTICATED", "PERMISSION_DENIED"}
_KEY_HINT = ("check QR_GRPC_API_KEY (the profile's secrets.env or the environment), or pass "
             "--api-key-env VAR")


# --- auth ---------------------------------------------------------------------------------

def run_auth(ctx: ProbeContext) -> StageOutcome:
    """No key must be refused, a wrong key refused, the profile's key accepted."""
    t, caller = ctx.target, ctx.caller
    path = t.active_method_path
    bare = caller.exchange(t.mode, path, AUTH_PROBE_BYTES, metadata=t.metadata(with_key=False))
    if bare.code == "UNIMPLEMENTED":
        return skipped("not tested: the method is not implemented (see shape / streaming)")
    header = t.api_key_header
    if not t.has_key:
        details = {"key_configured": False, "without_key": bare.code}
        if bare.ok:
            return ok("no API key configured, and the server serves without one", details)
        if bare.code == "UNAUTHENTICATED":
            return fail("missing API key: the server wants one (UNAUTHENTICATED)", details,
                        _store_key_hint(t), EXIT_AUTH)
        if bare.code == "PERMISSION_DENIED":
            return fail("the server refuses calls without an API key (PERMISSION_DENIED)",
                        details, _store_key_hint(t), EXIT_AUTH)
        return skipped(f"inconclusive: a call without a key got {bare.describe()} "
                       "(see shape)", details)
    wrong_key = WRONG_KEY if t.api_key.get_secret_value() != WRONG_KEY else WRONG_KEY + "-2"
    wrong = caller.exchange(t.mode, path, AUTH_PROBE_BYTES, metadata=t.metadata(key=wrong_key))
    right = caller.exchange(t.mode, path, AUTH_PROBE_BYTES)
    details = {"key_configured": True, "header": header, "without_key": bare.code,
               "wrong_key": wrong.code, "with_key": right.code}
    if right.code == "UNAUTHENTICATED":
        return fail(f"the server did not find the API key the probe sent in the '{header}' "
                    "header (UNAUTHENTICATED)", details,
                    "check QR_GRPC_API_KEY_HEADER: which metadata header does the server read?",
                    EXIT_AUTH)
    if right.code == "PERMISSION_DENIED":
        return fail("wrong API key: the server refused the configured key (PERMISSION_DENIED)",
                    details, _KEY_HINT, EXIT_AUTH)
    if not right.ok:
        return skipped(f"inconclusive: the call with the key got {right.describe()} "
                       "(see shape)", details)
    if bare.ok:
        return warn("the server served a call WITHOUT the API key: it does not enforce auth",
                    details, "if the server should require the key, fix its configuration; "
                             "otherwise QR_GRPC_API_KEY is not needed")
    if wrong.ok:
        return warn("the server accepted a wrong API key: it only checks that one is sent",
                    details, "check the server's key validation")
    return ok(f"key required and accepted (no key → {bare.code}, wrong key → {wrong.code}, "
              "the profile's key → OK)", details)


def _store_key_hint(t: ProbeTarget) -> str:
    """Where the key goes: the profile's secrets file (set-key touches nothing else)."""
    name = t.profile or "PROFILE"
    return (f"store it: `qrs profile set-key {name} --stdin` (or --api-key-env VAR; it goes to "
            "the profile's git-ignored secrets.env and nothing else changes); to try a key "
            "first: qrs probe " + (t.profile + " " if t.profile else "") + "--api-key-env VAR")


def quota_hint(t: ProbeTarget) -> str:
    """What RESOURCE_EXHAUSTED means for this profile — a true hint, whether or not its rate
    limit is set (setting a limit that is already set helps nobody)."""
    if t.rate_limit_per_min:
        return (f"the server's quota is used up although this probe stayed under "
                f"QR_GRPC_RATE_LIMIT_PER_MIN={t.rate_limit_per_min}: another client of the same "
                "key (a running vLLM elsewhere, another host) used it, or the server counts "
                "bytes or a lower limit; wait a minute and probe with fewer calls (--calls N), "
                "and if it persists lower QR_GRPC_RATE_LIMIT_PER_MIN (or "
                "QR_GRPC_DAILY_BYTE_BUDGET) to the server's real limits")
    return ("the server limits calls or bytes, and the profile sets no limit: set "
            "QR_GRPC_RATE_LIMIT_PER_MIN (and QR_GRPC_DAILY_BYTE_BUDGET) to the server's limits "
            "so the probe and the sampler stay under them; wait a minute before probing again")


# --- shape --------------------------------------------------------------------------------

def run_shape(ctx: ProbeContext) -> StageOutcome:
    """One unary call for one request's worth of bytes; the reply must hold exactly that many."""
    t = ctx.target
    n = request_size(t)
    out = ctx.caller.unary(t.method_path, n)
    details: dict[str, Any] = {"method_path": t.method_path, "requested": n,
                               "code": out.code, "latency_ms": round(out.latency_s * 1000, 3)}
    if out.ok:
        ctx.unary_works = True
        return ok(f"asked {n:,} bytes, got {n:,} in {ms(out.latency_s)} ({t.method_path})",
                  details)
    if t.mode == "unary" and _size_verdict(out) == "refused":
        ctx.refused_size = n
    result = _call_failure(ctx, out, n, key="QR_GRPC_METHOD_PATH", path=t.method_path,
                           exit_code=EXIT_METHOD)
    if t.mode != "unary":  # the sampler never calls the unary method in a streaming mode
        return warn(f"{result.summary} (not used in mode {t.mode})", details, result.hint)
    return fail(result.summary, details, result.hint, result.exit_code)


def _call_failure(ctx: ProbeContext, out: CallOutcome, n: int, *, key: str, path: str,
                  exit_code: int) -> StageOutcome:
    """Name what a failed entropy call means, with the setting to look at."""
    if out.code == "UNIMPLEMENTED":
        known = ("; the server has: " + ", ".join(ctx.known_methods)) if ctx.known_methods else ""
        return fail(f"method not implemented: check {key} ({path})",
                    hint=f"use the /package.Service/Method the server's .proto declares{known}",
                    exit_code=exit_code)
    if out.code in _AUTH_CODES:
        return fail(f"the call was refused: {out.describe()}", hint=_KEY_HINT,
                    exit_code=EXIT_AUTH)
    if out.code in _SIZE_REFUSALS:
        return fail(f"the server refused a request of {n:,} bytes ({out.describe()})",
                    hint="it probably caps the bytes per request: set "
                         "QR_GRPC_MAX_BYTES_PER_REQUEST to its cap (`qrs probe PROFILE "
                         "--limits` finds it)", exit_code=exit_code)
    if out.code in ("INTERNAL", "UNKNOWN") and "serializ" in out.details.lower():
        return fail(f"the server could not parse the request ({out.describe()})",
                    hint="its request message must carry the byte count as a varint in field 1 "
                         "(int32, int64, uint32 or uint64)", exit_code=exit_code)
    if out.code == "OK":
        hint = "the reply must carry exactly the bytes asked for, in field 1 (bytes)"
        if "bytes for a request" in out.problem:
            hint = ("a server that returns fewer bytes than asked may cap requests: set "
                    "QR_GRPC_MAX_BYTES_PER_REQUEST (`--limits` finds the cap)")
        return fail(f"wrong reply: {out.problem}", hint=hint, exit_code=exit_code)
    if is_quota_refusal(out.code, out.details):
        return fail(f"the server's rate limit or quota refused the call ({out.describe()})",
                    hint=quota_hint(ctx.target), exit_code=EXIT_QUOTA)
    return fail(f"the call failed: {out.describe()}",
                hint="a slow server needs a larger --rpc-timeout (QR_GRPC_TIMEOUT_MS)"
                if out.code == "DEADLINE_EXCEEDED" else "", exit_code=EXIT_FAILED)


# --- streaming ----------------------------------------------------------------------------

def run_streaming(ctx: ProbeContext) -> StageOutcome:
    """The stream method in the profile's mode (bidi style when the profile uses unary)."""
    t = ctx.target
    if not t.stream_method_path:
        return skipped("no stream method configured (QR_GRPC_STREAM_METHOD_PATH is empty): "
                       "unary only")
    n = request_size(t)
    if t.mode == "server_streaming":
        out = ctx.caller.server_stream(t.stream_method_path, n)
        how = "server-streaming: 1 request"
    else:
        out = ctx.caller.bidi(t.stream_method_path, [n, n, n])
        how = "bidi: 3 requests on one stream, sequence ids echoed"
    details: dict[str, Any] = {"method_path": t.stream_method_path, "mode": t.mode,
                               "code": out.code, "replies": out.replies,
                               "latency_ms": round(out.latency_s * 1000, 3)}
    if out.ok:
        ctx.stream_works = True
        return ok(f"{how}; {n:,} bytes each, {ms(out.latency_s)} ({t.stream_method_path})",
                  details)
    if t.mode != "unary" and _size_verdict(out) == "refused":
        ctx.refused_size = n
    result = _call_failure(ctx, out, n, key="QR_GRPC_STREAM_METHOD_PATH",
                           path=t.stream_method_path, exit_code=EXIT_STREAMING)
    if t.mode == "unary":
        return warn(f"{result.summary} (not used in mode unary)", details, result.hint)
    code = result.exit_code if result.exit_code in (EXIT_AUTH, EXIT_QUOTA) else EXIT_STREAMING
    return fail(result.summary, details, result.hint, code)


# --- limits -------------------------------------------------------------------------------

def run_limits(ctx: ProbeContext) -> StageOutcome:
    """``--limits``: the largest request the server accepts, by bisection in a bounded number
    of calls, compared with QR_GRPC_MAX_BYTES_PER_REQUEST."""
    from qr_sampler.entropy.quantum_grpc import MAX_CHUNK_BYTES

    t = ctx.target
    if not ctx.options.limits:
        return skipped("not run (--limits finds the largest request the server accepts)")
    ceiling = MAX_CHUNK_BYTES  # the sampler never asks for more in one request
    left = ctx.budget.bytes_left()
    if left is not None:  # a bisection draws at most ~2x the largest accepted size
        ceiling = min(ceiling, left // 2)
    lo = request_size(t) if ctx.active_works else 0  # largest size known to be accepted
    hi: int | None = ctx.refused_size  # smallest size known to be refused
    tried: list[dict[str, Any]] = []
    stop = ""

    def attempt(n: int) -> str:
        try:
            out = ctx.caller.exchange(t.mode, t.active_method_path, n)
        except BudgetSpent as spent:
            tried.append({"bytes": n, "code": "CALL_BUDGET", "verdict": "stop",
                          "reason": spent.reason})
            return "stop"
        verdict = _size_verdict(out)
        tried.append({"bytes": n, "code": out.code, "verdict": verdict})
        return verdict

    # The profile's cap first: when it is right, cap accepted + cap+1 refused settles it in
    # two calls; otherwise the sampler's largest chunk, then bisection.
    cap = t.max_bytes_per_request
    candidates = [cap, cap + 1] if cap and cap < ceiling else []
    candidates.append(ceiling)
    for n in candidates:
        if n <= lo or (hi is not None and n >= hi) or len(tried) >= MAX_LIMIT_CALLS:
            continue
        verdict = attempt(n)
        if verdict == "stop":
            stop = tried[-1]["code"]
            break
        lo, hi = (n, hi) if verdict == "accepted" else (lo, n)
    while not stop and hi is not None and hi - lo > 1 and len(tried) < MAX_LIMIT_CALLS:
        mid = (lo + hi) // 2
        verdict = attempt(mid)
        if verdict == "stop":
            stop = tried[-1]["code"]
            break
        lo, hi = (mid, hi) if verdict == "accepted" else (lo, mid)
    return _limits_outcome(ctx, lo, hi, ceiling, tried, stop)


def _size_verdict(out: CallOutcome) -> str:
    if out.ok:
        return "accepted"
    if out.code in _SIZE_REFUSALS or (out.code == "OK" and "bytes for a request" in out.problem):
        return "refused"
    if out.code == "RESOURCE_EXHAUSTED" and "larger than" in out.details.lower():
        return "refused"  # a message over the server's (or channel's) size limit
    return "stop"


def _limits_outcome(ctx: ProbeContext, lo: int, hi: int | None, ceiling: int,
                    tried: list[dict[str, Any]], stop: str) -> StageOutcome:
    t = ctx.target
    cap = t.max_bytes_per_request
    details: dict[str, Any] = {"largest_accepted": lo, "smallest_refused": hi,
                               "configured_cap": cap, "calls": len(tried), "tried": tried}
    if stop:
        so_far = f"largest accepted so far: {lo:,} bytes" if lo else "no size accepted yet"
        if stop == "CALL_BUDGET":
            return warn(f"stopped by the call budget after {_calls(tried)} ({so_far})",
                        details, tried[-1].get("reason", ""))
        return warn(f"stopped after {_calls(tried)}: the server answered {stop} ({so_far})",
                    details,
                    "a rate limit (RESOURCE_EXHAUSTED) or an unreachable server ends the search")
    if hi is None:
        why = ("the probe's byte allowance" if ceiling < (1 << 20)
               else "the sampler's largest chunk")
        return ok(f"no cap up to {lo:,} bytes ({why}); {_calls(tried)}", details)
    exact = hi - lo == 1
    if exact:
        ctx.discovered_cap = lo
        found = f"largest accepted request: {lo:,} bytes ({hi:,} refused); {_calls(tried)}"
    else:
        found = (f"largest accepted request between {lo:,} and {hi - 1:,} bytes; "
                 f"{_calls(tried)}")
    if lo == 0:
        return warn(f"no request size was accepted ({found})", details)
    if cap == 0 and t.sample_count > lo:
        return warn(f"{found}; the profile does not cap requests and asks for "
                    f"{t.sample_count:,} bytes at once", details,
                    f"set QR_GRPC_MAX_BYTES_PER_REQUEST={lo}")
    if cap > lo:
        return warn(f"{found}; QR_GRPC_MAX_BYTES_PER_REQUEST={cap} is more than that", details,
                    f"set QR_GRPC_MAX_BYTES_PER_REQUEST={lo}")
    if exact and cap and lo > cap and chunk_size(t) < t.sample_count:
        return ok(f"{found}; QR_GRPC_MAX_BYTES_PER_REQUEST={cap} could be raised to {lo} for "
                  "fewer calls per token", details)
    return ok(found, details)


def _calls(tried: list[dict[str, Any]]) -> str:
    return f"{len(tried)} call{'s' if len(tried) != 1 else ''}"
