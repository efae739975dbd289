"""Import hygiene: the engine package loads vLLM only in the adapter modules."""

from __future__ import annotations

import subprocess
import sys


def _modules_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return set(out.stdout.split())


def test_importing_the_engine_package_loads_neither_vllm_nor_torch() -> None:
    loaded = _modules_after("import qr_sampler, qr_sampler.engine, qr_sampler.engine.requests")
    assert not {"vllm", "torch"} & loaded


def test_the_entry_point_target_imports() -> None:
    loaded = _modules_after("import qr_sampler.engine.plugin")
    assert "vllm" in loaded


def test_the_entry_point_is_registered_in_the_vllm_group() -> None:
    from importlib.metadata import entry_points

    from qr_sampler.engine import ENTRY_POINT, ENTRY_POINT_GROUP

    targets = {ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert ENTRY_POINT in targets
