"""``qrs audit verify | report``: check a diagnostics log from the files alone, and summarise it.

Thin by design: :func:`qr_sampler.provenance.verifier.verify` and
:func:`qr_sampler.provenance.report.build_report` do the work and return data; this module
parses options, shows progress on a terminal, renders text, JSON or HTML, and maps the outcome
to an exit code (0 verified, 1 a check failed, 2 usage or unreadable input). The provenance
library (numpy) loads inside the commands, so ``qrs --help`` does not pay for it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer

from qrs_cli import output
from qrs_cli.errors import EXIT_FAILED, EXIT_USAGE, CLIError

#: Inputs at least this large get a progress line (on a terminal only).
PROGRESS_MIN_BYTES = 32 * 1024 * 1024

audit_app = typer.Typer(
    name="audit",
    help="Verify diagnostics files (hash chain, u from z, archived bytes) and report on them.",
    no_args_is_help=True,
)

PathArgument = Annotated[
    str,
    typer.Argument(
        metavar="PATH",
        help="A diagnostics file (QR_DIAGNOSTICS_PATH; its rotated siblings are included) or a "
        "folder of them.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]

_VERIFY_HELP = """Verify a diagnostics log from the files alone.

Checks every line's prev_hash (the SHA-256 of the line before, across rotated files), each
token record's u = clamp(Φ(z)) and z from sample_mean with the manifest's settings (within
1e-9), and with --archive each record's entropy_sha256, z and u re-derived from its archived
bytes. Segments the archive's size bound dropped are reported as such, not as failures.

\b
Exit codes:
  0  everything holds (warnings allowed, e.g. a torn line from a crash)
  1  a check failed: the first bad line is named as FILE:LINE with the reason
  2  usage: missing file, not a JSONL diagnostics file, no such archive folder
"""


@audit_app.command("verify", help=_VERIFY_HELP)
def verify_command(
    path: PathArgument,
    archive: Annotated[
        Path | None,
        typer.Option(
            "--archive",
            metavar="DIR",
            help="The entropy archive (QR_ENTROPY_ARCHIVE_PATH): re-derive each record from "
            "its bytes.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Verify PATH (the full help text is _VERIFY_HELP)."""
    from qr_sampler.provenance.verifier import verify
    from qrs_cli.audit.text import verify_lines

    with _input_errors(), _progress(Path(path), "verify") as progress:
        report = verify(path, archive=archive, progress=progress)
    if as_json:
        output.json_data(report.to_dict())
    else:
        for line in verify_lines(report):
            output.data(line)
    if not report.ok:
        raise CLIError(
            f"verification failed at {report.problems[0]}",
            "the first problem is listed first; a changed, removed or reordered line breaks "
            "the link of the line after it",
            EXIT_FAILED,
        )


@audit_app.command("report")
def report_command(
    path: PathArgument,
    as_json: JsonOption = False,
    html_out: Annotated[
        Path | None,
        typer.Option(
            "--html",
            metavar="OUT",
            help="Also write one self-contained HTML page (u histogram, QQ plot, z histogram).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
) -> None:
    """Summarise a diagnostics log: u uniformity, z, sources, fallbacks over time.

    u uniformity over the records with entropy bytes (Kolmogorov–Smirnov against U(0,1) and χ²
    on deciles, each with its p-value), mean and SD of z with 95 % intervals, tokens by source,
    fallbacks by kind, rows left to vLLM and forced stops over time, health-test fallbacks,
    nonce echo counts. --html also writes one self-contained page with the plots.
    """
    from qr_sampler.provenance.report import build_report
    from qrs_cli.audit.text import report_lines

    if html_out is not None:
        _check_writable(html_out, force)
    with _input_errors(), _progress(Path(path), "report") as progress:
        report = build_report(path, progress=progress)
    if html_out is not None:
        from qrs_cli.audit.html import render_html

        _atomic_write(html_out, render_html(report.summary, report.u, report.z))
        output.info(f"wrote {html_out}")
    if as_json:
        output.json_data(report.to_dict())
    else:
        for line in report_lines(report.summary):
            output.data(line)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


# --- helpers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _input_errors() -> Iterator[None]:
    """Unreadable input is a usage error (exit 2) with the library's hint."""
    from qr_sampler.provenance.errors import AuditInputError

    try:
        yield
    except AuditInputError as exc:
        raise CLIError(str(exc), exc.hint or "see `qrs audit --help`", EXIT_USAGE) from None


@contextlib.contextmanager
def _progress(path: Path, verb: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress line on stderr for large inputs, only when stderr is a terminal."""
    if not sys.stderr.isatty() or _input_size(path) < PROGRESS_MIN_BYTES:
        yield None
        return
    line = output.StatusLine()

    def show(done: int, total: int) -> None:
        percent = 100 * done // max(total, 1)
        line.update(f"{verb}: {percent}% ({done / 1e6:,.1f} of {total / 1e6:,.1f} MB)")

    try:
        yield show
    finally:
        line.clear()


def _input_size(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
        parent = path.parent
        return sum(p.stat().st_size for p in parent.iterdir() if p.name.startswith(path.stem))
    except OSError:
        return 0


def _check_writable(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise CLIError(
            f"{out} already exists",
            "pass --force to replace it, or choose another --html path",
            EXIT_USAGE,
        )
    if out.is_dir():
        raise CLIError(f"{out} is a folder", "give --html a file name, e.g. report.html")
    if not out.parent.is_dir():
        raise CLIError(
            f"no such folder: {out.parent}", "create it first, or choose another --html path"
        )


def _atomic_write(path: Path, text: str) -> None:
    """Write all at once (temp file in the same folder, fsync, rename): never half a page."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
