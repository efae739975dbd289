"""Wraps a source so a failure is served by a fallback source, and says so.

Every batch served by the fallback carries ``fallback=True`` and the reason, so each token record
shows that its entropy did not come from the configured source. With no fallback
(``QR_FALLBACK_MODE=error``) failures propagate as EntropyError.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from qr_sampler.entropy.base import EntropySource
from qr_sampler.errors import EntropyError, EntropyUnavailableError
from qr_sampler.types import EntropyBatch

logger = logging.getLogger(__name__)


class FallbackEntropySource(EntropySource):
    """``primary`` first; on EntropyError, ``fallback`` (if any), flagged in the batch."""

    def __init__(self, primary: EntropySource, fallback: EntropySource | None) -> None:
        self.primary = primary
        self.fallback = fallback
        self.name = primary.name  # the configured source's name, not "fallback"
        self._lock = threading.Lock()
        self.fallback_count = 0
        self.last_error = ""

    def get_random_bytes(self, n: int) -> bytes:
        return self.get_random_bytes_batch((n,)).data

    def get_random_bytes_batch(self, counts: Sequence[int]) -> EntropyBatch:
        try:
            return self.primary.get_random_bytes_batch(counts)
        except EntropyError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if self.fallback is None:
                raise
            self._note_fallback(reason)
            try:
                batch = self.fallback.get_random_bytes_batch(counts)
            except EntropyError as fallback_exc:
                raise EntropyUnavailableError(
                    f"primary {self.primary.name!r} and fallback {self.fallback.name!r} both "
                    f"failed: {reason}; {fallback_exc}"
                ) from fallback_exc
            return replace(batch, fallback=True, fallback_reason=reason)

    def _note_fallback(self, reason: str) -> None:
        with self._lock:
            self.fallback_count += 1
            first = self.fallback_count == 1 or reason != self.last_error
            self.last_error = reason
        if first:  # log each new kind of failure once, not once per token
            assert self.fallback is not None
            logger.warning(
                "entropy source %r failed (%s); serving from %r and flagging tokens",
                self.primary.name,
                reason,
                self.fallback.name,
            )

    def close(self) -> None:
        self.primary.close()
        if self.fallback is not None:
            self.fallback.close()

    def health(self) -> dict[str, Any]:
        return {
            **self.primary.health(),
            "fallback_source": self.fallback.name if self.fallback else None,
            "fallback_count": self.fallback_count,
            "last_error": self.last_error,
        }
