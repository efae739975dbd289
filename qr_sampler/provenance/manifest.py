"""What a run says about itself at the top of every diagnostics file.

:func:`build_manifest` gathers the fields the engine side knows (versions, model, parallel
layout, settings, source); :class:`~qr_sampler.provenance.RecordJournal` adds the per-line ones
(``kind``, ``schema``, ``file_index``, ``written_at``, ``pid``, ``host``, ``prev_hash``). The
verifier takes ``population_mean``, ``population_std`` and ``uniform_clamp_epsilon`` from
``settings`` to re-derive u from z, so those must be the values the sampler used.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qr_sampler.settings import Settings


def new_run_id() -> str:
    """A fresh run id: 16 random hex digits (unique enough to tell runs and processes apart)."""
    return secrets.token_hex(8)


def iso_utc(epoch_s: float | None = None) -> str:
    """ISO-8601 UTC with microseconds, e.g. ``2026-11-23T16:24:05.123456Z``."""
    now = time.time() if epoch_s is None else epoch_s
    micros = int(now % 1 * 1e6)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{micros:06d}Z"


def manifest_settings(settings: Settings) -> dict[str, Any]:
    """Every non-secret setting as JSON values (secret fields are left out, not masked)."""
    from pydantic import SecretStr

    values = settings.model_dump(mode="json")
    return {
        name: values[name]
        for name, value in settings
        if not isinstance(value, SecretStr) and name in values
    }


def build_manifest(
    settings: Settings,
    *,
    run_id: str,
    model: str = "",
    vllm_version: str = "",
    parallel: Mapping[str, int] | None = None,
    started_at: str = "",
) -> dict[str, Any]:
    """The manifest mapping for :class:`RecordJournal` (C2 field names and order)."""
    from qr_sampler import __version__
    from qr_sampler.types import SamplingConfig

    layout = {"tp": 1, "pp": 1, "dp": 1, "dp_rank": 0}
    layout.update(parallel or {})
    streaming = settings.grpc_mode != "unary"
    is_grpc = settings.entropy_source_type == "quantum_grpc"
    return {
        "run_id": run_id,
        "started_at": started_at or iso_utc(),
        "plugin_version": __version__,
        "vllm_version": vllm_version,
        "model": model,
        "parallel": layout,
        "config_hash": SamplingConfig.from_settings(settings).config_hash,
        "settings": manifest_settings(settings),
        "source": {
            "type": settings.entropy_source_type,
            "address": settings.grpc_server_address if is_grpc else "",
            "method": (
                (settings.grpc_stream_method_path if streaming else settings.grpc_method_path)
                if is_grpc
                else ""
            ),
            "mode": settings.grpc_mode if is_grpc else "",
        },
    }
