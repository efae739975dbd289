"""The class registered under vLLM's ``vllm.logits_processors`` entry point.

vLLM has two logits-processor interfaces and picks one per engine: the V1 model runner (CPU
builds, and GPUs where V2 is off or unsupported) constructs ``cls(vllm_config, device,
is_pin_memory)``; Model Runner V2 (the GPU default) checks that the class subclasses its own
interface, then constructs ``cls(vllm_config, req_states)``. Which runner runs depends on the
vLLM config (Triton present, features in use, ``VLLM_USE_V2_MODEL_RUNNER``), which is not known
when the entry point is loaded — in the frontend process it is never known.

So the registered class subclasses *both* interfaces (both loaders accept it, both frontends
call its ``validate_params``), and its ``__new__`` returns the adapter that matches the
constructor call it receives: :class:`~qr_sampler.engine.v1.QRSamplerV1Processor` or
:class:`~qr_sampler.engine.v2.QRSamplerV2Processor`. The choice is made by the runner itself,
so it cannot disagree with it. An entry-point processor is instantiated once per engine and
sees every request; a request opts out with ``qr_bypass``.

Loading this module with ``--logits-processors qr_sampler.engine.plugin:QRSamplerLogitsProcessor``
*as well as* through the entry point would create two instances that both force tokens: use
one way only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vllm.v1.sample.logits_processor import LogitsProcessor as _V1Interface

from qr_sampler.engine.runtime import validate_and_stamp

if TYPE_CHECKING:
    import torch

try:  # Model Runner V2's interface (vLLM ≥ 0.32); import-light by vLLM's design
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor as _V2Interface

    _BASES: tuple[type, ...] = (_V1Interface, _V2Interface)
except ImportError:  # pragma: no cover - older vLLM without Model Runner V2
    _BASES = (_V1Interface,)


class QRSamplerLogitsProcessor(*_BASES):  # type: ignore[misc]
    """Entry-point class: constructing it returns the adapter for the running model runner."""

    def __new__(cls, vllm_config: Any, *args: Any, **kwargs: Any) -> Any:
        if _is_v2_call(args, kwargs):
            from qr_sampler.engine.v2 import QRSamplerV2Processor

            return QRSamplerV2Processor(vllm_config, *args, **kwargs)
        from qr_sampler.engine.v1 import QRSamplerV1Processor

        return QRSamplerV1Processor(vllm_config, *args, **kwargs)

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        """Refuse bad ``qr_*`` keys with ValueError (→ HTTP 400); stamp the request id."""
        validate_and_stamp(sampling_params)

    # Never called: ``__new__`` returns an adapter instance, not an instance of this class.
    # Defined so the class is concrete for both interfaces' abstract-method checks.
    def is_argmax_invariant(self) -> bool:
        return False

    def update_state(self, batch_update: Any) -> None:
        raise NotImplementedError

    def apply(self, logits: torch.Tensor, *args: Any) -> torch.Tensor:
        raise NotImplementedError


def _is_v2_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """V2 passes ``req_states`` (a LogitsProcRequestState); V1 passes a device and a flag."""
    if "req_states" in kwargs:
        return True
    return len(args) == 1 and hasattr(args[0], "max_num_reqs")
