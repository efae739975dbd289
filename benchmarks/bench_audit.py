"""Provenance costs: archive codec, chained journal append, archive append, `qrs audit verify`.

Workloads and baselines (each measured in the same run):

1. **Codec** — compress 20,480-byte blocks of ``os.urandom`` (what a QRNG sends) and of
   low-entropy bytes (a stuck-ish source: 90 % zeros) with zstd (the archive's level and level 3)
   and gzip (levels 1 and 6): MB/s and ratio. Baseline: gzip level 1.
2. **Journal** — ``RecordJournal.append`` of batches of 32 token records (C2 fields) to a real
   file: µs per record. Baseline: what the recorder did before the chain, ``json.dumps`` of each
   record and one write of the joined lines.
3. **Archive** — ``EntropyArchive.append`` of one step's bytes at batch 32 (32 × 20,480 bytes):
   µs per token. Baseline: one unbuffered write of the same bytes, uncompressed.
4. **Verify** — :func:`qr_sampler.provenance.verifier.verify` on a log of ``--records`` token
   records without the archive: records/s (target ≥ 100,000). Baseline: ``json.loads`` of every
   line plus its SHA-256 (a naive verifier that does no checks at all). Then with the archive, on
   a smaller log whose rows' bytes are archived.

Run: ``python benchmarks/bench_audit.py [--records N] [--json]``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qr_sampler.provenance import EntropyArchive, RecordJournal
from qr_sampler.provenance.archive import ZSTD_LEVEL
from qr_sampler.provenance.chain import sha256_rows
from qr_sampler.provenance.verifier import verify

BATCH = 32
ROW_BYTES = 20_480
SIGMA = math.sqrt((256**2 - 1) / 12)
VERIFY_TARGET = 100_000
SETTINGS = {"population_mean": 127.5, "population_std": SIGMA, "uniform_clamp_epsilon": 1e-10}


def _best(fn: Callable[[], object], repeats: int = 5, number: int = 1) -> float:
    """Best-of-``repeats`` seconds for ``number`` calls (least disturbed by other load)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return min(times)


def _manifest(run_id: str) -> dict[str, Any]:
    return {"run_id": run_id, "started_at": "2026-01-01T00:00:00Z", "settings": SETTINGS}


def _records(
    run_id: str,
    step: int,
    rng: random.Random,
    rows: list[bytes] | None = None,
    refs: list[str] | None = None,
) -> list[dict[str, Any]]:
    out = []
    for i in range(BATCH):
        if rows is not None:
            row = rows[i]
            mean = sum(row) / len(row)
            digest = hashlib.sha256(row).hexdigest()
        else:
            mean = 127.5 + rng.gauss(0.0, SIGMA / math.sqrt(ROW_BYTES))
            digest = f"{rng.getrandbits(256):064x}"
        z = (mean - 127.5) / (SIGMA / math.sqrt(ROW_BYTES))
        u = min(max(0.5 * math.erfc(-z / math.sqrt(2)), 1e-10), 1 - 1e-10)
        out.append({
            "kind": "token", "run_id": run_id, "step": step, "request_id": f"cmpl-{i:08x}",
            "choice_index": 0, "output_index": step, "token_id": rng.randrange(49_152),
            "rank": rng.randrange(50), "probability": rng.random(), "num_candidates": 50,
            "temperature": 0.7, "entropy_nats": 2.5, "u": u, "z": z, "sample_mean": mean,
            "sample_count": ROW_BYTES, "source": "quantum_grpc", "fallback": False,
            "fallback_kind": "", "fallback_reason": "", "forced_stop": False,
            "device_id": "qrng-0", "server_timestamp_ns": time.time_ns(),
            "fetch_latency_us": 312.5, "timestamp_ns": time.time_ns(),
            "config_hash": "0123456789ab", "greedy": False, "nonce": f"{step:064x}",
            "echo_verified": True, "entropy_sha256": digest,
            "entropy_ref": refs[i] if refs else "",
        })  # fmt: skip
    return out


def bench_codecs() -> dict[str, dict[str, float]]:
    import zstandard

    random_block = os.urandom(ROW_BYTES)
    rng = random.Random(7)
    low_block = bytes(0 if rng.random() < 0.9 else rng.randrange(256) for _ in range(ROW_BYTES))
    archive_level = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
    codecs: dict[str, Callable[[bytes], bytes]] = {
        f"zstd {ZSTD_LEVEL}": archive_level.compress,
        "zstd 3": zstandard.ZstdCompressor(level=3, write_checksum=True).compress,
        "gzip 1": lambda d: gzip.compress(d, compresslevel=1, mtime=0),
        "gzip 6": lambda d: gzip.compress(d, compresslevel=6, mtime=0),
    }
    out: dict[str, dict[str, float]] = {}
    for name, fn in codecs.items():
        for label, block in (("random", random_block), ("low-entropy", low_block)):
            seconds = _best(lambda fn=fn, block=block: fn(block), number=50)
            out[f"{name} {label}"] = {
                "MB_per_s": len(block) / seconds / 1e6,
                "ratio": len(block) / len(fn(block)),
                "us_per_block": seconds * 1e6,
            }
    return out


def bench_journal(folder: Path, steps: int = 200) -> dict[str, float]:
    rng = random.Random(1)
    batches = [_records("bench", s, rng) for s in range(steps)]

    def chained() -> None:
        path = folder / f"journal-{time.perf_counter_ns()}.jsonl"
        journal = RecordJournal(path, max_bytes=0, manifest=_manifest("bench"))
        for batch in batches:
            journal.append(batch)
        journal.close()

    def plain() -> None:
        path = folder / f"plain-{time.perf_counter_ns()}.jsonl"
        with path.open("a", encoding="utf-8") as handle:
            for batch in batches:
                handle.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in batch))
                handle.flush()

    records = steps * BATCH
    journal_us = _best(chained, repeats=3) / records * 1e6
    plain_us = _best(plain, repeats=3) / records * 1e6
    return {"journal_us_per_record": journal_us, "plain_us_per_record": plain_us,
            "ratio": journal_us / plain_us}  # fmt: skip


def bench_archive(folder: Path, steps: int = 40) -> dict[str, float]:
    data = [os.urandom(BATCH * ROW_BYTES) for _ in range(4)]
    counts = [ROW_BYTES] * BATCH

    def archived() -> None:
        archive = EntropyArchive(folder / f"a-{time.perf_counter_ns()}", max_bytes=0,
                                 run_id="bench")  # fmt: skip
        for step in range(steps):
            archive.append(data[step % 4], counts)
        archive.close()

    def raw() -> None:
        fd = os.open(folder / f"raw-{time.perf_counter_ns()}", os.O_WRONLY | os.O_CREAT, 0o644)
        for step in range(steps):
            os.write(fd, data[step % 4])
        os.close(fd)

    tokens = steps * BATCH
    archive_us = _best(archived, repeats=3) / tokens * 1e6
    raw_us = _best(raw, repeats=3) / tokens * 1e6
    return {"archive_us_per_token": archive_us, "raw_write_us_per_token": raw_us,
            "ratio": archive_us / raw_us}  # fmt: skip


def bench_verify(folder: Path, records: int) -> dict[str, float]:
    rng = random.Random(2)
    log = folder / "verify.jsonl"
    journal = RecordJournal(log, max_bytes=0, manifest=_manifest("bench"))
    for step in range(records // BATCH):
        journal.append(_records("bench", step, rng))
    journal.close()
    lines = log.read_bytes().splitlines()

    def naive() -> None:
        for line in lines:
            json.loads(line)
            hashlib.sha256(line).hexdigest()

    report = verify(log)
    assert report.ok, report.problems[:3]
    verify_s = _best(lambda: verify(log), repeats=3)
    naive_s = _best(naive, repeats=3)
    # With the archive: a smaller log whose rows' bytes are really archived.
    archived = folder / "archived.jsonl"
    archive_dir = folder / "archive"
    journal = RecordJournal(archived, max_bytes=0, manifest=_manifest("bench"))
    archive = EntropyArchive(archive_dir, max_bytes=0, run_id="bench")
    for step in range(50):
        data = os.urandom(BATCH * ROW_BYTES)
        refs = archive.append(data, [ROW_BYTES] * BATCH)
        rows = [data[i * ROW_BYTES : (i + 1) * ROW_BYTES] for i in range(BATCH)]
        assert sha256_rows(data, [ROW_BYTES] * BATCH)[0] == hashlib.sha256(rows[0]).hexdigest()
        journal.append(_records("bench", step, rng, rows, refs))
    journal.close()
    archive.close()
    with_archive = verify(archived, archive=archive_dir)
    assert with_archive.ok, with_archive.problems[:3]
    archive_s = _best(lambda: verify(archived, archive=archive_dir), repeats=2)
    n = len(lines) - 2  # manifest and closing event
    return {
        "records": n,
        "verify_records_per_s": n / verify_s,
        "naive_records_per_s": n / naive_s,
        "ratio": naive_s / verify_s,
        "verify_with_archive_records_per_s": 50 * BATCH / archive_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        folder = Path(tmp)
        results = {
            "codecs": bench_codecs(),
            "journal": bench_journal(folder),
            "archive": bench_archive(folder),
            "verify": bench_verify(folder, args.records),
        }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print("codec (20,480-byte blocks)         MB/s   ratio   µs/block")
    for name, row in results["codecs"].items():
        mbps, ratio, micros = row["MB_per_s"], row["ratio"], row["us_per_block"]
        print(f"  {name:30s} {mbps:7.1f}  {ratio:6.3f}  {micros:8.1f}")
    j = results["journal"]
    print(
        f"journal append, batch {BATCH}: {j['journal_us_per_record']:.2f} µs/record "
        f"(baseline json.dumps + write: {j['plain_us_per_record']:.2f} µs; "
        f"ratio {j['ratio']:.2f})"
    )
    a = results["archive"]
    print(
        f"archive append, batch {BATCH} × {ROW_BYTES} B: {a['archive_us_per_token']:.2f} "
        f"µs/token (baseline raw write: {a['raw_write_us_per_token']:.2f} µs; "
        f"ratio {a['ratio']:.2f})"
    )
    v = results["verify"]
    verdict = "meets" if v["verify_records_per_s"] >= VERIFY_TARGET else "MISSES"
    print(
        f"verify, {v['records']:,} records, no archive: {v['verify_records_per_s']:,.0f} "
        f"records/s ({verdict} the {VERIFY_TARGET:,}/s target; baseline json.loads + sha256: "
        f"{v['naive_records_per_s']:,.0f}/s; ratio {v['ratio']:.2f})"
    )
    print(f"verify with the archive: {v['verify_with_archive_records_per_s']:,.0f} records/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
