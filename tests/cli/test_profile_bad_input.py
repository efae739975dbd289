"""Bad input to ``qrs profile``: each case is one ``Error:`` line with a hint, the right exit code
and no traceback. ``new`` refuses before writing anything (exit 2); ``validate`` reports the
problem as a finding on its ``file:line`` (exit 1)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.conftest import Outcome, assert_one_line_error, write_profile

NEW_CASES = [
    # (arguments after `profile new`, fragment of the error line)
    (["../x"], "is a path"),
    (["/abs/x"], "is a path"),
    ([""], "name is empty"),
    (["a b"], "contains spaces"),
    (["Foo"], "capital letters"),
    (["_tpl"], "marks templates"),
    ([".hidden"], "hides the folder"),
    (["ok!"], "may contain only"),
    (["urandom"], "already exists"),
    (["p", "--source", "quantum_grpc", "--address", "bad addr"], "must not contain spaces"),
    (["p", "--source", "quantum_grpc", "--address", "hostonly"], "must be host:port"),
    (["p", "--source", "quantum_grpc", "--address", "host:99999"], "port must be a number"),
    (["p", "--source", "quantum_grpc", "--address", "::1:50051"], "wrap an IPv6 address"),
    (["p", "--source", "quantum_grpc", "--address", "unix:"], "needs a socket path"),
    (["p", "--source", "quantum_grpc", "--method-path", "nope"], "/package.Service/Method"),
    (["p", "--source", "quantum_grpc", "--method-path", "/pkg.Svc/"], "/package.Service/Method"),
    (["p", "--source", "quantum_grpc", "--stream-method-path", "x/y"], "or be empty"),
    (["p", "--source", "quantum_grpc", "--mode", "sideways"], "QR_GRPC_MODE=sideways"),
    (["p", "--source", "quantm_grpc"], "did you mean quantum_grpc?"),
    (["p", "--sample-count", "-3"], "greater than or equal to 1"),
    (["p", "--sample-count", "abc"], "valid integer"),
    (["p", "--sample-count", "99999999"], "less than or equal to 10000000"),
    (["p", "--source", "quantum_grpc", "--max-bytes-per-request", "-1"], "greater than or equal"),
    (["p", "--source", "quantum_grpc", "--rate-limit-per-min", "1.5"], "valid integer"),
    (["p", "--source", "quantum_grpc", "--daily-byte-budget", "500MB"], "valid integer"),
    (["p", "--port", "99999"], "VLLM_PORT=99999"),
    (["p", "--port", "http"], "VLLM_PORT=http"),
    (["p", "--model", "a b"], "HF_MODEL=a b"),
    (["p", "--entropy-server", "--entropy-server-port", "0"], "QRS_ENTROPY_SERVER_PORT=0"),
    (["p", "--source", "quantum_grpc", "--api-key-header", "Api-Key"], "lowercase header"),
    (["p", "--source", "quantum_grpc", "--api-key-header", "grpc-key"], "reserved by gRPC"),
    (
        ["p", "--source", "quantum_grpc", "--mode", "bidi_streaming", "--stream-method-path", ""],
        "a streaming mode needs QR_GRPC_STREAM_METHOD_PATH",
    ),
    (["p", "--set", "QR_TOPK=3"], "did you mean QR_TOP_K?"),
    (["p", "--set", "novalue"], "is not KEY=VALUE"),
    (["p", "--set", "QR_TOP_P=2"], "QR_TOP_P=2"),
    (["p", "--set", "QR_EDT_MIN_TEMP=3", "--set", "QR_EDT_MAX_TEMP=1"], "QR_EDT_MAX_TEMP"),
    (["p", "--set", "QR_GRPC_API_KEY=zzz"], "is a secret"),
    (["p", "--set", "HF_TOKEN=hf_zzz"], "is a secret"),
    (["p", "--source", "quantum_grpc", "--api-key-env", "QRS_TEST_UNSET"], "is not set"),
    (["p", "--source", "quantum_grpc", "--api-key-env", "sk-not-a-name"], "NAME of an"),
    (["p", "--from", "nosuch"], "no profile named 'nosuch'"),
    (["p", "--from", "urandm"], "did you mean urandom?"),
]


@pytest.mark.parametrize(("args", "fragment"), NEW_CASES)
def test_new_rejects_bad_input_without_writing(
    project: Path, qrs: Callable[..., Outcome], args: list[str], fragment: str
) -> None:
    before = sorted(p.name for p in (project / "deployments").iterdir())
    outcome = qrs("profile", "new", *args)
    assert_one_line_error(outcome, 2, fragment)
    assert sorted(p.name for p in (project / "deployments").iterdir()) == before


def test_api_key_for_a_source_without_one_is_refused(
    project: Path, qrs: Callable[..., Outcome], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QRS_TEST_KEY", "abcdefgh12345")
    outcome = qrs("profile", "new", "p", "--api-key-env", "QRS_TEST_KEY")
    assert_one_line_error(outcome, 2, "only applies to QR_ENTROPY_SOURCE_TYPE=quantum_grpc")


VALIDATE_CASES = [
    # (.env text after QRS_PROFILE, other files, fragment of the finding, line in .env or 0)
    ("JUSTTEXT\n", {}, "expected KEY=value", 2),
    ("1BAD=3\n", {}, "is not a valid variable name", 2),
    ("QR_GRPC_METHOD_PATH='/a.B/C\n", {}, "missing closing ' quote", 2),
    ('QR_TOP_K="5" trailing\n', {}, "unexpected text after the closing quote", 2),
    ("QR_TOPK=5\n", {}, "did you mean QR_TOP_K?", 2),
    ("QR_TOP_K=abc\n", {}, "QR_TOP_K=abc: Input should be a valid integer", 2),
    ("QR_TOP_P=1.5\n", {}, "QR_TOP_P=1.5", 2),
    ("QR_MOCK_BIAS=0.9\n", {}, "QR_MOCK_BIAS=0.9", 2),
    ("QR_GRPC_MODE=sideways\n", {}, "QR_GRPC_MODE=sideways", 2),
    ("QR_GRPC_METHOD_PATH=GetEntropy\n", {}, "/package.Service/Method", 2),
    ("QR_GRPC_SERVER_ADDRESS=10.0.0.1\n", {}, "must be host:port", 2),
    ("QR_BYPASS=maybe\n", {}, "QR_BYPASS=maybe", 2),
    ("QR_GRPC_MODE=server_streaming\nQR_GRPC_STREAM_METHOD_PATH=\n", {}, "streaming mode", 2),
    ("VLLM_PORT=0\n", {}, "VLLM_PORT=0", 2),
    ("QRS_GPU_COUNT=lots\n", {}, "QRS_GPU_COUNT=lots", 2),
    ("QRS_BIND_ADDRESS=everywhere\n", {}, "must be an IP address", 2),
    ("QRS_RUNTIME=k8s\n", {}, "QRS_RUNTIME=k8s", 2),
    (
        "QR_ENTROPY_SOURCE_TYPE=quantum_grpc\nQR_GRPC_SERVER_ADDRESS=h:1\n"
        "QR_GRPC_DAILY_BYTE_BUDGET=100\n",
        {},
        "less than one token's QR_SAMPLE_COUNT",
        0,
    ),
    ("QR_TOP_K=5\n", {"secrets": "QR_TOP_K=x\n"}, "QR_TOP_K=x", 0),
    ("", {"override": "services:\n  vllm:\n   bad: [\n"}, "YAML", 0),
    ("", {"override": "services:\n  extra:\n    image: x\n    ports: 5\n"}, "must be a", 0),
    ("", {"override": "services:\n  extra:\n    image: x\n    colour: red\n"}, "'colour'", 0),
    (
        "",
        {
            "override": "services:\n  vllm:\n    depends_on:\n      nope:\n"
            "        condition: service_healthy\n"
        },
        "undefined service",
        0,
    ),
]


@pytest.mark.parametrize(("env_text", "files", "fragment", "line"), VALIDATE_CASES)
def test_validate_reports_each_problem_on_its_line(
    project: Path,
    qrs: Callable[..., Outcome],
    env_text: str,
    files: dict[str, str],
    fragment: str,
    line: int,
) -> None:
    write_profile(project, "bad", env_text, **files)
    outcome = qrs("profile", "validate", "bad")
    assert_one_line_error(outcome, 1, "1 of 1 profile(s) have errors: bad")
    findings = [ln for ln in outcome.out.splitlines() if ln.strip().startswith("error")]
    matching = [ln for ln in findings if fragment in ln]
    assert matching, outcome.out
    if line:
        assert f"deployments/bad/.env:{line}:" in matching[0]
    index = outcome.out.splitlines().index(matching[0])
    assert outcome.out.splitlines()[index + 1].strip().startswith("hint: ")


def test_profile_name_mismatch_is_an_error(project: Path, qrs: Callable[..., Outcome]) -> None:
    folder = write_profile(project, "copy", "QR_TOP_K=5\n")
    text = (folder / ".env").read_text().replace("QRS_PROFILE=copy", "QRS_PROFILE=urandom")
    (folder / ".env").write_text(text)
    outcome = qrs("profile", "validate", "copy")
    assert outcome.code == 1
    assert "QRS_PROFILE=urandom, but the folder is copy" in outcome.out
    assert "hint: set QRS_PROFILE=copy" in outcome.out


def test_missing_env_file_is_an_error(project: Path, qrs: Callable[..., Outcome]) -> None:
    (project / "deployments" / "empty").mkdir()
    outcome = qrs("profile", "validate", "empty")
    assert outcome.code == 1 and "the profile has no .env file" in outcome.out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["validate"], "name one profile or pass --all"),
        (["validate", "urandom", "--all"], "name one profile or pass --all"),
        (["validate", "nosuch"], "no profile named 'nosuch'"),
        (["validate", "firefly"], "did you mean firefly-1?"),
        (["validate", "../etc"], "no profile named"),
        (["show", "nosuch"], "no profile named 'nosuch'"),
    ],
)
def test_usage_errors_exit_2(
    project: Path, qrs: Callable[..., Outcome], args: list[str], fragment: str
) -> None:
    assert_one_line_error(qrs("profile", *args), 2, fragment)


def test_show_refuses_a_malformed_env_file(project: Path, qrs: Callable[..., Outcome]) -> None:
    write_profile(project, "broken", "QR_TOP_K=5\nnot a line\n")
    outcome = qrs("profile", "show", "broken")
    assert_one_line_error(outcome, 2, "deployments/broken/.env:3: expected KEY=value")


def test_root_without_deployments_is_a_usage_error(
    tmp_path: Path, qrs: Callable[..., Outcome]
) -> None:
    outcome = qrs("profile", "list", "--root", str(tmp_path))
    assert_one_line_error(outcome, 2, "no deployments/ folder in")


def test_no_project_above_the_working_directory(qrs: Callable[..., Outcome]) -> None:
    outcome = qrs("profile", "list")  # cwd is an empty temporary folder, QRS_ROOT unset
    assert_one_line_error(outcome, 2, "deployments/compose.yaml in")
