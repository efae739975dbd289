"""The line format every provenance file shares, and the hash chain through it.

A line is one compact JSON object (``separators=(",", ":")``, ASCII, no NaN or infinity: a
non-finite float is written as ``null``) whose first key is ``"kind"`` and whose last key is
``"prev_hash"``: the hex SHA-256 of the previous line's bytes without its ``"\\n"``. The first
line of a chain has 64 zeros. So every line ends with the same 80 bytes::

    ,"prev_hash":"<64 lowercase hex>"}

which lets a verifier take the link from a fixed position instead of parsing the line, and lets a
writer append the link to an already serialised body without serialising again.

Why a chain: changing, removing or reordering any line breaks the link of the line after it. The
last line of a chain has no successor, so writers end a chain they close with an ``event`` line
(its contents are not evidence of anything), and a reviewer who wants to rule out a rewritten
tail compares the final hash (``qrs audit verify`` prints it) with one published at the time.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: ``prev_hash`` of the first line of a chain.
ZERO_HASH = "0" * 64
#: The bytes before the hash in every line's tail.
TAIL_KEY = b',"prev_hash":"'
#: Length of a line's tail: ``,"prev_hash":"`` + 64 hex + ``"}``.
TAIL_LEN = len(TAIL_KEY) + 64 + 2

_ZERO = ZERO_HASH.encode()

#: The keys of a token record in C2's order. A writer need not follow it (any order verifies),
#: but ``qrs audit verify`` reads records in this order without parsing them: ``run_id`` second
#: and u, z, sample_mean, sample_count together, as here, is its fast path.
TOKEN_KEYS = (
    "kind", "run_id", "step", "request_id", "choice_index", "output_index", "token_id", "rank",
    "probability", "num_candidates", "temperature", "entropy_nats", "u", "z", "sample_mean",
    "sample_count", "source", "fallback", "fallback_kind", "fallback_reason", "forced_stop",
    "device_id", "server_timestamp_ns", "fetch_latency_us", "timestamp_ns", "config_hash",
    "greedy", "nonce", "echo_verified", "entropy_sha256", "entropy_ref", "prev_hash",
)  # fmt: skip


def encode_body(record: Mapping[str, Any]) -> bytes:
    """Serialise ``record`` as a line without its link: ``"kind"`` first, ``prev_hash`` dropped.

    A record without ``"kind"`` is a token record (what the recorder writes most). Values JSON
    cannot hold become their ``str()``, non-finite floats become ``null``: a writer beside the
    engine must not fail on one odd value.
    """
    if next(iter(record), None) != "kind" or "prev_hash" in record:
        ordered: dict[str, Any] = {"kind": record.get("kind", "token")}
        ordered.update((k, v) for k, v in record.items() if k not in ("kind", "prev_hash"))
        record = ordered
    try:
        text = json.dumps(record, separators=(",", ":"), allow_nan=False, default=str)
    except ValueError:  # NaN or infinity somewhere: rare, so the fast path above stays clean
        text = json.dumps(_finite(record), separators=(",", ":"), allow_nan=False, default=str)
    return text.encode("ascii")


def link(bodies: Iterable[bytes], prev_hash: bytes) -> tuple[bytes, bytes]:
    """Chain serialised bodies after a line whose hash is ``prev_hash`` (64 hex, ASCII bytes).

    Returns the lines joined, each ending in ``"\\n"``, and the hash of the last one (or
    ``prev_hash`` when there are none).
    """
    out: list[bytes] = []
    sha = hashlib.sha256
    for body in bodies:
        line = b"".join((body[:-1], TAIL_KEY, prev_hash, b'"}'))
        out.append(line)
        prev_hash = sha(line).hexdigest().encode("ascii")
    if not out:
        return b"", prev_hash
    out.append(b"")
    return b"\n".join(out), prev_hash


def line_hash(line: bytes) -> bytes:
    """The hash the next line must carry: hex SHA-256 of ``line`` (without its newline)."""
    return hashlib.sha256(line).hexdigest().encode("ascii")


def prev_hash_of(line: bytes) -> bytes | None:
    """The link stored in ``line``'s tail, or None when the tail is not there."""
    if len(line) < TAIL_LEN + 2 or line[-TAIL_LEN:-66] != TAIL_KEY or line[-2:] != b'"}':
        return None
    return line[-66:-2]


def is_zero_hash(value: bytes) -> bool:
    return value == _ZERO


def sha256_rows(data: bytes, counts: Sequence[int]) -> list[str]:
    """``entropy_sha256`` of each row: hex SHA-256 of exactly that row's bytes ("" for none).

    Rows are consecutive slices of ``data`` (``counts[i]`` bytes each), as in an EntropyBatch.
    """
    view = memoryview(data)
    out, start = [], 0
    for n in counts:
        out.append(hashlib.sha256(view[start : start + n]).hexdigest() if n else "")
        start += n
    return out


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
