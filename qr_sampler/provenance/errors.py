"""Errors of the provenance package.

The tree::

    QRSamplerError                  (qr_sampler.errors) root of the whole package
    └── ProvenanceError             a provenance file could not be read as one
        ├── AuditInputError         the input is not what a verifier can read: a missing file or
        │                           folder, a file that is not JSONL, no diagnostics file found
        └── ArchiveError            one row's archived bytes cannot be returned; ``reason`` says
                                    why: ``bad_ref`` (not a reference this archive writes),
                                    ``missing`` (its segment file is absent) or ``corrupt``
                                    (the compressed frame does not decode, or is short)

The writers (:class:`~qr_sampler.provenance.RecordJournal`,
:class:`~qr_sampler.provenance.EntropyArchive`) raise none of these: they run beside the engine
and switch themselves off instead (their ``error`` attribute says why).
"""

from __future__ import annotations

from typing import Literal

from qr_sampler.errors import QRSamplerError

ArchiveProblem = Literal["bad_ref", "missing", "corrupt"]


class ProvenanceError(QRSamplerError):
    """Root of the errors raised while reading diagnostics files and archives."""


class AuditInputError(ProvenanceError):
    """Raised when a path given to a verifier cannot be read as diagnostics (a usage error)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


class ArchiveError(ProvenanceError):
    """Raised when an archived row cannot be returned; ``reason`` is the machine-readable why."""

    def __init__(self, message: str, *, reason: ArchiveProblem, segment: str = "") -> None:
        super().__init__(message)
        self.reason: ArchiveProblem = reason
        self.segment = segment
