"""``qrs profile new | set-key | list | show | validate``: make and check deployment profiles.

Thin by design: each command turns its options into a call to :mod:`qrs_cli.profiles` and renders
the data it returns. That package (pydantic, jinja2, yaml, subprocess) is imported inside the
commands, so ``qrs --help`` does not pay for it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from qrs_cli import output
from qrs_cli.commands.completion import complete_profile
from qrs_cli.errors import EXIT_FAILED, CLIError

if TYPE_CHECKING:
    from qrs_cli.profiles.create import FileChange, ProfilePlan
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


ProfileName = Annotated[str, typer.Argument(
    metavar="PROFILE", help="Profile under deployments/, e.g. urandom.",
    autocompletion=complete_profile)]


def _answer(flag: str, key: str, what: str = "", metavar: str = "TEXT") -> Any:
    """An answer flag. Parsed by the schema, not Typer, so every bad value gets the same
    one-line ``Error:``/``Hint:`` as in a profile's ``.env``; ``metavar`` still names its type
    (INTEGER, PORT, a list of choices) the way typed options elsewhere do."""
    return typer.Option(
        flag, metavar=metavar, help=f"{what} ({key})." if what else f"Sets {key}.",
        show_default=False,
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
    name: Annotated[str, typer.Argument(
        metavar="PROFILE", help="Folder name under deployments/, e.g. my-qrng.")],
    source: Annotated[str | None, _answer(
        "--source", "QR_ENTROPY_SOURCE_TYPE", "Entropy source: system, quantum_grpc, "
        "mock_uniform, timing_noise or a plugin's name")] = None,
    address: Annotated[str | None, _answer(
        "--address", "QR_GRPC_SERVER_ADDRESS", "Entropy server: host:port, [v6]:port or "
        "unix:///path", "ADDRESS")] = None,
    mode: Annotated[str | None, _answer(
        "--mode", "QR_GRPC_MODE", "How the client calls the server",
        "[unary|server_streaming|bidi_streaming]")] = None,
    method_path: Annotated[str | None, _answer(
        "--method-path", "QR_GRPC_METHOD_PATH", "Unary method, /package.Service/Method",
        "PATH")] = None,
    stream_method_path: Annotated[str | None, _answer(
        "--stream-method-path", "QR_GRPC_STREAM_METHOD_PATH", "Streaming method, "
        "/package.Service/Method, or '' for none", "PATH")] = None,
    api_key_header: Annotated[str | None, _answer(
        "--api-key-header", "QR_GRPC_API_KEY_HEADER", "Metadata header of the API key",
        "NAME")] = None,
    max_bytes_per_request: Annotated[str | None, _answer(
        "--max-bytes-per-request", "QR_GRPC_MAX_BYTES_PER_REQUEST", "Most bytes the server "
        "gives per call; 0 = no cap", "INTEGER")] = None,
    rate_limit_per_min: Annotated[str | None, _answer(
        "--rate-limit-per-min", "QR_GRPC_RATE_LIMIT_PER_MIN", "Most calls a minute; 0 = none",
        "INTEGER")] = None,
    daily_byte_budget: Annotated[str | None, _answer(
        "--daily-byte-budget", "QR_GRPC_DAILY_BYTE_BUDGET", "Most bytes a UTC day; 0 = none",
        "INTEGER")] = None,
    sample_count: Annotated[str | None, _answer(
        "--sample-count", "QR_SAMPLE_COUNT", "Entropy bytes per token", "INTEGER")] = None,
    model: Annotated[str | None, _answer("--model", "HF_MODEL", "Model vLLM serves",
                                         "ID")] = None,
    port: Annotated[str | None, _answer("--port", "VLLM_PORT", "Host port of the API",
                                        "PORT")] = None,
    entropy_server_port: Annotated[str | None, _answer(
        "--entropy-server-port", "QRS_ENTROPY_SERVER_PORT", "Host port of the co-located "
        "entropy server", "PORT")] = None,
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
        str, typer.Option("--from", metavar="PROFILE", help="Start from another profile.",
                          autocompletion=complete_profile)
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
    force: Annotated[bool, typer.Option(
        "--force", help="Update an existing profile: values not given are kept; the diff is "
                        "shown and, on a terminal, confirmed.")] = False,
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="With --force: apply the changes without asking. When stdin is "
                            "not a terminal, --force needs --yes (or --no-input).")] = False,
    as_json: JsonOption = False,
    root: RootOption = None,
) -> None:
    """Make deployments/PROFILE/: an annotated .env, a README and, when needed, a Compose
    override.

    Answers come from flags, then prompts (on a terminal), then --from, then the defaults. The
    API key never goes on the command line: --api-key-env VAR or a hidden prompt. With --force
    on an existing profile, its own values come before the defaults (copier-style update), so
    only what you give changes; the diff is shown first.
    """
    from qrs_cli.profiles.create import ProfileRequest, plan_profile, write_plan
    from qrs_cli.profiles.discovery import find_project, require_base_stack

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
    require_base_stack(layout)
    updating = force and layout.profile_dir(name).is_dir()
    request = ProfileRequest(
        name=name,
        answers={k: v for k, v in flags.items() if v is not None},
        entropy_server=entropy_server,
        from_profile=from_profile,
        assignments=tuple(assignments or ()),
        api_key_env=api_key_env,
        force=force,
        keep_existing=updating,
    )
    interactive = not defaults and _stdin_is_tty()
    plan = plan_profile(layout, request, asker=_TerminalAsker() if interactive else None)
    if updating:
        # --no-input/--defaults say "ask nothing" as clearly as --yes does.
        if not _confirm_update(layout, plan, dry_run=dry_run, yes=yes or defaults,
                               interactive=interactive, as_json=as_json):
            return
    elif dry_run:
        if as_json:
            output.json_data(_plan_dict(layout, plan, dry_run=True))
        else:
            _print_plan(layout, plan)
        output.info(f"Dry run: nothing written to {layout.relative(plan.folder)}/.")
        return
    plan = write_plan(layout, plan, force=force)
    if as_json:
        output.json_data(_plan_dict(layout, plan, dry_run=False))
    else:
        for path in plan.written:
            output.data(layout.relative(path))
    output.info(
        f"Next: qrs profile validate {name}  (see {layout.relative(plan.folder)}/README.md)"
    )


def _confirm_update(layout: ProjectLayout, plan: ProfilePlan, *, dry_run: bool, yes: bool,
                    interactive: bool, as_json: bool) -> bool:
    """Show what ``--force`` would change; True when the files should be written.

    The diff goes to stdout for a dry run (it is the result) and to stderr otherwise (the
    result is the list of files written). On a terminal the user confirms; elsewhere --yes
    must say so, because a script that meant to create a profile must not rewrite one.
    """
    from qrs_cli.profiles.create import plan_changes

    changes = plan_changes(layout, plan)
    folder = layout.relative(plan.folder)
    if not changes:
        if as_json:
            output.json_data({**_plan_dict(layout, plan, dry_run=dry_run), "changes": []})
        output.info(f"{folder}/ already says exactly this: nothing to change.")
        return False
    if as_json and dry_run:
        output.json_data({**_plan_dict(layout, plan, dry_run=True),
                          "changes": [c.to_dict() for c in changes]})
    else:
        _print_changes(changes, to_stdout=dry_run)
    if dry_run:
        output.info(f"Dry run: nothing written to {folder}/.")
        return False
    if yes:
        return True
    if interactive:
        if _TerminalAsker().confirm(f"Apply these changes to {folder}/?", False):
            return True
        output.info("Nothing changed.")
        return False
    raise CLIError(
        f"profile {plan.name!r} exists; --force would change {_count(len(changes), 'file')} "
        "(shown above), and stdin is not a terminal to confirm it",
        "add --yes (or --no-input) to apply the changes, or --dry-run to only see them; to "
        f"store just an API key: qrs profile set-key {plan.name} --api-key-env VAR",
    )


def _print_changes(changes: list[FileChange], *, to_stdout: bool) -> None:
    emit = output.data if to_stdout else output.info
    for change in changes:
        if change.diff:
            emit(change.diff.rstrip("\n"))
        else:
            what = "contents not shown: secret" if change.kind == "replaced" else change.kind
            emit(f"==> {change.name}: {change.kind} ({what}) <==")


def _plan_dict(layout: ProjectLayout, plan: ProfilePlan, *, dry_run: bool) -> dict[str, Any]:
    return {
        "profile": plan.name,
        "folder": layout.relative(plan.folder),
        "dry_run": dry_run,
        "files": [layout.relative(plan.folder / f.name) for f in plan.files],
        "written": [layout.relative(p) for p in plan.written],
    }


def _print_plan(layout: ProjectLayout, plan: ProfilePlan) -> None:
    for f in plan.files:
        path = layout.relative(plan.folder / f.name)
        if f.secret:
            output.data(f"==> {path} (mode 0600; contents not shown: they are secret) <==\n")
            continue
        output.data(f"==> {path} <==\n{f.content}")


@profile_app.command("set-key")
def set_key(
    name: ProfileName,
    api_key_env: Annotated[str, typer.Option(
        "--api-key-env", metavar="VAR", show_default=False,
        help="Read the key from this environment variable.")] = "",
    from_stdin: Annotated[bool, typer.Option(
        "--stdin", help="Read the key from stdin (a hidden prompt on a terminal).")] = False,
    as_json: JsonOption = False,
    root: RootOption = None,
) -> None:
    """Store PROFILE's API key in its git-ignored secrets.env (mode 0600); nothing else changes.

    The key never goes on the command line: name a variable, or pipe it in (`--stdin`). Other
    lines of secrets.env are kept; no other file is touched.
    """
    from qrs_cli.profiles.discovery import existing_profile, find_project
    from qrs_cli.profiles.secrets_file import store_secret

    if bool(api_key_env) == from_stdin:
        raise CLIError("give the key one way: --api-key-env VAR or --stdin",
                       f"e.g. `read -rs K && export K && qrs profile set-key {name} "
                       "--api-key-env K`, or `qrs profile set-key NAME --stdin < keyfile`")
    layout = find_project(root)
    existing_profile(layout, name)  # unknown names fail before the key is read
    key = _key_from_env(api_key_env) if api_key_env else _key_from_stdin()
    stored = store_secret(layout, name, "QR_GRPC_API_KEY", key)
    if as_json:
        output.json_data({**stored.to_dict(), "path": layout.relative(stored.path)})
        return
    how = "replaced the key" if stored.replaced else "stored the key"
    output.data(f"✓ {how} of {name} in {layout.relative(stored.path)} (mode 0600, git-ignored)")
    output.info(f"Next: qrs probe {name}   (checks that the server accepts it)")


def _key_from_env(variable: str) -> str:
    from qr_sampler.envkeys import api_key_from_env

    return api_key_from_env(variable)


def _key_from_stdin() -> str:
    """The key from stdin: a hidden prompt on a terminal, else the first line of the input."""
    if _stdin_is_tty():
        return _TerminalAsker().secret("API key (hidden)").strip()
    output.info("set-key: reading the key from stdin")
    line = sys.stdin.readline()
    key = line.strip()
    if not key:
        raise CLIError("stdin held no key (the first line is empty)",
                       "pipe the key in, e.g. `qrs profile set-key NAME --stdin < keyfile`")
    return key


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
    name: ProfileName,
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
    name: Annotated[str | None, typer.Argument(
        metavar="PROFILE", help="Profile under deployments/ (or --all).", show_default=False,
        autocompletion=complete_profile)] = None,
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
