"""``qrs probe`` end to end through the real entry point: profiles, flags, output, exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from qr_sampler.server import EntropyServer
from qrs_cli.probe.types import EXIT_CODES
from tests.cli.conftest import Outcome, assert_one_line_error
from tests.cli.probe.conftest import FAST, grpc_profile, released_port
from tests.sampler.entropy.grpc_test_support import (
    API_KEY,
    QRNG_CAP,
    QRNG_HEADER,
    QRNG_METHOD,
    QrngServer,
)

Qrs = Callable[..., Outcome]
StartServer = Callable[..., EntropyServer]
STAGE_LINE = re.compile(r"^([✓!✗-]) (\w+)\s+(\S+(?: ms| s)?)\s+(.*)$")


def stage_marks(out: str) -> dict[str, str]:
    marks = {}
    for line in out.splitlines():
        match = STAGE_LINE.match(line)
        if match:
            marks[match.group(2)] = match.group(1)
    return marks


def test_shipped_urandom_profile_passes_against_a_local_server(
        project: Path, qrs: Qrs, start_server: StartServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    port = start_server().address.rpartition(":")[2]
    # The profile names the Compose service (entropy-server:50051); from the host the probe
    # uses the published loopback port, which this variable sets.
    monkeypatch.setenv("QRS_ENTROPY_SERVER_PORT", port)
    outcome = qrs("probe", "urandom", *FAST)
    assert outcome.code == 0, outcome
    assert f"127.0.0.1:{port}" in outcome.err and "Compose network" in outcome.err
    assert stage_marks(outcome.out) == {
        "connect": "✓", "tls": "-", "health": "✓", "reflection": "✓", "auth": "✓",
        "shape": "✓", "streaming": "✓", "limits": "-", "latency": "✓", "randomness": "✓",
        "budget": "✓"}
    assert outcome.out.splitlines()[-1].startswith("passed: 9 ok, 2 skipped;")
    assert "\033[" not in outcome.text  # plain text: NO_COLOR and not a TTY


def test_address_flag_overrides_the_profile(project: Path, qrs: Qrs,
                                            start_server: StartServer) -> None:
    server = start_server()
    outcome = qrs("probe", "urandom", "--address", server.address, "--json", *FAST)
    assert outcome.code == 0, outcome
    report = json.loads(outcome.out)  # stdout is only the JSON; stage lines went to stderr
    assert report["passed"] is True and report["exit_code"] == 0
    assert report["target"]["address"] == server.address
    assert [s["name"] for s in report["stages"]] == [
        "connect", "tls", "health", "reflection", "auth", "shape", "streaming", "limits",
        "latency", "randomness", "budget"]
    assert report["calls"] >= server.requests_served > 0
    assert "✓ latency" in outcome.err


def test_without_a_profile_flags_and_qr_variables_decide(qrs: Qrs, start_server: StartServer,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    server = start_server(max_bytes_per_request=QRNG_CAP)
    monkeypatch.setenv("QR_GRPC_MAX_BYTES_PER_REQUEST", str(QRNG_CAP))
    monkeypatch.setenv("QR_GRPC_MODE", "bidi_streaming")
    outcome = qrs("probe", "--address", server.address, "--json", *FAST)
    assert outcome.code == 0, outcome
    target = json.loads(outcome.out)["target"]
    assert (target["profile"], target["mode"]) == ("", "bidi_streaming")
    assert target["max_bytes_per_request"] == QRNG_CAP


def test_qrng_server_from_another_proto_passes_with_optional_stages_skipped(
        project: Path, qrs: Qrs, qrng_server: QrngServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The shipped firefly-1 profile, its address rewritten in this test's copy to the loopback
    # stand-in (nothing here may reach the real device's address).
    env = project / "deployments" / "firefly-1" / ".env"
    text = env.read_text(encoding="utf-8")
    env.write_text(re.sub(r"(?m)^QR_GRPC_SERVER_ADDRESS=.*$",
                          f"QR_GRPC_SERVER_ADDRESS={qrng_server.address}", text), "utf-8")
    monkeypatch.setenv("QR_GRPC_API_KEY_HEADER", QRNG_HEADER)
    monkeypatch.setenv("QRS_TEST_KEY", API_KEY)
    outcome = qrs("probe", "firefly-1", "--api-key-env", "QRS_TEST_KEY", *FAST)
    assert outcome.code == 0, outcome
    marks = stage_marks(outcome.out)
    assert (marks["health"], marks["reflection"], marks["streaming"]) == ("-", "-", "-")
    assert marks["auth"] == marks["shape"] == marks["latency"] == "✓"
    assert QRNG_METHOD in outcome.text and f"{QRNG_CAP:,}" in outcome.out
    assert API_KEY not in outcome.text


def test_wrong_method_exits_6(project: Path, qrs: Qrs, start_server: StartServer) -> None:
    server = start_server()
    grpc_profile(project, "lab", server.address)
    outcome = qrs("probe", "lab", "--method", "/qr_entropy.EntropyService/Nope", *FAST)
    assert_one_line_error(outcome, 6, "method not implemented: check QR_GRPC_METHOD_PATH")
    assert stage_marks(outcome.out)["shape"] == "✗"


def test_wrong_key_exits_5(project: Path, qrs: Qrs, start_server: StartServer,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    server = start_server(api_key=API_KEY)
    grpc_profile(project, "lab", server.address)
    monkeypatch.setenv("WRONG_KEY", "wrong-key-value-9c1")
    outcome = qrs("probe", "lab", "--api-key-env", "WRONG_KEY", *FAST)
    assert_one_line_error(outcome, 5, "wrong API key")
    assert "wrong-key-value-9c1" not in outcome.text


def test_missing_key_exits_5_and_says_missing(project: Path, qrs: Qrs,
                                              start_server: StartServer) -> None:
    server = start_server(api_key=API_KEY)
    grpc_profile(project, "lab", server.address)
    outcome = qrs("probe", "lab", *FAST)
    assert_one_line_error(outcome, 5, "missing API key")


def test_unreachable_port_exits_3_within_the_connect_timeout(project: Path, qrs: Qrs) -> None:
    grpc_profile(project, "lab", f"127.0.0.1:{released_port()}")
    start = time.monotonic()
    outcome = qrs("probe", "lab", "--connect-timeout", "30")
    # A refused connection ends the probe at once, not at the 30 s timeout; the bound leaves
    # room for a slow machine's interpreter start.
    assert time.monotonic() - start < 15
    assert_one_line_error(outcome, 3, "connection refused")
    assert "0 calls" in outcome.out


def test_randomness_warning_exits_8_only_with_strict(project: Path, qrs: Qrs,
                                                     start_server: StartServer) -> None:
    server = start_server(source=lambda n: b"\x7f" * n)
    grpc_profile(project, "stuck", server.address)
    relaxed = qrs("probe", "stuck", *FAST)
    assert relaxed.code == 0 and stage_marks(relaxed.out)["randomness"] == "!"
    assert "SUSPECT" in relaxed.out
    strict = qrs("probe", "stuck", "--strict", *FAST)
    assert_one_line_error(strict, 8, "randomness warning with --strict")


def test_the_key_appears_in_no_output(project: Path, qrs: Qrs, start_server: StartServer,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    server = start_server(api_key=API_KEY)
    grpc_profile(project, "keyed", server.address,
                 secrets=f"QR_GRPC_API_KEY={API_KEY}\n")  # the key in the profile's secrets.env
    monkeypatch.setenv("QRS_TEST_KEY", API_KEY)
    runs = [
        qrs("probe", "keyed", *FAST),
        qrs("probe", "keyed", "--json", "--limits", *FAST),
        qrs("probe", "keyed", "--api-key-env", "QRS_TEST_KEY", "--header",
            f"x-extra:{API_KEY}", *FAST),
        qrs("probe", "keyed", "--method", "/qr_entropy.EntropyService/Nope", "--json", *FAST),
        qrs("probe", "keyed", "--api-key-env", API_KEY),  # the key passed as a variable name
    ]
    assert [r.code for r in runs] == [0, 0, 0, 6, 2]
    assert json.loads(runs[1].out)["target"]["api_key"] == "****"
    for run in runs:
        assert API_KEY not in run.text, run


@pytest.mark.parametrize(("args", "fragment"), [
    (["nope"], "no profile named 'nope'"),
    (["lab", "--header", "novalue"], "--header must look like name:value"),
    (["lab", "--header", "grpc-timeout:1"], "reserved"),
    (["lab", "--api-key-env", "UNSET_VARIABLE_XYZ"], "is not set or is empty"),
    (["lab", "--mode", "sideways"], "--mode"),
    (["lab", "--mode", "bidi_streaming", "--stream-method", ""], "QR_GRPC_STREAM_METHOD_PATH"),
    (["lab", "--address", "no-port"], "--address"),
    (["lab", "--tls-ca-cert", "/nonexistent/ca.pem"], "QR_GRPC_TLS is off"),
])
def test_usage_errors_exit_2(project: Path, qrs: Qrs, args: list[str], fragment: str) -> None:
    grpc_profile(project, "lab", "127.0.0.1:1")
    assert_one_line_error(qrs("probe", *args), 2, fragment)


def test_help_documents_every_exit_code() -> None:
    proc = subprocess.run([sys.executable, "-m", "qrs_cli", "probe", "--help"],
                          capture_output=True, text=True, timeout=60,
                          env={"NO_COLOR": "1", "TERMINAL_WIDTH": "200", "PATH": "/usr/bin"})
    assert proc.returncode == 0, proc.stderr
    text = re.sub(r"\s+", " ", proc.stdout)
    for code, meaning in EXIT_CODES.items():
        assert f"{code} {meaning}" in text, (code, meaning)


def test_probe_help_imports_no_grpc() -> None:
    code = ("import sys\nfrom qrs_cli.main import main\nmain(['probe', '--help'])\n"
            "print('HEAVY', [m for m in sys.modules if m.split('.')[0] in "
            "('grpc', 'numpy', 'torch', 'jinja2')])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert "HEAVY []" in proc.stdout, proc.stdout + proc.stderr
