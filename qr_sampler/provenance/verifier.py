"""``qrs audit verify``: re-derive what a diagnostics log claims, from the files alone.

For every log under the path (a file with its rotated siblings, or each log in a directory):

1. **Chain** — each line's ``prev_hash`` (read from its fixed tail position) is the SHA-256 of
   the line before it, across rotated files; the first line of the log has 64 zeros (or the log
   starts at a rotated file whose predecessors were removed: a warning); the first line of each
   file is a manifest; a torn line is accepted only as the writer marks it (``journal.py``).
2. **u from z** — for each token record with entropy bytes (``entropy_sha256`` not empty):
   ``u == clamp(Φ(z), ε, 1−ε)`` within 1e-9 and ``z == (sample_mean − μ)/(σ/√sample_count)``
   within 1e-9·max(1, |z|), with μ, σ, ε from the manifest of the record's ``run_id``, which must
   come before it. Greedy rows, rows left to vLLM and forced stops carry no bytes: skipped.
3. **Archive** (``archive=DIR``) — each such record's bytes are read back through its
   ``entropy_ref``: their SHA-256 must equal ``entropy_sha256``, their count
   ``sample_count``, and z and u re-derived from them must equal the record's (same tolerances).
   A segment named by an ``archive_segment_dropped`` event (in the archive's ``events.jsonl`` or
   in the log) was dropped by the size bound: counted, not a failure. A segment that is absent
   without such an event, or does not decode, fails.

Speed: token lines are not parsed as JSON (``scan.py`` takes the values the checks need), each
line's link is compared from its fixed 80-byte tail, and the checks run as numpy array
operations per block. Manifests, events and any token line the scanner does not recognise are
parsed in full.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qr_sampler.provenance import scan
from qr_sampler.provenance.archive import (
    DROP_EVENT,
    EVENTS_FILE,
    ArchiveReader,
    dropped_segments,
)
from qr_sampler.provenance.chain import TAIL_KEY, TAIL_LEN, ZERO_HASH, line_hash, prev_hash_of
from qr_sampler.provenance.errors import ArchiveError, AuditInputError
from qr_sampler.provenance.inputs import LineBlock, check_is_jsonl, find_logs, read_blocks
from qr_sampler.provenance.naming import active_path_of, rotated_index

#: Absolute tolerance of u, and of z relative to max(1, |z|).
TOLERANCE = 1e-9
#: Problems kept in a report (all are counted).
MAX_KEPT = 50

_ZERO = ZERO_HASH.encode()
_SQRT2 = math.sqrt(2.0)
_NO_TAIL = b"\0" * TAIL_LEN
_TAIL_HEAD = np.frombuffer(TAIL_KEY, np.uint8)
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", np.uint8)
_NO_BYTES_SOURCES = ("none", "vllm")

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class Problem:
    """One finding, located: ``file:line: message``."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass
class LogResult:
    """What was checked in one log (a file and its rotated siblings)."""

    files: list[str]
    lines: int = 0
    tokens: int = 0
    manifests: int = 0
    events: int = 0
    run_ids: list[str] = field(default_factory=list)
    #: Token records whose u (and z) were re-derived from their own fields.
    u_checked: int = 0
    #: Token records without bytes (greedy, left to vLLM, forced stop): nothing to re-derive.
    without_bytes: int = 0
    #: With an archive: records whose bytes were read back, re-hashed and re-amplified.
    archive_checked: int = 0
    #: With an archive: records whose segment the size bound dropped (said by an event).
    archive_dropped: int = 0
    #: With an archive: records with bytes but no ``entropy_ref`` (archive off at the time).
    archive_absent: int = 0
    #: SHA-256 of the last line: publish it to anchor the log's end.
    head_hash: str = ""


@dataclass
class VerifyReport:
    """The outcome of :func:`verify`: ``ok`` is False when any problem was found."""

    path: str
    archive: str
    logs: list[LogResult]
    problems: list[Problem]
    problem_count: int
    warnings: list[Problem]
    seconds: float
    tolerance: float = TOLERANCE

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    @property
    def records(self) -> int:
        return sum(log.tokens for log in self.logs)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["problems"] = [asdict(p) | {"text": str(p)} for p in self.problems]
        data["warnings"] = [asdict(p) | {"text": str(p)} for p in self.warnings]
        data["first_problem"] = str(self.problems[0]) if self.problems else ""
        return data


def verify(
    path: str | Path,
    *,
    archive: str | Path | None = None,
    progress: ProgressCallback | None = None,
) -> VerifyReport:
    """Verify every log under ``path`` (see the module docstring). Raises
    :class:`AuditInputError` for input that is not diagnostics at all; everything else is a
    problem in the report."""
    started = time.perf_counter()
    logs = find_logs(path)
    for files in logs:
        check_is_jsonl(files)
    archive_dir = Path(archive) if archive is not None else None
    if archive_dir is not None and not archive_dir.is_dir():
        raise AuditInputError(
            f"no such archive directory: {archive_dir}",
            hint="pass the folder QR_ENTROPY_ARCHIVE_PATH names",
        )
    findings = _Findings()
    dropped: set[str] = set()
    results: list[LogResult] = []
    if archive_dir is not None:
        dropped.update(dropped_segments(archive_dir))
        events = archive_dir / EVENTS_FILE
        if events.is_file():
            results.append(_LogVerifier([events], None, dropped, findings).run(None))
    total = sum(f.stat().st_size for files in logs for f in files)
    meter = _Meter(total, progress)
    for files in logs:
        results.append(_LogVerifier(files, archive_dir, dropped, findings).run(meter))
    return VerifyReport(
        path=str(path),
        archive=str(archive_dir) if archive_dir is not None else "",
        logs=results,
        problems=findings.sorted_problems(),
        problem_count=findings.problem_count,
        warnings=findings.warnings[:MAX_KEPT],
        seconds=time.perf_counter() - started,
    )


# --- internals --------------------------------------------------------------------------------


class _Findings:
    """Problems and warnings, with the order of files so "first" means first in chain order."""

    def __init__(self) -> None:
        self.problems: list[tuple[int, int, Problem]] = []
        self.problem_count = 0
        self.warnings: list[Problem] = []
        self._order: dict[str, int] = {}

    def fail(self, file: Path, line: int, message: str) -> None:
        self.problem_count += 1
        rank = self._order.setdefault(str(file), len(self._order))
        self.problems.append((rank, line, Problem(str(file), line, message)))
        if len(self.problems) > 4 * MAX_KEPT:  # keep the earliest, bounded
            self.problems = sorted(self.problems, key=lambda p: p[:2])[:MAX_KEPT]

    def warn(self, file: Path, line: int, message: str) -> None:
        self._order.setdefault(str(file), len(self._order))
        self.warnings.append(Problem(str(file), line, message))

    def register(self, file: Path) -> None:
        self._order.setdefault(str(file), len(self._order))

    def sorted_problems(self) -> list[Problem]:
        return [p for _, _, p in sorted(self.problems, key=lambda p: p[:2])[:MAX_KEPT]]


class _Meter:
    def __init__(self, total: int, callback: ProgressCallback | None) -> None:
        self.total, self.done, self.callback = total, 0, callback

    def add(self, size: int) -> None:
        self.done += size
        if self.callback is not None:
            self.callback(self.done, self.total)


@dataclass(frozen=True)
class _Fragment:
    """An unreadable line waiting to see whether the next line marks it as torn."""

    file: Path
    line: int
    sha256: str
    size: int
    before: bytes  # hash of the line before it
    own: bytes  # its own hash


@dataclass
class _Run:
    """A manifest's identity and the settings the checks need."""

    ordinal: int
    mean: float | None
    std: float | None
    eps: float | None


def _loads(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


class _LogVerifier:
    """Walks one log's files in order, keeping the chain state across blocks and files."""

    def __init__(
        self,
        files: Sequence[Path],
        archive: Path | None,
        dropped: set[str],
        findings: _Findings,
    ) -> None:
        self.files = list(files)
        self.archive = archive
        self.reader = ArchiveReader(archive) if archive is not None else None
        self.dropped = dropped
        self.findings = findings
        self.result = LogResult(files=[str(f) for f in self.files])
        self.prev = _ZERO
        self.ordinal = 0  # lines seen before the current block
        self.pending: _Fragment | None = None
        self.runs: dict[str, _Run] = {}
        #: Rows whose segment is absent, judged at the end (a drop event may come later).
        self.missing: list[tuple[Path, int, str]] = []
        self._batch = scan.TokenBatch()
        for f in self.files:
            findings.register(f)

    def run(self, meter: _Meter | None) -> LogResult:
        for path in self.files:
            for block in read_blocks(path):
                self._block(block)
                self.ordinal += len(block.lines)
                if meter is not None:
                    meter.add(block.size)
        if self.pending is not None:
            frag, self.pending = self.pending, None
            self.findings.fail(frag.file, frag.line, "not a JSON line")
        for file, line, segment in self.missing:
            if segment in self.dropped:
                self.result.archive_dropped += 1
            else:
                self.findings.fail(
                    file,
                    line,
                    f"archived bytes are missing: segment {segment} is not in the archive and "
                    f"no {DROP_EVENT} event says the size bound removed it",
                )
        if self.result.archive_dropped:
            self.findings.warn(
                self.files[0],
                0,
                f"{self.result.archive_dropped} records' bytes were dropped from the archive by "
                "its size bound (QR_ENTROPY_ARCHIVE_MAX_BYTES): not re-derived",
            )
        self.result.head_hash = self.prev.decode()
        self.result.run_ids = sorted(self.runs)
        return self.result

    # --- one block: the chain walk ------------------------------------------------------------

    def _block(self, block: LineBlock) -> None:
        lines = block.lines
        count = len(lines)
        sha = hashlib.sha256
        digests = [sha(line).digest() for line in lines]
        good = self._links_ok(lines, digests)
        if block.first_line == 1 or self.pending is not None:
            good[0] = False  # a file's first line, or the line after an unreadable one
        if block.unterminated:
            good[-1] = False
        self._batch = scan.TokenBatch()
        odd = np.flatnonzero(~good).tolist()
        last_prev: bytes | None = None
        i = 0
        while i < len(odd):  # in line order: the torn-line rule looks one line ahead
            k = odd[i]
            i += 1
            prev = self.prev if k == 0 else digests[k - 1].hex().encode()
            new_prev = self._odd(block, k, lines[k], prev)
            if self.pending is not None and k + 1 < count and good[k + 1]:
                good[k + 1] = False
                odd.insert(i, k + 1)
            if k == count - 1:
                last_prev = new_prev
        self.prev = last_prev if last_prev is not None else digests[-1].hex().encode()
        self.result.lines += count
        head = scan.heads(lines)
        token = scan.is_token(head)
        for k in np.flatnonzero(good & ~token).tolist():
            self._record(block, k, _loads(lines[k]))
        tokens, where = np.flatnonzero(token), np.flatnonzero(good & token)
        if len(where):
            archive = self.reader is not None
            found = scan.scan_block(block, head, tokens, where, hashes=archive, refs=archive)
            if found is None:  # not uniformly in C2 order: line by line
                for k in where.tolist():
                    self._scan_one(block, k)
            else:
                self.result.tokens += len(where)
                self._batch.extend(block.first_line + where, self.ordinal + where, found)
        self._check_tokens(block.path, self._batch)

    def _links_ok(self, lines: list[bytes], digests: list[bytes]) -> np.ndarray:
        """Per line: its tail is ``,"prev_hash":"<hex>"}`` and the hex is the previous line's
        SHA-256 (bool [n]); as array operations over the lines' fixed-size tails."""
        count = len(lines)
        tails = b"".join([line[-TAIL_LEN:] if len(line) > TAIL_LEN else _NO_TAIL for line in lines])
        tail = np.frombuffer(tails, np.uint8).reshape(count, TAIL_LEN)
        key_ok = (tail[:, :14] == _TAIL_HEAD).all(1) & (tail[:, -2] == 34) & (tail[:, -1] == 125)
        # The expected links as lowercase hex text: the carried-in hash, then each digest.
        previous = np.empty((count, 32), dtype=np.uint8)
        previous[0] = np.frombuffer(bytes.fromhex(self.prev.decode()), np.uint8)
        if count > 1:
            previous[1:] = np.frombuffer(b"".join(digests[:-1]), np.uint8).reshape(count - 1, 32)
        expected = np.empty((count, 64), dtype=np.uint8)
        expected[:, 0::2] = _HEX_DIGITS[previous >> 4]
        expected[:, 1::2] = _HEX_DIGITS[previous & 15]
        return key_ok & (tail[:, 14:78] == expected).all(1)  # type: ignore[no-any-return]

    def _scan_one(self, block: LineBlock, k: int) -> None:
        line = block.lines[k]
        values = scan.scan_line(line)
        if values is None:
            self._record(block, k, _loads(line), self._batch)
            return
        self.result.tokens += 1
        match = scan.REF.search(line) if self.reader is not None else None
        ref = match[1].decode() if match is not None else ""
        self._batch.add(block.first_line + k, self.ordinal + k, values, ref)

    def _odd(self, block: LineBlock, k: int, line: bytes, prev: bytes) -> bytes:
        """A line off the fast path: a broken link, the first line of a file, a torn line."""
        file, number = block.path, block.first_line + k
        if self.pending is not None:
            frag, self.pending = self.pending, None
            if self._marks(line, frag):
                self.findings.warn(
                    frag.file,
                    frag.line,
                    f"torn line ({frag.size} bytes) from an interrupted write, marked by the "
                    f"next writer at line {number}: the record in it is lost",
                )
                self._record(block, k, _loads(line))
                return line_hash(line)
            self.findings.fail(frag.file, frag.line, "not a JSON line")
            prev = frag.own
        value = _loads(line)
        if value is None:
            if block.unterminated:
                self.findings.warn(
                    file,
                    number,
                    f"the file ends in an incomplete line ({len(line)} bytes, no newline): an "
                    "interrupted write; the record in it is lost",
                )
                return prev
            own = line_hash(line)
            self.pending = _Fragment(
                file, number, hashlib.sha256(line).hexdigest(), len(line), prev, own
            )
            return own
        link = prev_hash_of(line)
        if link is None:
            self.findings.fail(file, number, "no prev_hash as the last key")
        elif link != prev:
            self._broken_link(block, k, link, value)
        if block.first_line == 1 and k == 0 and value.get("kind") != "manifest":
            self.findings.fail(file, number, "the first line of a file is not a manifest")
        if block.unterminated:
            self.findings.warn(file, number, "no newline at the end of the file")
        self._record(block, k, value, self._batch)
        return line_hash(line)

    def _marks(self, line: bytes, frag: _Fragment) -> bool:
        """Is ``line`` the writer's ``torn_line`` event for ``frag``, chained past it?"""
        value = _loads(line)
        return (
            value is not None
            and value.get("kind") == "event"
            and value.get("event") == "torn_line"
            and value.get("torn_sha256") == frag.sha256
            and value.get("torn_bytes") == frag.size
            and prev_hash_of(line) == frag.before
        )

    def _broken_link(self, block: LineBlock, k: int, link: bytes, value: dict[str, Any]) -> None:
        file, number = block.path, block.first_line + k
        if self.ordinal + k == 0:  # the first line of the log
            index = value.get("file_index")
            rotated = rotated_index(active_path_of(file), file)
            if (isinstance(index, int) and index > 0) or (rotated or 0) > 0:
                self.findings.warn(
                    file,
                    number,
                    f"the log starts at file_index {index}: the files before it are absent, so "
                    "its first link is not checked",
                )
            else:
                self.findings.fail(
                    file, number, "prev_hash of the first line is not 64 zeros (lines removed?)"
                )
            return
        if self.findings.problem_count > MAX_KEPT:
            self.findings.fail(file, number, "prev_hash does not match the line before")
            return
        where = {line_hash(other): j for j, other in enumerate(block.lines)}.get(link)
        if where is not None and where > k:
            why = (
                f"lines are out of order: its prev_hash is the hash of line "
                f"{block.first_line + where}, which comes after it"
            )
        elif where is not None and where < k - 1:
            why = (
                f"its prev_hash is the hash of line {block.first_line + where}: the lines "
                "between were inserted or moved"
            )
        elif k == 0 and block.first_line == 1:
            why = (
                "prev_hash does not match the last line of the previous file: a file is "
                "missing between them, or that line was changed"
            )
        else:
            why = (
                "prev_hash does not match the line before: that line was changed, or lines "
                "between them were removed"
            )
        self.findings.fail(file, number, why)

    # --- records ------------------------------------------------------------------------------

    def _record(
        self,
        block: LineBlock,
        k: int,
        value: dict[str, Any] | None,
        batch: scan.TokenBatch | None = None,
    ) -> None:
        """Count and check one parsed line (tokens go into ``batch`` for the numeric checks)."""
        file, number, ordinal = block.path, block.first_line + k, self.ordinal + k
        if value is None:
            self.findings.fail(file, number, "not a JSON object")
            return
        kind = value.get("kind")
        if kind == "manifest":
            self.result.manifests += 1
            self._manifest(value, ordinal)
        elif kind == "event":
            self.result.events += 1
            if value.get("event") == DROP_EVENT:
                self.dropped.add(str(value.get("segment", "")))
        elif kind == "token":
            self.result.tokens += 1
            values = self._token_values(value, file, number)
            if values is not None and batch is not None:
                ref = value.get("entropy_ref")
                batch.add(number, ordinal, values, ref if isinstance(ref, str) else "")
        elif not isinstance(kind, str):
            self.findings.fail(file, number, 'no "kind" key')

    def _manifest(self, value: dict[str, Any], ordinal: int) -> None:
        run_id = str(value.get("run_id", ""))
        settings = value.get("settings")
        settings = settings if isinstance(settings, dict) else {}

        def number(key: str) -> float | None:
            item = settings.get(key)
            if isinstance(item, bool) or not isinstance(item, int | float):
                return None
            return float(item)

        known = self.runs.get(run_id)
        if known is None or ordinal < known.ordinal:  # blocks register out of line order
            self.runs[run_id] = _Run(
                ordinal,
                number("population_mean"),
                number("population_std"),
                number("uniform_clamp_epsilon"),
            )

    def _token_values(
        self, value: dict[str, Any], file: Path, number: int
    ) -> tuple[str, str, float, float, float, int] | None:
        """The checked values of a parsed token record; None when it has no bytes to check."""
        sha = value.get("entropy_sha256")
        if sha is None:  # a log from before entropy_sha256: judge by what the record says
            no_bytes = (
                value.get("greedy") is True
                or value.get("forced_stop") is True
                or value.get("source") in _NO_BYTES_SOURCES
            )
            sha = "" if no_bytes else "?"
        if not isinstance(sha, str) or not re.fullmatch(r"|\?|[0-9a-f]{64}", sha):
            self.findings.fail(file, number, "entropy_sha256 is not 64 hex digits or empty")
            return None
        fields = {}
        for key in ("u", "z", "sample_mean"):
            item = value.get(key)
            if sha and not (isinstance(item, int | float) and not isinstance(item, bool)):
                self.findings.fail(file, number, f"{key} is not a number: {item!r}")
                return None
            fields[key] = float(item) if isinstance(item, int | float) else math.nan
        count = value.get("sample_count")
        if sha and not (isinstance(count, int) and not isinstance(count, bool) and count > 0):
            self.findings.fail(file, number, f"sample_count is not a positive integer: {count!r}")
            return None
        run = value.get("run_id")
        return (
            run if isinstance(run, str) else "",
            sha,
            fields["u"],
            fields["z"],
            fields["sample_mean"],
            count if isinstance(count, int) else 0,
        )

    def _check_tokens(self, file: Path, batch: scan.TokenBatch) -> None:
        """The numeric checks of one block's token records, as array operations."""
        if not len(batch):
            return
        cols = batch.columns()
        with_bytes = np.fromiter(map(len, cols.sha), dtype=np.int64, count=len(cols.sha)) > 0
        self.result.without_bytes += int((~with_bytes).sum())
        take = np.flatnonzero(with_bytes)
        if not len(take):
            return
        # Per record: its manifest's line ordinal and settings (NaN: no usable manifest).
        names = list(set(cols.run))
        table = np.array([self._run_row(run) for run in names], dtype=np.float64)
        if len(names) == 1:  # one run: the usual case
            rows = np.broadcast_to(table[0], (len(take), 4))
        else:
            index = {run: i for i, run in enumerate(names)}
            rows = table[np.array([index[cols.run[i]] for i in take.tolist()], dtype=np.intp)]
        ordinal = cols.ordinal[take]
        known = np.isfinite(rows).all(1) & (rows[:, 0] <= ordinal)
        for j in np.flatnonzero(~known).tolist():
            run_id = cols.run[take[j]].decode(errors="replace")
            if math.isnan(rows[j, 0]) or rows[j, 0] > ordinal[j]:
                why = f"no manifest for run_id {run_id!r} before this record"
            else:
                why = (
                    f"the manifest of run_id {run_id!r} lacks settings.population_mean, "
                    "population_std or uniform_clamp_epsilon"
                )
            self.findings.fail(file, int(cols.line[take[j]]), why)
        take, rows = take[known], rows[known]
        if not len(take):
            return
        u, z, mean, count = cols.numbers[take].T
        mu, sigma, eps = rows[:, 1], rows[:, 2], rows[:, 3]
        with np.errstate(all="ignore"):
            z_expected = (mean - mu) / (sigma / np.sqrt(count))
            z_ok = np.abs(z - z_expected) <= TOLERANCE * np.maximum(1.0, np.abs(z))
            u_expected = np.clip(_phi(z), eps, 1.0 - eps)
            u_ok = np.abs(u - u_expected) <= TOLERANCE
        self.result.u_checked += len(take)
        for j in np.flatnonzero(~(z_ok & u_ok)).tolist():
            line = int(cols.line[take[j]])
            if not z_ok[j]:
                why = (
                    f"z = {float(z[j])!r} but (sample_mean − μ)/(σ/√n) = "
                    f"{float(z_expected[j])!r} (tolerance {TOLERANCE:g})"
                )
            else:
                why = (
                    f"u = {float(u[j])!r} but clamp(Φ(z)) = {float(u_expected[j])!r} (|Δ| = "
                    f"{abs(float(u[j]) - float(u_expected[j])):.3g}, tolerance {TOLERANCE:g})"
                )
            self.findings.fail(file, line, why)
        if self.reader is not None:
            for j, i in enumerate(take.tolist()):
                self._check_archived(
                    file,
                    int(cols.line[i]),
                    cols.ref[i].decode(errors="replace"),
                    cols.sha[i].decode(errors="replace"),
                    cols.numbers[i],
                    (float(mu[j]), float(sigma[j]), float(eps[j])),
                )

    def _run_row(self, run: bytes) -> tuple[float, float, float, float]:
        """(manifest ordinal, μ, σ, ε) of a run, NaN where unknown."""
        found = self.runs.get(run.decode(errors="replace"))
        if found is None:
            return (math.nan,) * 4
        return (
            float(found.ordinal),
            math.nan if found.mean is None else found.mean,
            math.nan if found.std is None else found.std,
            math.nan if found.eps is None else found.eps,
        )

    def _check_archived(
        self,
        file: Path,
        line: int,
        ref: str,
        sha: str,
        numbers: np.ndarray,
        settings: tuple[float, float, float],
    ) -> None:
        """Read one record's bytes back and re-derive its hash, count, z and u."""
        assert self.reader is not None
        if not ref:
            self.result.archive_absent += 1
            return
        try:
            data = self.reader.read(ref)
        except ArchiveError as exc:
            if exc.reason == "missing":
                self.missing.append((file, line, exc.segment))
            else:
                self.findings.fail(file, line, f"archived bytes unreadable: {exc}")
            return
        self.result.archive_checked += 1
        record_u, record_z, _, record_count = (float(v) for v in numbers)
        if hashlib.sha256(data).hexdigest() != sha:
            self.findings.fail(
                file,
                line,
                "entropy_sha256 does not match the archived bytes (the record or the archive "
                "was changed)",
            )
            return
        if len(data) != record_count:
            self.findings.fail(
                file, line, f"sample_count is {record_count:g} but {len(data)} bytes are archived"
            )
            return
        mu, sigma, eps = settings
        total = int(np.frombuffer(data, dtype=np.uint8).sum(dtype=np.int64))
        z = (total / len(data) - mu) / (sigma / math.sqrt(len(data)))
        u = min(max(0.5 * math.erfc(-z / _SQRT2), eps), 1.0 - eps)
        if abs(z - record_z) > TOLERANCE * max(1.0, abs(z)):
            self.findings.fail(
                file, line, f"z from the archived bytes is {z!r}, the record says {record_z!r}"
            )
        elif abs(u - record_u) > TOLERANCE:
            self.findings.fail(
                file, line, f"u from the archived bytes is {u!r}, the record says {record_u!r}"
            )


def _phi(z: np.ndarray) -> np.ndarray:
    """Φ(z) = erfc(−z/√2)/2, accurate in both tails (numpy has no erfc; one call per value)."""
    scaled = (-z / _SQRT2).tolist()
    return 0.5 * np.fromiter(map(math.erfc, scaled), dtype=np.float64, count=len(scaled))
