"""Provenance a reviewer can verify from files alone (C2 of the wave contracts).

- :class:`RecordJournal` — the diagnostics file: hash-chained JSONL, a manifest at the top of
  every file, size-based rotation, safe with several writer processes.
- :class:`EntropyArchive` / :func:`read_archived` — every fetch's raw bytes, compressed and
  bounded, addressed from each token record (``entropy_ref``).
- :func:`build_manifest`, :func:`new_run_id`, :func:`sha256_rows` — what the recorder needs to
  fill a manifest and each record's ``entropy_sha256``.
- :func:`verify` (``qrs audit verify``) and :func:`build_report` (``qrs audit report``).

Importing this package loads neither torch nor pydantic; :func:`verify` and :func:`build_report`
need numpy (a core dependency), the archive's zstd segments need ``zstandard`` (``[audit]``).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qr_sampler.provenance.archive import EntropyArchive, read_archived
    from qr_sampler.provenance.chain import TOKEN_KEYS, ZERO_HASH, sha256_rows
    from qr_sampler.provenance.errors import ArchiveError, AuditInputError, ProvenanceError
    from qr_sampler.provenance.journal import RecordJournal
    from qr_sampler.provenance.manifest import build_manifest, new_run_id
    from qr_sampler.provenance.report import build_report
    from qr_sampler.provenance.verifier import verify

_EXPORTS = {
    "ArchiveError": "qr_sampler.provenance.errors",
    "AuditInputError": "qr_sampler.provenance.errors",
    "EntropyArchive": "qr_sampler.provenance.archive",
    "ProvenanceError": "qr_sampler.provenance.errors",
    "RecordJournal": "qr_sampler.provenance.journal",
    "TOKEN_KEYS": "qr_sampler.provenance.chain",
    "ZERO_HASH": "qr_sampler.provenance.chain",
    "build_manifest": "qr_sampler.provenance.manifest",
    "build_report": "qr_sampler.provenance.report",
    "new_run_id": "qr_sampler.provenance.manifest",
    "read_archived": "qr_sampler.provenance.archive",
    "sha256_rows": "qr_sampler.provenance.chain",
    "verify": "qr_sampler.provenance.verifier",
}

__all__ = [
    "TOKEN_KEYS",
    "ZERO_HASH",
    "ArchiveError",
    "AuditInputError",
    "EntropyArchive",
    "ProvenanceError",
    "RecordJournal",
    "build_manifest",
    "build_report",
    "new_run_id",
    "read_archived",
    "sha256_rows",
    "verify",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'qr_sampler.provenance' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
