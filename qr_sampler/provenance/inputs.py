"""Finding the logs under a path and reading them line by line, in chain order.

Shared by the verifier and the report: a path is a diagnostics file (its rotated siblings are
included, oldest first, see ``naming.py``) or a directory (every ``*.jsonl`` log in it, each with
its siblings). Anything else is an :class:`AuditInputError` (a usage error for the CLI).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from qr_sampler.provenance.errors import AuditInputError
from qr_sampler.provenance.naming import active_path_of, chain_files

#: Bytes read per block: big enough to amortise per-block work, small enough to bound memory.
BLOCK = 16 * 1024 * 1024


@dataclass(frozen=True)
class LineBlock:
    """Complete lines of one file: ``lines[k]`` is line ``first_line + k`` (1-based), without
    its newline; ``data`` is the same lines joined by newlines (for whole-block scans).
    ``unterminated`` is True when the last line had no newline (end of file)."""

    path: Path
    first_line: int
    lines: list[bytes]
    unterminated: bool
    size: int
    data: bytes


def find_logs(path: str | os.PathLike[str]) -> list[list[Path]]:
    """The logs under ``path``: each a list of files in chain order."""
    target = Path(path)
    if target.is_dir():
        actives: dict[Path, None] = {}
        try:
            names = sorted(p for p in target.iterdir() if p.suffix == ".jsonl" and p.is_file())
        except OSError as exc:
            raise AuditInputError(f"cannot list {target}: {exc.strerror or exc}") from exc
        for name in names:
            actives.setdefault(active_path_of(name))
        logs = [chain_files(active) for active in actives]
        logs = [files for files in logs if files]
        if not logs:
            raise AuditInputError(
                f"{target} holds no .jsonl diagnostics file",
                hint="pass the diagnostics file itself (QR_DIAGNOSTICS_PATH)",
            )
        return logs
    if not target.exists():
        raise AuditInputError(
            f"no such file or directory: {target}",
            hint="pass the diagnostics file (QR_DIAGNOSTICS_PATH) or the folder that holds it",
        )
    if not target.is_file():
        raise AuditInputError(f"{target} is not a regular file")
    return [chain_files(target)]


def check_is_jsonl(files: list[Path]) -> None:
    """Fail fast, as a usage error, when a log's first line is not a JSON object."""
    import json

    for path in files:
        try:
            with path.open("rb") as handle:
                first = handle.readline(1024 * 1024)
        except OSError as exc:
            raise AuditInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if not first:
            continue
        try:
            value = json.loads(first)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise AuditInputError(
                f"{path} is not a JSONL diagnostics file (its first line is not a JSON object)",
                hint="pass the file QR_DIAGNOSTICS_PATH names",
            )
        return
    raise AuditInputError(
        f"{files[0]} is empty" if len(files) == 1 else f"{files[0]} and its siblings are empty",
        hint="the sampler writes the file once tokens have been generated",
    )


def read_blocks(path: Path, block: int = BLOCK) -> Iterator[LineBlock]:
    """Complete lines of ``path`` in blocks of about ``block`` bytes."""
    line_no = 1
    carry = b""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise AuditInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        while True:
            chunk = handle.read(block)
            if not chunk:
                break
            data = carry + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                continue
            carry = data[cut + 1 :]
            text = data[:cut]
            lines = text.split(b"\n")
            yield LineBlock(path, line_no, lines, False, cut + 1, text)
            line_no += len(lines)
    if carry:
        yield LineBlock(path, line_no, [carry], True, len(carry), carry)
