"""``qrs profile validate``: every problem of a profile, as findings, before anything launches.

Checks, in order: the files parse (the sampler's strict ``.env`` reader, line by line), every key
is known (did-you-mean), the sampler settings pass the plugin's own schema and cross-field rules,
the stack keys pass theirs, the profile-level rules below hold, secrets are where they belong,
and the Compose files pass ``docker compose config`` (see :mod:`qrs_cli.profiles.compose`).
Errors make the profile invalid; warnings do not (``--strict`` counts them too).
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Mapping

from qr_sampler.errors import SettingsError
from qr_sampler.settings import ENV_PREFIX, Settings, settings_from_mapping, unknown_key_problems
from qrs_cli.profiles.answers import GRPC_SOURCE, HEADER_KEY
from qrs_cli.profiles.compose import check_compose, redact
from qrs_cli.profiles.discovery import ENV_FILE, SECRETS_FILE, ProjectLayout
from qrs_cli.profiles.parallel import parallel_problems
from qrs_cli.profiles.secrets_check import secret_findings
from qrs_cli.profiles.sources import EnvFileContent, ProfileSources, load_sources
from qrs_cli.profiles.stack import (
    ENTROPY_SERVER_ADDRESS,
    StackSettings,
    stack_from_mapping,
    stack_keys,
)
from qrs_cli.profiles.types import Finding, ValidationReport

_SCHEMA_HINT = "the comment above the key says what it accepts; `qrs settings` lists every key"
_LOOPBACK = ("localhost:", "127.", "[::1]:")


def validate_profile(
    layout: ProjectLayout, name: str, environ: Mapping[str, str] | None = None
) -> ValidationReport:
    """Validate one profile (templates included); never raises for problems inside it."""
    sources = load_sources(layout, name, environ)
    findings = _file_findings(layout, sources)
    findings += _key_findings(layout, sources)
    settings, schema = _schema_findings(layout, sources)
    findings += schema
    findings += _stack_findings(layout, sources)
    if settings is not None:
        findings += _profile_rules(layout, sources, settings)
    findings += secret_findings(layout, sources)
    checker = "skipped (no .env)"
    if sources.env.exists:
        has_key = bool(sources.merged().get("QR_GRPC_API_KEY"))
        compose_found, checker = check_compose(
            layout, sources.folder, sources.secret_values(), api_key=has_key
        )
        findings += compose_found
    secrets = sources.secret_values()
    clean = tuple(
        Finding(
            f.severity,
            f.check,
            redact(f.message, secrets),
            redact(f.hint, secrets),
            f.key,
            f.file,
            f.line,
        )
        for f in findings
    )
    return ValidationReport(name, clean, checker)


def _file_findings(layout: ProjectLayout, sources: ProfileSources) -> list[Finding]:
    findings = []
    if not sources.env.exists:
        findings.append(
            Finding(
                "error",
                "files",
                f"the profile has no {ENV_FILE} file",
                hint=f"recreate it with `qrs profile new {sources.name} --force --yes`",
                file=layout.relative(sources.env.path),
            )
        )
    for content in (sources.env, sources.secrets):
        rel = layout.relative(content.path)
        for line, message in content.bad_lines:
            findings.append(
                Finding(
                    "error",
                    "syntax",
                    message,
                    file=rel,
                    line=line,
                    hint="each line is KEY=value, a # comment, or empty",
                )
            )
        findings += _duplicates(content, rel)
        findings += _dollar_values(content, rel)
    return findings


def _duplicates(content: EnvFileContent, rel: str) -> list[Finding]:
    seen: dict[str, int] = {}
    findings = []
    for e in content.entries:
        if e.key in seen:
            findings.append(
                Finding(
                    "warning",
                    "syntax",
                    f"{e.key} is set again (first on line {seen[e.key]}); the last value wins",
                    key=e.key,
                    file=rel,
                    line=e.line,
                    hint="delete one of the two lines",
                )
            )
        seen[e.key] = e.line
    return findings


def _dollar_values(content: EnvFileContent, rel: str) -> list[Finding]:
    """Compose expands ``$`` in unquoted and double-quoted values; the plugin would not."""
    findings = []
    for e in content.entries:
        raw = content.raw_lines[e.line - 1].split("=", 1)[1].strip() if content.raw_lines else ""
        if "$" in e.value and not raw.startswith("'"):
            findings.append(
                Finding(
                    "warning",
                    "syntax",
                    f"{e.key}: Compose would expand the '$' in this value",
                    key=e.key,
                    file=rel,
                    line=e.line,
                    hint="wrap the value in single quotes to keep it literal",
                )
            )
    return findings


def _key_findings(layout: ProjectLayout, sources: ProfileSources) -> list[Finding]:
    findings = []
    stack = sorted(stack_keys())
    for content in (sources.env, sources.secrets):
        rel = layout.relative(content.path)
        values = content.values()
        for problem in unknown_key_problems(values, where=content.path.name):
            entry = content.last_entry(problem.key)
            findings.append(
                Finding(
                    "error",
                    "keys",
                    f"{problem.key}: {problem.message}",
                    key=problem.key,
                    file=rel,
                    line=entry.line if entry else 0,
                    hint="fix the spelling; `qrs settings` lists every sampler key",
                )
            )
        for key in values:
            if key.startswith(ENV_PREFIX) or key in stack:
                continue
            match = difflib.get_close_matches(key, stack, n=1, cutoff=0.8)
            if match:
                entry = content.last_entry(key)
                findings.append(
                    Finding(
                        "warning",
                        "keys",
                        f"{key} is not a stack key (did you mean {match[0]}?); Compose ignores it",
                        key=key,
                        file=rel,
                        line=entry.line if entry else 0,
                        hint="fix the spelling, or ignore this if the variable is for vLLM",
                    )
                )
    return findings


def _schema_findings(
    layout: ProjectLayout, sources: ProfileSources
) -> tuple[Settings | None, list[Finding]]:
    values = {k: v for k, v in sources.merged().items() if k.startswith(ENV_PREFIX)}
    try:
        return settings_from_mapping(values), []
    except SettingsError as exc:
        findings = []
        for p in exc.problems:
            file, line = sources.where(p.key)
            findings.append(
                Finding(
                    "error",
                    "schema",
                    str(p),
                    key=p.key,
                    file=_rel(layout, file),
                    line=line,
                    hint=_SCHEMA_HINT,
                )
            )
        return None, findings


def _stack_findings(layout: ProjectLayout, sources: ProfileSources) -> list[Finding]:
    merged = sources.merged()
    findings = []
    try:
        findings += _parallel_findings(layout, sources, stack_from_mapping(merged))
    except SettingsError as exc:
        for p in exc.problems:
            file, line = sources.where(p.key)
            findings.append(
                Finding(
                    "error",
                    "stack",
                    str(p),
                    key=p.key,
                    file=_rel(layout, file),
                    line=line,
                    hint="the comment above the key in .env says what it accepts",
                )
            )
    declared = merged.get("QRS_PROFILE", "")
    if sources.env.exists and declared != sources.name:
        file, line = sources.where("QRS_PROFILE")
        what = f"QRS_PROFILE={declared}" if declared else "QRS_PROFILE is not set"
        findings.append(
            Finding(
                "error",
                "stack",
                f"{what}, but the folder is {sources.name}: the base Compose "
                "file would not load this profile's settings",
                key="QRS_PROFILE",
                file=_rel(layout, file or str(sources.env.path)),
                line=line,
                hint=f"set QRS_PROFILE={sources.name} in .env",
            )
        )
    return findings


def _parallel_findings(
    layout: ProjectLayout, sources: ProfileSources, stack: StackSettings
) -> list[Finding]:
    """TP × PP × DP against the GPUs, and flags in QRS_VLLM_ARGS that a key manages."""
    findings = []
    for problem in parallel_problems(stack):
        file, line = sources.where(problem.key)
        findings.append(
            Finding(
                problem.severity,
                "parallel",
                problem.message,
                hint=problem.hint,
                key=problem.key,
                file=_rel(layout, file),
                line=line,
            )
        )
    return findings


def _profile_rules(layout: ProjectLayout, sources: ProfileSources, s: Settings) -> list[Finding]:
    """Rules about the profile as a whole, beyond the schema's cross-field rules."""
    merged = sources.merged()
    env_rel = layout.relative(sources.env.path)
    secrets_rel = layout.relative(sources.folder / SECRETS_FILE)
    grpc = s.entropy_source_type == GRPC_SOURCE
    findings = []
    if grpc and HEADER_KEY in merged and not s.grpc_api_key.get_secret_value():
        findings.append(
            Finding(
                "warning",
                "api-key",
                f"no API key: the server expects one in the '{s.grpc_api_key_header}' header",
                key="QR_GRPC_API_KEY",
                hint=f"`qrs profile set-key {sources.name} --stdin` puts QR_GRPC_API_KEY=<key> "
                f"in {secrets_rel} (git-ignored, mode 0600) and changes nothing else; or "
                "export QR_GRPC_API_KEY",
            )
        )
    runtime = merged.get("QRS_RUNTIME", "compose")
    if grpc and runtime == "compose" and s.grpc_server_address.startswith(_LOOPBACK):
        findings.append(
            Finding(
                "warning",
                "address",
                f"QR_GRPC_SERVER_ADDRESS={s.grpc_server_address} is "
                "the vLLM container itself under Compose",
                key="QR_GRPC_SERVER_ADDRESS",
                file=env_rel,
                hint=f"use the co-located server ({ENTROPY_SERVER_ADDRESS}) or "
                "an address the container can reach",
            )
        )
    if sources.co_located_server and not (grpc and s.grpc_server_address == ENTROPY_SERVER_ADDRESS):
        findings.append(
            Finding(
                "warning",
                "address",
                "the co-located entropy server is started but not used",
                key="QR_GRPC_SERVER_ADDRESS",
                file=env_rel,
                hint=f"set QR_ENTROPY_SOURCE_TYPE={GRPC_SOURCE} and "
                f"QR_GRPC_SERVER_ADDRESS={ENTROPY_SERVER_ADDRESS}, or delete the override",
            )
        )
    if grpc:
        findings += _budget_rules(s, env_rel)
    findings += _exposure_rules(layout, sources, env_rel)
    return findings


def _exposure_rules(layout: ProjectLayout, sources: ProfileSources, env_rel: str) -> list[Finding]:
    """vLLM's OpenAI API has no authentication of its own: publishing it beyond loopback
    lets anyone who reaches the port generate text (and spend the entropy quota)."""
    bind = sources.merged().get("QRS_BIND_ADDRESS", "127.0.0.1").strip() or "127.0.0.1"
    try:
        address = ipaddress.ip_address(bind)
    except ValueError:
        return []  # the stack schema reports a malformed address
    if address.is_loopback:
        return []
    file, line = sources.where("QRS_BIND_ADDRESS")
    reach = "every network of this host" if address.is_unspecified else f"{bind}'s network"
    return [
        Finding(
            "warning",
            "exposure",
            f"QRS_BIND_ADDRESS={bind} publishes vLLM's API, which has no authentication, to "
            f"{reach}",
            key="QRS_BIND_ADDRESS",
            file=_rel(layout, file) or env_rel,
            line=line,
            hint="keep QRS_BIND_ADDRESS=127.0.0.1 and put an authenticating reverse proxy (or "
            "an SSH tunnel) in front of it; if it must listen there, firewall the port to "
            "trusted hosts",
        )
    ]


def _budget_rules(s: Settings, env_rel: str) -> list[Finding]:
    findings = []
    if 0 < s.grpc_daily_byte_budget < s.sample_count:
        findings.append(
            Finding(
                "error",
                "limits",
                f"QR_GRPC_DAILY_BYTE_BUDGET={s.grpc_daily_byte_budget} is "
                f"less than one token's QR_SAMPLE_COUNT={s.sample_count}",
                key="QR_GRPC_DAILY_BYTE_BUDGET",
                file=env_rel,
                hint="raise the budget (0 = unlimited) or lower QR_SAMPLE_COUNT",
            )
        )
    cap = s.grpc_max_bytes_per_request
    calls = -(-s.sample_count // cap) if cap else 1
    if 0 < s.grpc_rate_limit_per_min < calls:
        findings.append(
            Finding(
                "warning",
                "limits",
                f"one token needs {calls} calls but "
                f"QR_GRPC_RATE_LIMIT_PER_MIN={s.grpc_rate_limit_per_min}: under a token a "
                "minute",
                key="QR_GRPC_RATE_LIMIT_PER_MIN",
                file=env_rel,
                hint="lower QR_SAMPLE_COUNT or raise the server's limits",
            )
        )
    return findings


def _rel(layout: ProjectLayout, file: str) -> str:
    if not file or file == "environment":
        return file
    return layout.relative(layout.root / file)
