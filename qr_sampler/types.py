"""Shared value types: a row's resolved sampling config, one entropy fetch, one token's record.

All are frozen dataclasses so they can be shared between threads and cached safely.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from qr_sampler.settings import Settings

#: Standard deviation of one byte drawn uniformly from 0..255: sqrt((256**2 - 1) / 12) ≈ 73.9003.
#: (Not 255/sqrt(12) ≈ 73.61, which is the continuous-uniform value.)
UNIFORM_BYTE_STD = math.sqrt((256**2 - 1) / 12)

#: Temperatures below this are greedy (vLLM's own threshold, ``sampling_params._SAMPLING_EPS``).
GREEDY_TEMPERATURE = 1e-5


@dataclass(frozen=True)
class SamplingConfig:
    """Everything the selection math needs for one request, resolved once when it is added.

    Invariants (guaranteed by the settings schema): temperatures ≥ 0, edt_min_temp ≤
    edt_max_temp, 0 < top_p ≤ 1, 0 ≤ min_p ≤ 1, top_k ≥ 0 (0 = off), sample_count ≥ 1.
    """

    temperature_strategy: Literal["fixed", "edt"] = "fixed"
    fixed_temperature: float = 0.7
    edt_base_temp: float = 0.8
    edt_exponent: float = 0.5
    edt_min_temp: float = 0.1
    edt_max_temp: float = 2.0
    top_k: int = 50
    top_p: float = 0.9
    min_p: float = 0.0
    sample_count: int = 20480
    population_mean: float = 127.5
    population_std: float = UNIFORM_BYTE_STD
    uniform_clamp_epsilon: float = 1e-10
    bypass: bool = False
    #: Short digest of the fields above, written into every token record.
    config_hash: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if 0 < self.fixed_temperature < GREEDY_TEMPERATURE:
            # Too small to divide by (1/T overflows): greedy, as vLLM treats such requests.
            object.__setattr__(self, "fixed_temperature", 0.0)
        if not self.config_hash:
            payload = {
                f.name: getattr(self, f.name) for f in fields(self) if f.name != "config_hash"
            }
            digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
            object.__setattr__(self, "config_hash", digest[:12])

    @property
    def is_greedy(self) -> bool:
        """True when the token is the argmax and needs no entropy."""
        return self.temperature_strategy == "fixed" and self.fixed_temperature == 0.0

    @classmethod
    def from_settings(
        cls, settings: Settings, overrides: Mapping[str, Any] | None = None
    ) -> SamplingConfig:
        """Build from settings plus already-validated per-request overrides (field → value)."""
        names = [f.name for f in fields(cls) if f.name != "config_hash"]
        values = {n: getattr(settings, n) for n in names}
        if overrides:
            values.update({k: v for k, v in overrides.items() if k in values})
        return cls(**values)


@dataclass(frozen=True)
class EntropyBatch:
    """Bytes from one fetch, for one or more rows, with where they came from.

    ``data`` is the concatenation of every row's bytes in order; ``counts[i]`` is row i's share.
    ``nonce`` is what the fetch sent (b"" = none); ``echo_verified`` is True when every reply
    echoed it, None when the server does not echo (or nothing was sent); False never occurs:
    a wrong echo is a source failure and its bytes are never used. ``fallback_kind`` is the
    machine-readable reason when ``fallback`` is True (one of
    :data:`qr_sampler.errors.ENTROPY_ERROR_KINDS`), "" otherwise.
    """

    data: bytes
    counts: tuple[int, ...]
    source: str
    fallback: bool = False
    fallback_reason: str = ""
    device_id: str = ""
    generation_timestamp_ns: int = 0
    latency_ns: int = 0
    nonce: bytes = b""
    echo_verified: bool | None = None
    fallback_kind: str = ""

    def rows(self) -> list[bytes]:
        """Split ``data`` back into one bytes object per row."""
        out, start = [], 0
        for n in self.counts:
            out.append(self.data[start : start + n])
            start += n
        return out


@dataclass(frozen=True)
class TokenRecord:
    """Provenance of one chosen token: the entropy, the math and the result.

    The fields are those of a diagnostics line (``kind: "token"``) without the chain link.
    ``entropy_nats`` is the Shannon entropy of the full softmax at temperature 1 when the EDT
    strategy computed it, otherwise of the filtered distribution the token was drawn from.
    ``source`` is the source that served the bytes (the fallback's name when ``fallback``),
    ``"none"`` when no bytes were used (greedy, forced stop) and ``"vllm"`` when vLLM's own
    sampler chose (``token_id`` -1: by request, or because the row could not be computed).
    """

    request_id: str
    token_id: int
    rank: int
    probability: float
    num_candidates: int
    temperature: float
    entropy_nats: float
    u: float
    z: float
    sample_mean: float
    sample_count: int
    source: str
    fallback: bool
    fallback_reason: str
    device_id: str
    server_timestamp_ns: int
    fetch_latency_us: float
    timestamp_ns: int
    config_hash: str
    greedy: bool = False
    #: Position of this token in the request's output (0 = first generated token) when the
    #: engine says, else -1. A sample vLLM discards (a partial chunked-prefill step) shares the
    #: index of the token that follows it, so the last record per (request_id, output_index) is
    #: the token the request really got.
    output_index: int = -1
    #: The drawing rank's step counter (one entropy fetch at most per step), from 1.
    step: int = 0
    run_id: str = ""
    #: Which of the request's ``n`` choices this token belongs to (0 when n = 1).
    choice_index: int = 0
    #: Why the configured source did not serve (see ``EntropyBatch.fallback_kind``).
    fallback_kind: str = ""
    #: True when the token was forced to end the request because no entropy was available
    #: and ``QR_FALLBACK_MODE=error`` forbids any other randomness.
    forced_stop: bool = False
    nonce: str = ""  # hex; "" when no bytes were fetched
    echo_verified: bool | None = None
    entropy_sha256: str = ""  # of exactly this row's bytes; "" when none were used
    entropy_ref: str = ""  # the raw-byte archive's pointer to those bytes; "" when off

    def to_dict(self) -> dict[str, Any]:
        # Every field is a scalar: a shallow copy keeps field order without asdict's deep copy.
        return dict(self.__dict__)
