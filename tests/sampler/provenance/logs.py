"""Building real diagnostics logs for the provenance tests.

Two writers on purpose: the project's own (:class:`RecordJournal` + :class:`EntropyArchive`,
what the engine uses) and :func:`write_hand_made`, an independent few lines that follow C2 from
the contract text, so a verifier bug and a writer bug cannot cancel out.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from qr_sampler.provenance import EntropyArchive, RecordJournal

SIGMA = math.sqrt((256**2 - 1) / 12)
SETTINGS = {
    "population_mean": 127.5,
    "population_std": SIGMA,
    "uniform_clamp_epsilon": 1e-10,
    "sample_count": 512,
}
ROW = 512


def manifest(run_id: str = "run-a") -> dict[str, Any]:
    return {
        "run_id": run_id,
        "started_at": "2026-01-01T00:00:00.000000Z",
        "plugin_version": "0.1.0",
        "vllm_version": "test",
        "model": "tiny",
        "parallel": {"tp": 1, "pp": 1, "dp": 1, "dp_rank": 0},
        "config_hash": "0123456789ab",
        "settings": dict(SETTINGS),
        "source": {"type": "system", "address": "", "method": "", "mode": ""},
    }


def amplify_row(row: bytes) -> tuple[float, float, float]:
    """(sample_mean, z, u) of one row, straight from the definition."""
    mean = sum(row) / len(row)
    z = (mean - 127.5) / (SIGMA / math.sqrt(len(row)))
    u = min(max(0.5 * math.erfc(-z / math.sqrt(2)), 1e-10), 1 - 1e-10)
    return mean, z, u


def token(run_id: str, step: int, row: int, data: bytes, ref: str = "", **extra: Any) -> dict:
    """A C2 token record for a row with bytes ``data`` (empty: a greedy row)."""
    if data:
        mean, z, u = amplify_row(data)
        digest = hashlib.sha256(data).hexdigest()
    else:
        mean, z, u, digest = 0.0, 0.0, 0.0, ""
    record = {
        "kind": "token", "run_id": run_id, "step": step, "request_id": f"req-{row}",
        "choice_index": 0, "output_index": step, "token_id": 7 + row, "rank": 0,
        "probability": 0.5, "num_candidates": 10, "temperature": 0.7 if data else 0.0,
        "entropy_nats": 1.25, "u": u, "z": z, "sample_mean": mean,
        "sample_count": len(data), "source": "system" if data else "none", "fallback": False,
        "fallback_kind": "", "fallback_reason": "", "forced_stop": False, "device_id": "",
        "server_timestamp_ns": 0, "fetch_latency_us": 10.0,
        "timestamp_ns": 1_767_225_600_000_000_000 + step * 1_000_000_000 + row,
        "config_hash": "0123456789ab", "greedy": not data, "nonce": "", "echo_verified": None,
        "entropy_sha256": digest, "entropy_ref": ref,
    }  # fmt: skip
    record.update(extra)
    return record


def write_log(
    path: Path,
    *,
    steps: int = 20,
    rows: int = 4,
    archive: Path | None = None,
    max_bytes: int = 0,
    archive_max_bytes: int = 0,
    segment_bytes: int | None = None,
    seed: int = 1,
    run_id: str = "run-a",
    close: bool = True,
) -> tuple[RecordJournal, EntropyArchive | None]:
    """A log of ``steps`` steps of ``rows`` rows each, written by the project's writers."""
    rng = random.Random(seed)
    journal = RecordJournal(path, max_bytes=max_bytes, manifest=manifest(run_id))
    store = (
        EntropyArchive(
            archive,
            max_bytes=archive_max_bytes,
            run_id=run_id,
            segment_bytes=segment_bytes,
            on_event=lambda event: journal.append([event]),
        )
        if archive is not None
        else None
    )
    for step in range(steps):
        data = rng.randbytes(ROW * rows)
        counts = [ROW] * rows
        refs = store.append(data, counts) if store is not None else [""] * rows
        journal.append(
            [token(run_id, step, r, data[r * ROW : (r + 1) * ROW], refs[r]) for r in range(rows)]
        )
    if close:
        journal.close()
        if store is not None:
            store.close()
    return journal, store


def hand_line(record: dict[str, Any], prev: str) -> tuple[bytes, str]:
    """One C2 line written from the contract text: compact JSON, prev_hash last."""
    body = dict(record)
    body.pop("prev_hash", None)
    body["prev_hash"] = prev
    line = json.dumps(body, separators=(",", ":")).encode()
    return line, hashlib.sha256(line).hexdigest()


def write_hand_made(path: Path, records: Iterable[dict[str, Any]], prev: str = "0" * 64) -> str:
    """Write ``records`` (a manifest first, as the caller gives them) chained; return the head."""
    out = []
    for record in records:
        line, prev = hand_line(record, prev)
        out.append(line)
    path.write_bytes(b"".join(line + b"\n" for line in out))
    return prev


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def rewrite(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def edit_value(line: bytes, key: str, value: Any) -> bytes:
    """``line`` with one key's value replaced, everything else byte-for-byte as it was."""
    record = json.loads(line)
    record[key] = value
    return json.dumps(record, separators=(",", ":")).encode()


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def worker(path: str, run_id: str, batches: int, rows: int, max_bytes: int, barrier: Any) -> None:
    """One writer process of the multi-process test (module level: picklable)."""
    journal = RecordJournal(path, max_bytes=max_bytes, manifest=manifest(run_id))
    rng = random.Random(run_id)
    barrier.wait(timeout=60)
    for step in range(batches):
        data = rng.randbytes(ROW * rows)
        journal.append([token(run_id, step, r, data[r * ROW : (r + 1) * ROW]) for r in range(rows)])
    journal.close()
    if journal.error:
        raise SystemExit(f"{run_id}: {journal.error}")
    os._exit(0)  # skip atexit handlers inherited through fork
