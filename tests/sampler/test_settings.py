"""The settings schema: defaults, every error path, per-request overrides, secrets masked."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from qr_sampler import RequestArgumentError, Settings, SettingsError, load_settings
from qr_sampler.settings import (
    per_request_fields,
    resolve_request_overrides,
    setting_specs,
)

SECRET = "s3cr3t-api-key-value"


def test_defaults_match_the_documented_values() -> None:
    s = Settings()
    assert s.entropy_source_type == "system"
    assert s.fallback_mode == "system"
    assert s.grpc_server_address == "localhost:50051"
    assert s.grpc_mode == "unary"
    assert s.grpc_method_path == "/qr_entropy.EntropyService/GetEntropy"
    assert s.grpc_stream_method_path == "/qr_entropy.EntropyService/StreamEntropy"
    assert s.grpc_api_key.get_secret_value() == ""
    assert s.grpc_api_key_header == "api-key"
    assert s.grpc_timeout_ms == 5000
    assert s.sample_count == 20480
    assert s.population_mean == 127.5
    assert s.population_std == pytest.approx(math.sqrt((256**2 - 1) / 12))
    assert s.population_std == pytest.approx(73.9003, abs=1e-4)
    assert s.uniform_clamp_epsilon == 1e-10
    assert s.temperature_strategy == "fixed"
    assert s.fixed_temperature == 0.7
    assert s.log_level == "summary"
    assert s.diagnostics_path == ""


def test_settings_reads_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch) -> None:
    Path(".env").write_text("QR_TOP_K=7\nQR_TOP_P=0.5\n")
    monkeypatch.setenv("QR_TOP_P", "0.25")  # the process environment wins over .env
    s = Settings()
    assert (s.top_k, s.top_p) == (7, 0.25)
    strict = load_settings()
    assert (strict.top_k, strict.top_p) == (7, 0.25)


def test_every_field_is_described_and_flagged() -> None:
    specs = setting_specs()
    assert len(specs) == len(Settings.model_fields)
    for spec in specs:
        assert spec.env_key.startswith("QR_")
        assert spec.description and "\n" not in spec.description
        assert spec.allowed
    per_request = set(per_request_fields())
    assert {
        "temperature_strategy",
        "top_k",
        "top_p",
        "min_p",
        "sample_count",
        "bypass",
    } <= per_request
    assert not per_request & {"grpc_api_key", "grpc_server_address", "entropy_source_type"}


@pytest.mark.parametrize(
    ("env", "fragments"),
    [
        ({"QR_TOP_P": "1.5"}, ["QR_TOP_P=1.5", "less than or equal to 1", "(0, 1]"]),
        ({"QR_TOP_P": "0"}, ["QR_TOP_P=0", "(0, 1]"]),
        ({"QR_TOP_K": "-1"}, ["QR_TOP_K=-1", "an integer in [0, 2147483647]"]),
        ({"QR_TOP_K": "many"}, ["QR_TOP_K=many", "valid integer"]),
        ({"QR_SAMPLE_COUNT": "0"}, ["QR_SAMPLE_COUNT=0", "[1, 10000000]"]),
        ({"QR_FIXED_TEMPERATURE": "nan"}, ["QR_FIXED_TEMPERATURE=nan", "finite"]),
        (
            {"QR_GRPC_MODE": "bidi"},
            ["QR_GRPC_MODE=bidi", "unary, server_streaming, bidi_streaming"],
        ),
        ({"QR_FALLBACK_MODE": "none"}, ["QR_FALLBACK_MODE=none", "error, system, mock_uniform"]),
        ({"QR_LOG_LEVEL": "debug"}, ["QR_LOG_LEVEL=debug", "none, summary, full"]),
        ({"QR_ENTROPY_SOURCE_TYPE": "quantm_grpc"}, ["did you mean quantum_grpc?"]),
        ({"QR_GRPC_METHOD_PATH": "GetEntropy"}, ["QR_GRPC_METHOD_PATH", "/package.Service/Method"]),
        ({"QR_GRPC_STREAM_METHOD_PATH": "/x"}, ["QR_GRPC_STREAM_METHOD_PATH", "or be empty"]),
        ({"QR_GRPC_API_KEY_HEADER": "Api-Key"}, ["QR_GRPC_API_KEY_HEADER", "lowercase"]),
        ({"QR_GRPC_API_KEY_HEADER": "grpc-key"}, ["reserved by gRPC"]),
        ({"QR_GRPC_SERVER_ADDRESS": "localhost"}, ["host:port"]),
        ({"QR_GRPC_SERVER_ADDRESS": "host:99999"}, ["port must be a number from 1 to 65535"]),
        ({"QR_GRPC_SERVER_ADDRESS": "::1:50051"}, ["brackets"]),
        ({"QR_GRPC_SERVER_ADDRESS": "[::1]50051"}, ["[::1]:50051"]),
        ({"QR_GRPC_SERVER_ADDRESS": "unix://"}, ["socket path"]),
        ({"QR_GRPC_TIMEOUT_MS": "0"}, ["QR_GRPC_TIMEOUT_MS=0", "> 0"]),
        ({"QR_MOCK_BIAS": "0.5"}, ["QR_MOCK_BIAS=0.5", "[-0.3, 0.3]"]),
        ({"QR_GRPC_TLS": "maybe"}, ["QR_GRPC_TLS=maybe", "true or false"]),
        (
            {"QR_GRPC_MODE": "bidi_streaming", "QR_GRPC_STREAM_METHOD_PATH": ""},
            ["QR_GRPC_MODE=bidi_streaming", "needs QR_GRPC_STREAM_METHOD_PATH"],
        ),
        (
            {"QR_EDT_MIN_TEMP": "3", "QR_EDT_MAX_TEMP": "2"},
            ["QR_EDT_MIN_TEMP=3", "≤ QR_EDT_MAX_TEMP"],
        ),
        ({"QR_GRPC_TLS_CLIENT_CERT": "c.pem", "QR_GRPC_TLS": "true"}, ["mutual TLS needs both"]),
        ({"QR_GRPC_TLS_CA_CERT": "ca.pem"}, ["QR_GRPC_TLS is off"]),
        ({"QR_GRPC_TLS": "true", "QR_GRPC_SERVER_ADDRESS": "unix:///x.sock"}, ["unix socket"]),
        (
            {"QR_CB_RECOVERY_WINDOW_S": "60", "QR_CB_MAX_RECOVERY_WINDOW_S": "30"},
            ["QR_CB_MAX_RECOVERY_WINDOW_S", "≥ QR_CB_RECOVERY_WINDOW_S"],
        ),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_allowed(
    env: dict[str, str], fragments: list[str]
) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(None, env)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message
    assert info.value.problems, "errors are structured, one problem per key"


def test_several_problems_are_reported_together() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(None, {"QR_TOP_P": "2", "QR_TOP_K": "x", "QR_MIN_P": "-1"})
    assert {p.key for p in info.value.problems} == {"QR_TOP_P", "QR_TOP_K", "QR_MIN_P"}


def test_unknown_key_in_dotenv_gets_a_did_you_mean(tmp_path: Path) -> None:
    env_file = tmp_path / "profile.env"
    env_file.write_text("QR_TOPK=5\nQR_SAMPLECOUNT=10\nOTHER_TOOL_KEY=1\n")
    with pytest.raises(SettingsError) as info:
        load_settings(env_file, {})
    message = str(info.value)
    assert "QR_TOPK" in message and "did you mean QR_TOP_K?" in message
    assert "did you mean QR_SAMPLE_COUNT?" in message
    assert "OTHER_TOOL_KEY" not in message  # not ours: ignored


def test_unknown_key_in_environment_is_ignored_unless_asked() -> None:
    assert load_settings(None, {"QR_TOPK": "5"}).top_k == 50
    with pytest.raises(SettingsError, match="did you mean QR_TOP_K"):
        load_settings(None, {"QR_TOPK": "5"}, unknown_env_keys="error")


def test_secret_is_masked_in_repr_errors_and_specs() -> None:
    s = load_settings(None, {"QR_GRPC_API_KEY": SECRET})
    assert s.grpc_api_key.get_secret_value() == SECRET
    assert SECRET not in repr(s) and SECRET not in str(s.model_dump())
    with pytest.raises(SettingsError) as info:
        load_settings(None, {"QR_GRPC_API_KEY": SECRET, "QR_TOP_P": "9"})
    assert SECRET not in str(info.value)
    spec = next(x for x in setting_specs() if x.name == "grpc_api_key")
    assert spec.secret and spec.type_name == "secret"


def test_request_overrides_are_typed_and_validated() -> None:
    base = Settings()
    assert resolve_request_overrides(
        {"qr_top_k": "5", "qr_top_p": 0.5, "qr_bypass": "true", "other_plugin": {"x": 1}}, base
    ) == {"top_k": 5, "top_p": 0.5, "bypass": True}
    assert resolve_request_overrides(None, base) == {}


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        ({"qr_top_kk": 1}, ["qr_top_kk", "did you mean qr_top_k?"]),
        ({"qr_top_p": "x"}, ["qr_top_p='x'", "(0, 1]"]),
        ({"qr_top_p": 2}, ["qr_top_p=2", "(0, 1]"]),
        ({"qr_top_k": True}, ["qr_top_k=True", "integer"]),
        ({"qr_temperature_strategy": "hot"}, ["qr_temperature_strategy", "fixed, edt"]),
        ({"qr_grpc_api_key": "x"}, ["qr_grpc_api_key", "server setting (QR_GRPC_API_KEY)"]),
        ({"qr_edt_min_temp": 5}, ["qr_edt_min_temp", "≤ QR_EDT_MAX_TEMP"]),
        ({"qr_sample_count": 0}, ["qr_sample_count=0", "[1, 10000000]"]),
    ],
)
def test_bad_request_arguments_raise_value_errors(
    args: dict[str, object], fragments: list[str]
) -> None:
    with pytest.raises(RequestArgumentError) as info:
        resolve_request_overrides(args, Settings())
    assert isinstance(info.value, ValueError)  # vLLM maps ValueError to HTTP 400
    for fragment in fragments:
        assert fragment in str(info.value)
