"""The public surface is pinned, and importing it stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import qr_sampler

HEAVY = ("torch", "vllm", "grpc", "jinja2", "typer", "rich")


def test_public_names_are_pinned() -> None:
    assert sorted(qr_sampler.__all__) == sorted(
        [
            "EntropyBatch",
            "EntropyBudgetExhaustedError",
            "EntropyError",
            "EntropySource",
            "EntropyUnavailableError",
            "QRSamplerError",
            "RequestArgumentError",
            "SamplingConfig",
            "SettingProblem",
            "Settings",
            "SettingsError",
            "TokenRecord",
            "TokenSampler",
            "__version__",
            "available_source_names",
            "build_entropy_source",
            "load_settings",
            "resolve_request_overrides",
        ]
    )
    for name in qr_sampler.__all__:
        assert getattr(qr_sampler, name) is not None


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    modules = json.loads(out.strip().splitlines()[-1])
    return [m for m in modules if m.split(".")[0] in HEAVY]


def test_importing_the_package_loads_no_heavy_module() -> None:
    code = (
        "import qr_sampler\nfrom qr_sampler import Settings, build_entropy_source\n"
        "build_entropy_source(Settings()).get_random_bytes(8)"
    )
    assert _loaded_after(code) == []


def test_token_sampler_is_imported_on_first_access() -> None:
    loaded = _loaded_after("import qr_sampler\nqr_sampler.TokenSampler")
    assert "torch" in loaded


def test_errors_form_the_documented_tree() -> None:
    assert issubclass(qr_sampler.RequestArgumentError, qr_sampler.SettingsError)
    assert issubclass(qr_sampler.RequestArgumentError, ValueError)
    assert issubclass(qr_sampler.EntropyUnavailableError, qr_sampler.EntropyError)
    assert issubclass(qr_sampler.EntropyBudgetExhaustedError, qr_sampler.EntropyError)
    for cls in (qr_sampler.SettingsError, qr_sampler.EntropyError):
        assert issubclass(cls, qr_sampler.QRSamplerError)


def test_every_lazy_export_is_listed_in_all() -> None:
    assert sorted(qr_sampler._EXPORTS) == sorted(
        n for n in qr_sampler.__all__ if n != "__version__"
    )
