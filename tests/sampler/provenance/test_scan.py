"""The verifier's scanner reads exactly what a JSON parser reads, or declines."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from qr_sampler.provenance import TOKEN_KEYS, RecordJournal, scan
from qr_sampler.provenance.inputs import read_blocks
from tests.sampler.provenance.logs import manifest, token


def _ordered(record: dict) -> dict:
    return {k: record[k] for k in TOKEN_KEYS if k in record}


def test_block_scan_equals_json_for_records_in_c2_order(tmp_path: Path) -> None:
    rng = random.Random(4)
    path = tmp_path / "diag.jsonl"
    journal = RecordJournal(path, max_bytes=0, manifest=manifest("run-a"))
    for step in range(300):
        run = "run-a" if step % 7 else "run-bb"  # two runs interleaved in one block
        data = b"" if step % 11 == 0 else rng.randbytes(64)
        record = _ordered(token(run, step, 0, data))
        if data:  # values of every shape: exponents, negatives, tiny and huge
            record["u"] = rng.choice([1e-10, 0.999999, rng.random(), 3.5e-05])
            record["z"] = rng.choice([-rng.random() * 7, 1e-300, 12.0, -2.5e-17])
        journal.append([record])
    journal.close()
    (block,) = list(read_blocks(path))
    head = scan.heads(block.lines)
    tokens = np.flatnonzero(scan.is_token(head))
    found = scan.scan_block(block, head, tokens, tokens, hashes=True, refs=True)
    assert found is not None  # the fast path
    parsed = [json.loads(block.lines[k]) for k in tokens.tolist()]
    expected = np.array([[r["u"], r["z"], r["sample_mean"], r["sample_count"]] for r in parsed])
    assert np.array_equal(found.numbers, expected)  # the same floats, bit for bit
    assert found.runs == [r["run_id"].encode() for r in parsed]
    assert found.shas == [r["entropy_sha256"].encode() for r in parsed]
    quick = scan.scan_block(block, head, tokens, tokens[5:], hashes=False, refs=False)
    assert quick is not None
    assert quick.shas == [b"?" if r["entropy_sha256"] else b"" for r in parsed[5:]]


def test_another_key_order_is_declined_by_the_block_scan_and_read_per_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "diag.jsonl"
    journal = RecordJournal(path, max_bytes=0, manifest=manifest())
    record = token("run-a", 0, 0, bytes(range(64)))
    shuffled = {"kind": "token", **dict(reversed(list(record.items())[1:]))}
    journal.append([record, shuffled])
    journal.close()
    (block,) = list(read_blocks(path))
    head = scan.heads(block.lines)
    tokens = np.flatnonzero(scan.is_token(head))
    assert scan.scan_block(block, head, tokens, tokens, hashes=False, refs=False) is None
    values = scan.scan_line(block.lines[int(tokens[1])])
    assert values == (
        "run-a", record["entropy_sha256"], record["u"], record["z"], record["sample_mean"], 64
    )  # fmt: skip
    assert scan.scan_line(b'{"kind":"token","u":null}') is None
