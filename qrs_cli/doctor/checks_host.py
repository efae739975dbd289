"""Ports, profiles, Hugging Face and disk space: what this machine and checkout offer a launch.

Ports: 8000 and every profile's ``VLLM_PORT`` (and ``QRS_ENTROPY_SERVER_PORT`` when it runs
the reference server) must be free — unless a stack ``qrs up`` started holds them. Profiles:
each is validated by ``qrs profile validate``'s own code. Hugging Face: the cache must be
writable and, for a gated model, a token present. Which models are gated cannot be known
offline; the known gated families are listed below.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from qrs_cli.doctor.context import DoctorContext
from qrs_cli.doctor.types import Check, error, ok, warn, with_alternative

#: Model id prefixes of families that are gated on the Hugging Face Hub.
GATED_PREFIXES = ("meta-llama/", "mistralai/", "google/gemma", "google/medgemma",
                  "CohereForAI/", "bigcode/starcoder2")
DEFAULT_PORT = 8000
DISK_ERROR_BYTES = 1 << 30
DISK_WARN_BYTES = 10 << 30


def check_ports(ctx: DoctorContext) -> list[Check]:
    from qrs_cli.runtime.preflight import port_problem

    wanted: dict[int, list[str]] = {DEFAULT_PORT: ["default vLLM port"]}
    checks = []
    for name, values in ctx.profile_values().items():
        keys = [("VLLM_PORT", DEFAULT_PORT, f"{name} vLLM")]
        if values.get("QR_GRPC_SERVER_ADDRESS") == "entropy-server:50051":
            keys.append(("QRS_ENTROPY_SERVER_PORT", 50051, f"{name} entropy server"))
        for key, default, who in keys:
            port = _port(values.get(key), default)
            if port is None:
                checks.append(error("ports", f"{name} {key}", f"profile {name}: {key}="
                                    f"{values.get(key)!r} is not a port (1–65535)",
                                    f"set {key} to a free port in deployments/{name}/.env; "
                                    f"`qrs profile validate {name}` shows the line"))
                continue
            wanted.setdefault(port, []).append(who)
    held = _ports_of_running_stacks()
    for port, users in sorted(wanted.items()):
        who = ", ".join(users)
        problem = port_problem("127.0.0.1", port)
        if not problem:
            checks.append(ok("ports", str(port), f"port {port} is free ({who})"))
        elif port in held:
            checks.append(ok("ports", str(port), f"port {port} is used by `qrs up {held[port]}` "
                                                 f"({who})"))
        else:
            checks.append(warn("ports", str(port), f"port {port} is {problem} ({who})",
                               f"stop what listens there (`ss -ltnp 'sport = :{port}'`) or set "
                               "VLLM_PORT / QRS_ENTROPY_SERVER_PORT in the profile"))
    return checks


def _port(text: str | None, default: int) -> int | None:
    """The port a profile value names: ``default`` when unset, None when it is not a port."""
    if text is None or not text.strip():
        return default
    value = text.strip()
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        return None
    return int(value)


def _ports_of_running_stacks() -> dict[int, str]:
    from qrs_cli.runtime.errors import LaunchError
    from qrs_cli.runtime.state import known_profiles, read_state

    held = {}
    for name in known_profiles():
        try:
            state = read_state(name)
        except LaunchError:
            continue
        for _service, port in state.ports if state else ():
            held[port] = name
    return held


def check_profiles(ctx: DoctorContext) -> list[Check]:
    from qrs_cli.profiles.discovery import profile_names
    from qrs_cli.profiles.validate import validate_profile

    layout = ctx.layout()
    if layout is None:
        return [warn("profiles", "project", "not inside a qr-sampler project: profiles not "
                     "checked", "make one with `qrs init DIR` (a checkout works too), then run "
                     "qrs doctor there, or pass --root DIR")]
    names = profile_names(layout)
    if not names:
        return [warn("profiles", "project", f"no profiles in {layout.deployments}",
                     "make one: `qrs profile new NAME`")]
    checks = []
    for name in names:
        report = validate_profile(layout, name, ctx.environ)
        if report.errors:
            first = report.errors[0]
            where = f"{first.location}: " if first.location else ""
            checks.append(error("profiles", name, f"{name}: {len(report.errors)} error(s) — "
                                f"{where}{first.message}", f"qrs profile validate {name}",
                                errors=len(report.errors), warnings=len(report.warnings)))
        elif report.warnings:
            checks.append(warn("profiles", name, f"{name}: valid, {len(report.warnings)} "
                               f"warning(s) — {report.warnings[0].message}",
                               f"qrs profile validate {name}", warnings=len(report.warnings)))
        else:
            checks.append(ok("profiles", name, f"{name}: valid ({report.compose_checker})"))
    return checks


def check_huggingface(ctx: DoctorContext) -> list[Check]:
    cache = ctx.hf_hub_cache()
    existing = _existing_parent(cache)
    checks = []
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK):
        checks.append(error("huggingface", "cache", f"the Hugging Face cache {cache} is not "
                            "writable", "set HF_HOME (or HF_HUB_CACHE) to a writable folder"))
    else:
        state = "exists" if cache.is_dir() else "will be created"
        checks.append(ok("huggingface", "cache", f"cache {cache} ({state})", path=str(cache)))
    token = ctx.environ.get("HF_TOKEN") or _token_file(ctx)
    gated = sorted({v.get("HF_MODEL", "") for v in ctx.profile_values().values()
                    if v.get("HF_MODEL", "").startswith(GATED_PREFIXES)})
    if gated and not token:
        checks.append(warn("huggingface", "token", f"gated model(s) {', '.join(gated)} but no "
                           "Hugging Face token", "accept the model's licence on huggingface.co, "
                           "then `hf auth login` or HF_TOKEN in the profile's secrets.env"))
    elif gated:
        checks.append(ok("huggingface", "token", f"token present for gated {', '.join(gated)}"))
    else:
        checks.append(ok("huggingface", "token", "no gated model in the profiles"
                         + (" (a token is set)" if token else " (no token needed)")))
    checks.append(_embedded_model())
    return checks


def _token_file(ctx: DoctorContext) -> str:
    path = ctx.hf_home() / "token"
    return "file" if path.is_file() and path.stat().st_size > 0 else ""


def _embedded_model() -> Check:
    from qrs_cli.model_store import MARKER, MODEL_NAME, model_dir

    folder = model_dir()
    if (folder / MARKER).is_file():
        return ok("huggingface", "embedded model", f"{MODEL_NAME} ready at {folder}")
    return with_alternative(
        warn("huggingface", "embedded model", f"{MODEL_NAME} (the native default) is not "
             "built yet", "qrs model fetch (once)"),
        "native", "; `qrs up --native` also does it")


def check_disk(ctx: DoctorContext) -> list[Check]:
    from qrs_cli.model_store import cache_dir
    from qrs_cli.runtime.state import state_root

    places = {"Hugging Face cache": ctx.hf_hub_cache(), "qrs cache": cache_dir(),
              "qrs state": state_root()}
    if ctx.which("docker"):
        _result, info = ctx.docker_info()
        if info.get("DockerRootDir"):
            places["Docker data"] = Path(str(info["DockerRootDir"]))
    seen: dict[int, str] = {}
    checks = []
    for label, path in places.items():
        existing = _existing_parent(path)
        if existing is None:
            continue
        try:
            device = existing.stat().st_dev
            free = shutil.disk_usage(existing).free
        except OSError:
            continue
        if device in seen:
            continue
        seen[device] = label
        text = f"{free / 2**30:.1f} GiB free for the {label} ({existing})"
        if free < DISK_ERROR_BYTES:
            checks.append(error("disk", label, text, "free some space: models and images need "
                                "several GB", free_bytes=free))
        elif free < DISK_WARN_BYTES:
            checks.append(warn("disk", label, text, "a model plus the vLLM image need ~10 GB; "
                               "free some space", free_bytes=free))
        else:
            checks.append(ok("disk", label, text, free_bytes=free))
    return checks


def _existing_parent(path: Path) -> Path | None:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return None
