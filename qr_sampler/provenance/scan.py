"""Reading the values the verifier checks from token lines without parsing them as JSON.

Why: ``json.loads`` of a ~900-byte record costs more than everything else the verifier does
per line. Token records are flat JSON objects (C2), so a key such as ``,"u":`` can only appear
as that key (inside a string every quote is escaped). Two paths:

- :func:`scan_block` — whole-block scans for lines in C2 key order (our writer's): ``run_id``
  second (read from each line's fixed-size head), u, z, sample_mean, sample_count together
  (one ``findall`` over the block, parsed by numpy in one call), ``entropy_sha256`` counted
  with a substring search. Each pattern occurs exactly once per token line and in no other kind
  of line, so the k-th match belongs to the k-th token line; when the counts say otherwise it
  returns None and the caller reads line by line.
- :func:`scan_line` — one line, any key order; None when a value is missing or not a number
  (the caller then parses the line as JSON, to say precisely what is wrong).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from qr_sampler.provenance.inputs import LineBlock

#: (run_id, entropy_sha256, u, z, sample_mean, sample_count) of one record.
Values = tuple[str, str, float, float, float, int]

TOKEN_PREFIX = b'{"kind":"token",'
_NUMBER = rb"(-?[0-9][0-9.eE+-]*)"
_RUN = re.compile(rb',"run_id":"([^"\\]*)"')
_SHA = re.compile(rb',"entropy_sha256":"([0-9a-f]*)"')
_SHA_KEY = b',"entropy_sha256":"'
_NO_SHA_KEY = b',"entropy_sha256":""'
_NO_SHA = re.compile(re.escape(_NO_SHA_KEY))
_U = re.compile(rb',"u":' + _NUMBER + rb"[,}]")
_Z = re.compile(rb',"z":' + _NUMBER + rb"[,}]")
_MEAN = re.compile(rb',"sample_mean":' + _NUMBER + rb"[,}]")
_COUNT = re.compile(rb',"sample_count":([0-9]+)[,}]')
REF = re.compile(rb',"entropy_ref":"([^"\\]*)"')
#: u, z, sample_mean and sample_count together, in the order C2 lists them.
_NUMBERS_SPAN = re.compile(
    rb'(,"u":-?[0-9][0-9.eE+-]*,"z":-?[0-9][0-9.eE+-]*,"sample_mean":-?[0-9][0-9.eE+-]*'
    rb',"sample_count":[0-9]+)(?=[,}])'
)
_NUMBER_KEYS = (b',"u":', b',"z":', b',"sample_mean":', b',"sample_count":')
#: How a C2 token line starts; run ids up to 80 bytes are read from the head.
_RUN_PREFIX = b'{"kind":"token","run_id":"'
_RUN_HEAD = np.frombuffer(_RUN_PREFIX, np.uint8)
HEAD_LEN = len(_RUN_PREFIX) + 81
_TOKEN_HEAD = np.frombuffer(TOKEN_PREFIX, np.uint8)


@dataclass(frozen=True)
class BlockValues:
    """The scanned token lines of a block: ``where`` (line indexes in the block, int64 [n]),
    ``numbers`` (float64 [n, 4]: u, z, sample_mean, sample_count), and per line its run id,
    its hash (``b"?"`` when only "has bytes" was asked) and its archive reference."""

    where: np.ndarray
    numbers: np.ndarray
    runs: list[bytes]
    shas: list[bytes]
    refs: list[bytes]


def heads(lines: list[bytes]) -> np.ndarray:
    """The first HEAD_LEN bytes of every line (uint8 [n, HEAD_LEN], short lines padded)."""
    joined = b"".join([line[:HEAD_LEN] for line in lines])
    if len(joined) != HEAD_LEN * len(lines):  # a short line somewhere: pad every head
        joined = b"".join([line[:HEAD_LEN].ljust(HEAD_LEN) for line in lines])
    return np.frombuffer(joined, np.uint8).reshape(len(lines), HEAD_LEN)


def is_token(head: np.ndarray) -> np.ndarray:
    """Which lines start like a token record (bool [n])."""
    return (head[:, : len(TOKEN_PREFIX)] == _TOKEN_HEAD).all(1)  # type: ignore[no-any-return]


def scan_block(
    block: LineBlock,
    head: np.ndarray,
    tokens: np.ndarray,
    where: np.ndarray,
    *,
    hashes: bool,
    refs: bool,
) -> BlockValues | None:
    """Values of the token lines ``where`` (a subset of all token lines ``tokens``), or None
    when the block is not uniformly in C2 order. ``hashes``: return the hashes themselves (else
    ``b"?"`` for any non-empty hash); ``refs``: return the archive references."""
    numbers = _NUMBERS_SPAN.findall(block.data)
    runs = head_runs(head[tokens])
    if len(numbers) != len(tokens) or block.data.count(_SHA_KEY) != len(tokens) or runs is None:
        return None
    if hashes:
        shas = _SHA.findall(block.data)
        if len(shas) != len(tokens):
            return None
    else:
        shas = [b"?"] * len(tokens)
        empty = _NO_SHA.finditer(block.data) if _NO_SHA_KEY in block.data else ()
        positions = [m.start() for m in empty]
        if positions:  # rows without bytes (greedy, left to vLLM): rare
            lines = np.searchsorted(line_starts(block), positions, side="right") - 1
            for j in np.searchsorted(tokens, lines).tolist():
                shas[j] = b""
    pick = np.searchsorted(tokens, where).tolist()
    if len(pick) != len(tokens):
        numbers = [numbers[j] for j in pick]
        shas = [shas[j] for j in pick]
        runs = [runs[j] for j in pick]
    text = b"".join(numbers)
    for key in _NUMBER_KEYS:
        text = text.replace(key, b" ")
    try:
        values = np.fromstring(text, dtype=np.float64, sep=" ").reshape(len(where), 4)
    except ValueError:  # a value that only looks like a number
        return None
    found: list[bytes] = []
    if refs:
        matches = [REF.search(block.lines[k]) for k in where.tolist()]
        found = [m[1] if m is not None else b"" for m in matches]
    return BlockValues(where, values, runs, shas, found)


def scan_line(line: bytes) -> Values | None:
    """The checked values of one token line, in any key order (None: parse it instead)."""
    try:
        return (
            _RUN.search(line)[1].decode(),  # type: ignore[index]
            _SHA.search(line)[1].decode(),  # type: ignore[index]
            float(_U.search(line)[1]),  # type: ignore[index]
            float(_Z.search(line)[1]),  # type: ignore[index]
            float(_MEAN.search(line)[1]),  # type: ignore[index]
            int(_COUNT.search(line)[1]),  # type: ignore[index]
        )
    except (TypeError, ValueError):  # a key is missing (None[1]) or a value is not a number
        return None


def line_starts(block: LineBlock) -> np.ndarray:
    """Offset of each line in ``block.data`` (int64 [n])."""
    newlines = np.flatnonzero(np.frombuffer(block.data, np.uint8) == 10)
    return np.concatenate(([0], newlines + 1))


def head_runs(head: np.ndarray) -> list[bytes] | None:
    """Each token line's run_id, read from its fixed-size head (C2 puts it second); None when
    a line does not start that way or its run id is long or escaped."""
    if not len(head):
        return []
    prefix = len(_RUN_HEAD)
    if not (head[:, :prefix] == _RUN_HEAD).all():
        return None
    window = head[:, prefix:]
    quote = window == 34
    if not quote.any(1).all():
        return None  # a run_id longer than the head
    ends = quote.argmax(1)
    if ((window == 92) & (np.arange(window.shape[1]) < ends[:, None])).any():
        return None  # an escape inside a run id: let the JSON parser read it
    first = window[0, : ends[0] + 1]  # the run id and its closing quote
    if (ends == ends[0]).all() and (window[:, : ends[0] + 1] == first).all():
        return [first[:-1].tobytes()] * len(head)  # one run in the block: the usual case
    return [row[:end].tobytes() for row, end in zip(window, ends.tolist(), strict=True)]


class TokenBatch:
    """One block's token records to check, as columns: bulk-scanned arrays plus single rows."""

    def __init__(self) -> None:
        self._bulk: list[BlockValues] = []
        self._bulk_at: list[tuple[np.ndarray, np.ndarray]] = []
        self._rows: list[tuple[int, int, str, str, float, float, float, int, str]] = []

    def add(self, line: int, ordinal: int, values: Values, ref: str) -> None:
        """One parsed (or individually scanned) record at file line ``line``."""
        run, sha, u, z, mean, count = values
        self._rows.append((line, ordinal, run, sha, u, z, mean, count, ref))

    def extend(self, lines: np.ndarray, ordinals: np.ndarray, values: BlockValues) -> None:
        """Bulk-scanned records at file lines ``lines`` (int64 [n])."""
        self._bulk.append(values)
        self._bulk_at.append((lines, ordinals))

    def __len__(self) -> int:
        return len(self._rows) + sum(len(part.where) for part in self._bulk)

    def columns(self) -> Columns:
        lines = [at[0] for at in self._bulk_at]
        ordinals = [at[1] for at in self._bulk_at]
        numbers = [part.numbers for part in self._bulk]
        runs: list[bytes] = []
        shas: list[bytes] = []
        refs: list[bytes] = []
        for part in self._bulk:
            runs += part.runs
            shas += part.shas
            refs += part.refs if part.refs else [b""] * len(part.runs)
        if self._rows:
            rows = list(zip(*self._rows, strict=True))
            lines.append(np.array(rows[0], dtype=np.int64))
            ordinals.append(np.array(rows[1], dtype=np.int64))
            numbers.append(np.array(rows[4:8], dtype=np.float64).T.reshape(-1, 4))
            runs += [str(r).encode() for r in rows[2]]
            shas += [str(s).encode() for s in rows[3]]
            refs += [str(r).encode() for r in rows[8]]
        return Columns(
            line=np.concatenate(lines),
            ordinal=np.concatenate(ordinals),
            numbers=np.concatenate(numbers),
            run=runs,
            sha=shas,
            ref=refs,
        )


@dataclass(frozen=True)
class Columns:
    """A batch as arrays: file line, line ordinal in the log, the four numbers, and bytes."""

    line: np.ndarray  # int64 [n]
    ordinal: np.ndarray  # int64 [n]
    numbers: np.ndarray  # float64 [n, 4]: u, z, sample_mean, sample_count
    run: list[bytes]
    sha: list[bytes]
    ref: list[bytes]
