"""``qrs profile new | list | show | validate``: make and check deployment profiles.

Thin by design: each command turns its options into a call to :mod:`qrs_cli.profiles` and renders
the data it returns. That package (pydantic, jinja2, yaml, subprocess) is imported inside the
commands, so ``qrs --help`` does not pay for it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from qrs_cli import output
from qrs_cli.errors import EXIT_FAILED, CLIError

if TYPE_CHECKING:
    from qrs_cli.profiles.create import ProfilePlan
    from qrs_cli.profiles.discovery import ProjectLayout
    from qrs_cli.profiles.types import Finding, ValidationReport

profile_app = typer.Typer(
    name="profile",
    help="Make, list, show and validate deployment profiles (deployments/NAME/).",
    no_args_is_help=True,
)

RootOption = Annotated[
    str | None,
    typer.Option(
        "--root",
        envvar="QRS_ROOT",
        metavar="DIR",
        help="Project folder holding deployments/ (default: found from the working directory).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _answer(flag: str, key: str, what: str = "") -> Any:
    """An answer flag. Taken as text so the schema, not Typer, judges the value: every bad value
    then gets the same one-line ``Error:``/``Hint:`` as in a profile's ``.env``."""
    return typer.Option(
        flag, help=f"{what} ({key})." if what else f"Sets {key}.", show_default=False
    )


def _stdin_is_tty() -> bool:
    """Prompts only on a terminal (tests replace this to script the interview)."""
    return sys.stdin.isatty()


class _TerminalAsker:
    """The interview's terminal I/O; prompts go to stderr so stdout stays data."""

    def text(self, prompt: str, default: str) -> str:
        return str(typer.prompt(prompt, default=default, err=True))

    def confirm(self, prompt: str, default: bool) -> bool:
        return bool(typer.confirm(prompt, default=default, err=True))

    def secret(self, prompt: str) -> str:
        return str(typer.prompt(prompt, default="", hide_input=True, show_default=False, err=True))

    def say(self, message: str) -> None:
        output.info(message)


@profile_app.command("new")
def new(
    name: Annotated[str, typer.Argument(help="Folder name under deployments/, e.g. my-qrng.")],
    source: Annotated[str | None, _answer("--source", "QR_ENTROPY_SOURCE_TYPE")] = None,
    address: Annotated[str | None, _answer("--address", "QR_GRPC_SERVER_ADDRESS")] = None,
    mode: Annotated[str | None, _answer("--mode", "QR_GRPC_MODE")] = None,
    method_path: Annotated[str | None, _answer("--method-path", "QR_GRPC_METHOD_PATH")] = None,
    stream_method_path: Annotated[
        str | None, _answer("--stream-method-path", "QR_GRPC_STREAM_METHOD_PATH")
    ] = None,
    api_key_header: Annotated[
        str | None, _answer("--api-key-header", "QR_GRPC_API_KEY_HEADER")
    ] = None,
    max_bytes_per_request: Annotated[
        str | None, _answer("--max-bytes-per-request", "QR_GRPC_MAX_BYTES_PER_REQUEST")
    ] = None,
    rate_limit_per_min: Annotated[
        str | None, _answer("--rate-limit-per-min", "QR_GRPC_RATE_LIMIT_PER_MIN")
    ] = None,
    daily_byte_budget: Annotated[
        str | None, _answer("--daily-byte-budget", "QR_GRPC_DAILY_BYTE_BUDGET")
    ] = None,
    sample_count: Annotated[str | None, _answer("--sample-count", "QR_SAMPLE_COUNT")] = None,
    model: Annotated[str | None, _answer("--model", "HF_MODEL", "Model vLLM serves")] = None,
    port: Annotated[str | None, _answer("--port", "VLLM_PORT", "Host port of the API")] = None,
    entropy_server_port: Annotated[
        str | None, _answer("--entropy-server-port", "QRS_ENTROPY_SERVER_PORT")
    ] = None,
    entropy_server: Annotated[
        bool | None,
        typer.Option(
            "--entropy-server/--no-entropy-server",
            help="Run the reference entropy server next to vLLM.",
            show_default=False,
        ),
    ] = None,
    api_key_env: Annotated[
        str,
        typer.Option(
            metavar="VAR", help="Read the API key from this variable into secrets.env (0600)."
        ),
    ] = "",
    from_profile: Annotated[
        str, typer.Option("--from", metavar="PROFILE", help="Start from another profile.")
    ] = "",
    assignments: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="Set any other key (repeatable)."),
    ] = None,
    defaults: Annotated[
        bool, typer.Option("--defaults", "--no-input", help="Ask nothing; use defaults.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the files; write nothing.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing profile (keeps secrets.env).")
    ] = False,
    root: RootOption = None,
) -> None:
    """Make deployments/NAME/: an annotated .env, a README and, when needed, a Compose override.

    Answers come from flags, then prompts (on a terminal), then --from, then the defaults. The
    API key never goes on the command line: --api-key-env VAR or a hidden prompt.
    """
    from qrs_cli.profiles.create import ProfileRequest, plan_profile, write_plan
    from qrs_cli.profiles.discovery import find_project

    flags = {
        "source": source,
        "address": address,
        "mode": mode,
        "method_path": method_path,
        "stream_method_path": stream_method_path,
        "api_key_header": api_key_header,
        "max_bytes_per_request": max_bytes_per_request,
        "rate_limit_per_min": rate_limit_per_min,
        "daily_byte_budget": daily_byte_budget,
        "sample_count": sample_count,
        "model": model,
        "port": port,
        "entropy_server_port": entropy_server_port,
    }
    layout = find_project(root)
    request = ProfileRequest(
        name=name,
        answers={k: v for k, v in flags.items() if v is not None},
        entropy_server=entropy_server,
        from_profile=from_profile,
        assignments=tuple(assignments or ()),
        api_key_env=api_key_env,
        force=force,
    )
    interactive = not defaults and _stdin_is_tty()
    plan = plan_profile(layout, request, asker=_TerminalAsker() if interactive else None)
    if dry_run:
        _print_plan(layout, plan)
        output.info(f"Dry run: nothing written to {layout.relative(plan.folder)}/.")
        return
    plan = write_plan(layout, plan, force=force)
    for path in plan.written:
        output.data(layout.relative(path))
    output.info(
        f"Next: qrs profile validate {name}  (see {layout.relative(plan.folder)}/README.md)"
    )


def _print_plan(layout: ProjectLayout, plan: ProfilePlan) -> None:
    for f in plan.files:
        path = layout.relative(plan.folder / f.name)
        if f.secret:
            output.data(f"==> {path} (mode 0600; contents not shown: they are secret) <==\n")
            continue
        output.data(f"==> {path} <==\n{f.content}")


@profile_app.command("list")
def list_profiles(as_json: JsonOption = False, root: RootOption = None) -> None:
    """List the profiles: entropy source, server address, mode and whether they validate."""
    from qrs_cli.profiles.discovery import find_project
    from qrs_cli.profiles.summary import summarize_profiles

    summaries = summarize_profiles(find_project(root))
    if as_json:
        output.json_data([s.to_dict() for s in summaries])
        return
    if not summaries:
        output.info("No profiles yet: make one with `qrs profile new NAME`.")
        return
    rows = [
        [s.name, s.source, s.address or "-", s.mode or "-", _validity(s.errors, s.warnings)]
        for s in summaries
    ]
    output.data(output.table(["NAME", "SOURCE", "ADDRESS", "MODE", "VALID"], rows))


def _validity(errors: int, warnings: int) -> str:
    if errors:
        return f"no ({_count(errors, 'error')})"
    return f"yes ({_count(warnings, 'warning')})" if warnings else "yes"


@profile_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Profile name.")],
    as_json: JsonOption = False,
    root: RootOption = None,
) -> None:
    """Every setting of a profile after precedence, and where its value comes from.

    Precedence: process env > secrets file > profile .env > default. Secrets show as ****.
    """
    from qrs_cli.profiles.discovery import find_project
    from qrs_cli.profiles.sources import load_sources, require_readable, resolve_settings

    sources = load_sources(find_project(root), name)
    require_readable(sources)
    resolved = resolve_settings(sources)
    if as_json:
        output.json_data({"profile": name, "settings": [r.to_dict() for r in resolved]})
        return
    rows = [[r.key, r.value if r.value != "" else "(empty)", r.origin] for r in resolved]
    output.data(output.table(["KEY", "VALUE", "ORIGIN"], rows))


@profile_app.command("validate")
def validate(
    name: Annotated[str | None, typer.Argument(help="Profile name (or --all).")] = None,
    all_profiles: Annotated[bool, typer.Option("--all", help="Validate every profile.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Warnings count as errors.")] = False,
    as_json: JsonOption = False,
    root: RootOption = None,
) -> None:
    """Check profiles against the sampler schema, the stack rules and Docker Compose.

    Exit 0 when there are no errors (--strict: no warnings either), 1 when there are, 2 on a
    usage error.
    """
    from qrs_cli.profiles.discovery import find_project, profile_names
    from qrs_cli.profiles.validate import validate_profile

    if all_profiles == (name is not None):
        raise CLIError(
            "name one profile or pass --all (not both)", "e.g. `qrs profile validate firefly-1`"
        )
    layout = find_project(root)
    names = profile_names(layout) if all_profiles else [str(name)]
    if not names:
        raise CLIError("there are no profiles to validate", "make one with `qrs profile new NAME`")
    reports = [validate_profile(layout, n) for n in names]
    if as_json:
        output.json_data({"strict": strict, "profiles": [r.to_dict() for r in reports]})
    else:
        for report in reports:
            _print_report(report, strict=strict)
        checkers = sorted({r.compose_checker for r in reports})
        output.info(f"Compose files checked by: {'; '.join(checkers)}")
    failed = [r.profile for r in reports if not r.passed(strict=strict)]
    if failed:
        what = "errors or warnings (--strict)" if strict else "errors"
        raise CLIError(
            f"{len(failed)} of {len(reports)} profile(s) have {what}: {', '.join(failed)}",
            "fix what is marked above, then run the same command again",
            EXIT_FAILED,
        )


def _print_report(report: ValidationReport, *, strict: bool) -> None:
    errors, warnings = len(report.errors), len(report.warnings)
    mark = "✗" if not report.passed(strict=strict) else ("!" if warnings else "✓")
    parts = ["invalid" if errors else "valid"]
    parts += [_count(errors, "error")] if errors else []
    parts += [_count(warnings, "warning")] if warnings else []
    output.data(f"{mark} {report.profile}: {', '.join(parts)}")
    for f in sorted(report.findings, key=lambda f: (f.severity != "error", f.file, f.line)):
        output.data(_finding_line(f))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _finding_line(f: Finding) -> str:
    where = f"{f.location}: " if f.location else ""
    line = f"  {f.severity:<7}  {where}{f.message}"
    return line + (f"\n           hint: {f.hint}" if f.hint else "")


def register(app: typer.Typer) -> None:
    app.add_typer(profile_app, name="profile")
