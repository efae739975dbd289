"""Precedence between standard SamplingParams, ``qr_*`` keys and ``QR_`` settings.

Uses vLLM's real ``SamplingParams`` (including its own normalisation: a greedy request has its
top-p/top-k/min-p reset by vLLM before we see it).
"""

from __future__ import annotations

import pytest
from vllm import SamplingParams

from qr_sampler.engine.requests import (
    REQUEST_ID_KEY,
    request_id_of,
    request_state,
    resolve_config,
    stamp_request_id,
)
from qr_sampler.errors import RequestArgumentError
from qr_sampler.settings import settings_from_mapping

ENV = settings_from_mapping(
    {"QR_FIXED_TEMPERATURE": "0.6", "QR_TOP_K": "40", "QR_TOP_P": "0.8", "QR_MIN_P": "0.05"}
)


def test_unset_standard_params_leave_the_qr_settings() -> None:
    c = resolve_config(SamplingParams(), ENV)
    assert (c.fixed_temperature, c.top_k, c.top_p, c.min_p) == (0.6, 40, 0.8, 0.05)


def test_neutral_values_are_indistinguishable_from_unset() -> None:
    """vLLM gives no way to tell ``temperature: 1`` from no temperature: both use QR_."""
    c = resolve_config(SamplingParams(temperature=1.0, top_p=1.0, top_k=0, min_p=0.0), ENV)
    assert (c.fixed_temperature, c.top_k, c.top_p, c.min_p) == (0.6, 40, 0.8, 0.05)
    assert resolve_config(SamplingParams(top_k=-1), ENV).top_k == 40


def test_standard_params_beat_qr_settings() -> None:
    c = resolve_config(SamplingParams(temperature=0.2, top_p=0.5, top_k=7, min_p=0.1), ENV)
    assert (c.temperature_strategy, c.fixed_temperature) == ("fixed", 0.2)
    assert (c.top_k, c.top_p, c.min_p) == (7, 0.5, 0.1)


def test_standard_temperature_switches_an_edt_profile_to_fixed() -> None:
    edt = settings_from_mapping({"QR_TEMPERATURE_STRATEGY": "edt"})
    assert resolve_config(SamplingParams(), edt).temperature_strategy == "edt"
    assert resolve_config(SamplingParams(temperature=0.3), edt).temperature_strategy == "fixed"


def test_qr_keys_beat_standard_params() -> None:
    p = SamplingParams(
        temperature=0.2,
        top_k=7,
        extra_args={"qr_fixed_temperature": 0.9, "qr_top_k": 3, "qr_temperature_strategy": "edt"},
    )
    c = resolve_config(p, ENV)
    assert (c.temperature_strategy, c.fixed_temperature, c.top_k) == ("edt", 0.9, 3)


def test_temperature_zero_is_greedy_whatever_else_is_set() -> None:
    p = SamplingParams(
        temperature=0.0,
        extra_args={"qr_fixed_temperature": 1.3, "qr_temperature_strategy": "edt"},
    )
    c = resolve_config(p, ENV)
    assert c.is_greedy


def test_invalid_keys_raise_a_value_error() -> None:
    with pytest.raises(RequestArgumentError) as info:
        resolve_config(SamplingParams(extra_args={"qr_top_p": 0}), ENV)
    assert isinstance(info.value, ValueError)


def test_penalties_and_token_lists_are_kept() -> None:
    out: list[int] = []
    s = request_state(SamplingParams(repetition_penalty=1.2), ENV, [1, 2], out)
    assert s.penalized and s.prompt_token_ids == (1, 2) and s.output_token_ids is out
    assert not request_state(SamplingParams(), ENV).penalized


def test_request_id_stamp_is_read_back_and_absent_id_gets_a_local_one() -> None:
    assert request_id_of(SamplingParams(extra_args={REQUEST_ID_KEY: "cmpl-1-0"})) == "cmpl-1-0"
    assert request_id_of(SamplingParams()).startswith("local-")


def test_stamp_finds_the_request_id_of_vllms_process_inputs_frame() -> None:
    shared = SamplingParams(extra_args={"qr_top_k": 2})

    def process_inputs(request_id: str, params: SamplingParams) -> SamplingParams:
        stamp_request_id(params)
        return params.clone()

    first = process_inputs("chatcmpl-a", shared)
    second = process_inputs("chatcmpl-b", shared)
    assert request_id_of(first) == "chatcmpl-a" and request_id_of(second) == "chatcmpl-b"
    assert first.extra_args is not None and first.extra_args["qr_top_k"] == 2
