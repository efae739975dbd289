"""From one vLLM request's ``SamplingParams`` to the sampler's per-request state.

Engine-neutral: reads ``SamplingParams`` by attribute name and never imports vLLM, so the rules
below hold for both adapters and are testable on their own.

Precedence, per schema field, highest first:

1. ``temperature`` below vLLM's greedy threshold (1e-5) → greedy, whatever else is set: vLLM
   itself treats such a request as greedy, and a greedy row needs no entropy.
2. the request's ``qr_<field>`` key in ``vllm_xargs`` (``SamplingParams.extra_args``);
3. the request's standard parameter, when it is not vLLM's neutral default —
   ``temperature`` ≠ 1 → ``fixed_temperature`` (and strategy ``fixed``), ``top_k`` ∉ {0, -1} →
   ``top_k``, ``top_p`` ≠ 1 → ``top_p``, ``min_p`` ≠ 0 → ``min_p``;
4. the ``QR_`` settings (process environment, then ``.env``);
5. the schema default.

vLLM cannot tell a request that sent the neutral value (``temperature: 1``) from one that sent
nothing: both arrive as 1.0, so both fall through to ``QR_FIXED_TEMPERATURE``. A request that
wants exactly T = 1, or no top-p/top-k cut, says so with ``qr_fixed_temperature: 1``,
``qr_top_p: 1``, ``qr_top_k: 0``. Likewise vLLM fills unset fields from the model's
``generation_config.json`` (``--generation-config auto``, its default): those values look like the
request's own; start vLLM with ``--generation-config vllm`` to keep the neutral defaults.
"""

from __future__ import annotations

import itertools
import os
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import FrameType
from typing import Any

from qr_sampler.errors import RequestArgumentError, SettingProblem
from qr_sampler.settings import Settings, resolve_request_overrides
from qr_sampler.types import GREEDY_TEMPERATURE, SamplingConfig

#: Key under which ``validate_params`` stamps vLLM's request id into ``extra_args``. It has no
#: ``qr_`` prefix, so the per-request validation ignores it and a client cannot be refused for it.
REQUEST_ID_KEY = "_qr_request_id"

#: Key under which ``validate_params`` stamps the seed of choice 0 of an ``n > 1`` request:
#: vLLM gives choice i the seed ``seed + i`` (``ParentRequest``), so the engine side reads the
#: choice back as ``seed - base``.
SEED_BASE_KEY = "_qr_seed_base"

#: Largest top-k a request's standard ``top_k`` can carry into a config (the schema's bound).
_MAX_TOP_K = 2**31 - 1

#: How many frames above ``validate_params`` to look for vLLM's ``process_inputs``.
_MAX_FRAME_DEPTH = 12

_fallback_ids = itertools.count(1)


@dataclass(frozen=True)
class RequestState:
    """What an adapter keeps per batch row (V1) or slot (V2) for one request.

    ``output_token_ids`` is vLLM's live list (V1 only): it grows as the request generates, which
    is what the penalties read. ``penalized`` is True when any penalty differs from neutral.
    """

    request_id: str
    config: SamplingConfig
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    prompt_token_ids: tuple[int, ...] = ()
    output_token_ids: list[int] | None = None
    #: The token that ends this request (its EOS, else its first stop token); -1 when none is
    #: known (``ignore_eos`` without stop tokens). Forced when entropy fails in error mode.
    stop_token: int = -1
    #: Which of the request's ``n`` choices this is (0 when n = 1).
    choice_index: int = 0

    @property
    def penalized(self) -> bool:
        return (
            self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
            or self.repetition_penalty != 1.0
        )


def validate_request(params: Any, base: Settings) -> None:
    """Check a request's ``qr_*`` keys (names and values); raise RequestArgumentError.

    RequestArgumentError is a ValueError, which vLLM turns into HTTP 400 with our message.
    Keys without the ``qr_`` prefix belong to other plugins and pass untouched.
    """
    extra = getattr(params, "extra_args", None)
    if extra is None:
        return
    if not isinstance(extra, Mapping):
        raise RequestArgumentError(
            [SettingProblem("vllm_xargs", type(extra).__name__, "must be an object")]
        )
    resolve_request_overrides(extra, base)


def stamp_request_id(params: Any) -> None:
    """Record vLLM's request id in ``params.extra_args`` so the engine side can read it back.

    Neither logits-processor interface passes the request id to the processor (V1's
    ``BatchUpdate`` carries index and params; V2's ``add_request`` carries slot and params). The
    frontend calls ``validate_params`` from ``InputProcessor.process_inputs(request_id, …)``
    *before* it clones the params for the engine, so the id found in that frame travels with the
    clone. The dict is replaced, not mutated: a params object shared by several prompts keeps
    each clone's own id. When the frame is not found (another caller, another vLLM version) the
    engine side falls back to a process-local id.
    """
    request_id = _caller_request_id()
    n = getattr(params, "n", 1)
    seed_base: int | None = None
    if isinstance(n, int) and n > 1:
        # Every choice of an n > 1 request shares the stamped id; vLLM seeds choice i with
        # seed + i, which tells the choices apart on the engine side. Without a seed of the
        # client's, one is chosen here (it only seeds vLLM's draws, which forced rows ignore).
        seed = getattr(params, "seed", None)
        seed_base = seed if isinstance(seed, int) else secrets.randbelow(2**62)
        try:
            params.seed = seed_base
        except (AttributeError, TypeError):
            seed_base = None
    if request_id is None and seed_base is None:
        return
    extra = getattr(params, "extra_args", None)
    merged = dict(extra) if isinstance(extra, Mapping) else {}
    if request_id is not None:
        merged[REQUEST_ID_KEY] = request_id
    if seed_base is not None:
        merged[SEED_BASE_KEY] = seed_base
    try:
        params.extra_args = merged
    except (AttributeError, TypeError):  # a frozen or foreign params object: keep it as it is
        return


def _caller_request_id() -> str | None:
    frame: FrameType | None = sys._getframe(1)
    for _ in range(_MAX_FRAME_DEPTH):
        if frame is None:
            return None
        if frame.f_code.co_name == "process_inputs":
            value = frame.f_locals.get("request_id")
            return value if isinstance(value, str) else None
        frame = frame.f_back
    return None


def request_id_of(params: Any) -> str:
    """vLLM's request id as stamped by :func:`stamp_request_id`, else a process-local id."""
    extra = getattr(params, "extra_args", None)
    if isinstance(extra, Mapping):
        value = extra.get(REQUEST_ID_KEY)
        if isinstance(value, str) and value:
            return value
    return f"local-{os.getpid()}-{next(_fallback_ids)}"


def resolve_config(params: Any, base: Settings) -> SamplingConfig:
    """The request's sampling config by the precedence in this module's docstring.

    Expects params that passed :func:`validate_request`; raises RequestArgumentError otherwise
    (callers on the hot path catch it).
    """
    extra = getattr(params, "extra_args", None)
    qr = resolve_request_overrides(extra if isinstance(extra, Mapping) else None, base)
    values: dict[str, Any] = {}

    temperature = float(getattr(params, "temperature", 1.0))
    if temperature != 1.0:
        values["fixed_temperature"] = temperature
        values["temperature_strategy"] = "fixed"
    top_k = int(getattr(params, "top_k", 0))
    if top_k > 0:
        values["top_k"] = min(top_k, _MAX_TOP_K)  # beyond any vocabulary: all tokens
    top_p = float(getattr(params, "top_p", 1.0))
    if top_p != 1.0:
        values["top_p"] = top_p
    min_p = float(getattr(params, "min_p", 0.0))
    if min_p != 0.0:
        values["min_p"] = min_p

    values.update(qr)  # qr_* keys beat the standard parameters
    if temperature < GREEDY_TEMPERATURE:
        values["temperature_strategy"] = "fixed"
        values["fixed_temperature"] = 0.0
    return _config(base, tuple(sorted(values.items())))


@lru_cache(maxsize=1024)
def _config(base: Settings, values: tuple[tuple[str, Any], ...]) -> SamplingConfig:
    """Configs are frozen and most requests share a few: resolve (and hash) each once."""
    return SamplingConfig.from_settings(base, dict(values))


#: The state of a row left to vLLM's own sampling (its request could not be resolved).
LEFT_TO_VLLM = RequestState(request_id="", config=SamplingConfig(bypass=True))


def request_state(
    params: Any,
    base: Settings,
    prompt_token_ids: list[int] | None = None,
    output_token_ids: list[int] | None = None,
) -> RequestState:
    """Everything an adapter keeps for one request (config, id, penalties, token lists)."""
    return RequestState(
        request_id=request_id_of(params),
        config=resolve_config(params, base),
        presence_penalty=float(getattr(params, "presence_penalty", 0.0)),
        frequency_penalty=float(getattr(params, "frequency_penalty", 0.0)),
        repetition_penalty=float(getattr(params, "repetition_penalty", 1.0)),
        prompt_token_ids=tuple(prompt_token_ids or ()),
        output_token_ids=output_token_ids,
        stop_token=stop_token_of(params),
        choice_index=choice_index_of(params),
    )


def stop_token_of(params: Any) -> int:
    """The token that ends the request: vLLM's ``eos_token_id`` for it (None when the request
    ignores EOS), else its first stop token; -1 when neither exists."""
    eos = getattr(params, "eos_token_id", None)
    if isinstance(eos, int) and eos >= 0:
        return eos
    stops = getattr(params, "stop_token_ids", None) or ()
    for token in stops:
        if isinstance(token, int) and token >= 0:
            return token
    return -1


def choice_index_of(params: Any) -> int:
    """Which choice of an ``n > 1`` request ``params`` belongs to (see :data:`SEED_BASE_KEY`)."""
    extra = getattr(params, "extra_args", None)
    base = extra.get(SEED_BASE_KEY) if isinstance(extra, Mapping) else None
    seed = getattr(params, "seed", None)
    if isinstance(base, int) and isinstance(seed, int) and 0 <= seed - base < 2**31:
        return seed - base
    return 0
