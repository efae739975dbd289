"""One source of defaults: the gRPC client's config and the probe's target take every default
from the settings schema, so a changed default cannot drift between them."""

from __future__ import annotations

import dataclasses

from qr_sampler.entropy._circuit_breaker import BreakerConfig
from qr_sampler.entropy._grpc_config import GrpcClientConfig
from qr_sampler.settings import setting_default, settings_from_mapping
from qrs_cli.probe.target import DEFAULT_CONNECT_TIMEOUT_S, TargetOverrides, resolve_target
from qrs_cli.probe.types import ProbeTarget


def test_the_client_config_defaults_are_the_schemas() -> None:
    assert GrpcClientConfig() == GrpcClientConfig.from_settings(settings_from_mapping({}))
    assert BreakerConfig() == GrpcClientConfig.from_settings(settings_from_mapping({})).breaker


def test_the_probe_target_defaults_are_the_schemas() -> None:
    resolved = resolve_target(None, TargetOverrides(), environ={}).target
    bare = ProbeTarget(address=resolved.address)
    for f in dataclasses.fields(ProbeTarget):
        if f.name in ("address", "extra_headers", "profile"):
            continue  # no schema key: the address is required, the others are the probe's own
        assert getattr(bare, f.name) == getattr(resolved, f.name), f.name
    assert DEFAULT_CONNECT_TIMEOUT_S == setting_default("grpc_timeout_ms") / 1000
