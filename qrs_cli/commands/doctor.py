"""``qrs doctor``: is this machine ready to run the plugin, and what is missing?

Thin by design: :func:`~qrs_cli.doctor.run_doctor` gathers the checks and this module renders
them — one line per category with ✓ / ! / ✗, the problems with their fix under it (every check
with its details under ``-v``), then a summary line; or the whole report with ``--json``. Exit
1 only when a check found an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from qrs_cli import output
from qrs_cli.errors import EXIT_FAILED

if TYPE_CHECKING:
    from qrs_cli.doctor import Check, DoctorReport

_MARKS = {"ok": "✓", "warn": "!", "error": "✗"}
_COLORS = {"ok": "\033[32m", "warn": "\033[33m", "error": "\033[31m"}


def doctor(
    verbose: Annotated[bool, typer.Option("--verbose", "-v",
                                          help="Show every check and its details.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    root: Annotated[str | None, typer.Option(
        "--root", envvar="QRS_ROOT", metavar="DIR",
        help="Project folder holding deployments/ (default: found from the working "
             "directory).")] = None,
) -> None:
    """Check Python and this package, vLLM, Docker, GPU, ports, profiles, Hugging Face and disk.

    Read-only, offline and quick (under 2 s; every tool it asks has a timeout). Exit 1 only
    when a check finds an error (✗); warnings (!) leave the exit code 0.
    """
    from qrs_cli.doctor import DoctorContext, run_doctor

    report = run_doctor(DoctorContext(root=root))
    if as_json:
        output.json_data(report.to_dict())
    else:
        _render(report, verbose)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


def _mark(status: str) -> str:
    import os
    import sys

    mark = _MARKS[status]
    if os.environ.get("NO_COLOR") or not sys.stdout.isatty():
        return mark
    return f"{_COLORS[status]}{mark}\033[0m"


def _render(report: DoctorReport, verbose: bool) -> None:
    for category in report.categories:
        shown = [c for c in category.checks if verbose or c.status != "ok"]
        headline = _headline(category.checks)
        output.data(f"[{_mark(category.status)}] {category.title}: {headline}")
        for check in shown:
            output.data(f"    {_mark(check.status)} {check.message}")
            if check.hint:
                output.data(f"      → {check.hint}")
            if verbose:
                for key, value in check.details.items():
                    output.data(f"        {key}: {_fmt(value)}")
    output.data("")
    problems = sum(1 for c in report.categories if c.status != "ok")
    if not problems:
        output.data(f"✓ No issues found ({report.duration_s:.2f} s).")
        return
    output.data(f"{'✗' if report.errors else '!'} Doctor found issues in {problems} "
                f"categor{'y' if problems == 1 else 'ies'}: {report.errors} error(s), "
                f"{report.warnings} warning(s) ({report.duration_s:.2f} s)."
                + ("" if verbose else " Run `qrs doctor -v` for details."))


def _headline(checks: tuple[Check, ...]) -> str:
    """The category's one-line summary: its worst problem, else its first finding."""
    for status in ("error", "warn"):
        found = [c for c in checks if c.status == status]
        if found:
            more = f" (+{len(found) - 1} more)" if len(found) > 1 else ""
            return found[0].message + more
    return checks[0].message if checks else "nothing to check"


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) or "-"
    return str(value)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
