"""The embedded default: sample text from a tiny built-in language model with gRPC entropy.

It exercises the real pipeline without a GPU, a download or vLLM: the reference entropy server
(in-process, on a unix socket in a temporary directory), the ``quantum_grpc`` client, and the
sampler core choosing every token from those bytes — and returns the provenance of each token.

The "model" is a bigram table counted from a short embedded text: small, deterministic and
readable, so a newcomer can see that the tokens follow the distribution and where each came from.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Literal

from qr_sampler.types import TokenRecord

DEMO_TEXT = """
the lamp in the lab glows while the detector counts photons . each photon takes one of two
paths , and the path it takes is not known until it is measured . the counts become bits , the
bits become bytes , and the bytes become a number between zero and one . the model reads the
prompt and writes a list of words it could say next , each with a chance . the number picks one
word from that list . a small number picks a likely word , a large number picks a rare word .
the words become a sentence , and the sentence becomes a story about the lamp , the lab and the
photons . we keep a record of every word : the number , the bytes , the source and the time .
if the source ever leans one way , the record will show it .
"""

#: Smoothing added to every bigram count, so unseen pairs stay possible but rare.
_SMOOTHING = 0.05


@dataclass(frozen=True)
class BigramModel:
    """Next-word log-probabilities from word-pair counts of a text."""

    vocabulary: tuple[str, ...]
    log_counts: tuple[tuple[float, ...], ...]  # [V][V], row = previous word

    @classmethod
    def from_text(cls, text: str) -> BigramModel:
        words = re.findall(r"[a-z]+|[.,:]", text.lower())
        vocabulary = tuple(sorted(set(words)))
        pairs = Counter(pairwise(words))
        rows = tuple(
            tuple(math.log(pairs[(prev, nxt)] + _SMOOTHING) for nxt in vocabulary)
            for prev in vocabulary
        )
        return cls(vocabulary=vocabulary, log_counts=rows)

    def index(self, word: str) -> int:
        return self.vocabulary.index(word)


@dataclass(frozen=True)
class DemoReport:
    """What the demo produced: the text, one record per sampled word, and the entropy server."""

    text: str
    words: tuple[str, ...]
    records: tuple[TokenRecord, ...]
    source: str
    server_address: str
    server_calls: int


def run_demo(
    num_tokens: int = 24,
    source: Literal["grpc", "system"] = "grpc",
    first_word: str = "the",
    temperature: float = 1.0,
    top_k: int = 20,
    top_p: float = 0.95,
    diagnostics_path: str = "",
) -> DemoReport:
    """Generate ``num_tokens`` words after ``first_word``, every one chosen by the sampler."""
    import torch

    from qr_sampler.diagnostics import TokenRecorder
    from qr_sampler.entropy.registry import build_entropy_source
    from qr_sampler.sampler import SamplingBatch, TokenSampler
    from qr_sampler.settings import settings_from_mapping
    from qr_sampler.types import SamplingConfig
    from qrs_cli.errors import CLIError

    model = BigramModel.from_text(DEMO_TEXT)
    if first_word not in model.vocabulary:
        raise CLIError(
            f"{first_word!r} is not in the demo vocabulary",
            hint="try one of: " + ", ".join(w for w in model.vocabulary[:12] if w.isalpha()),
        )
    table = torch.tensor(model.log_counts, dtype=torch.float32)
    values = {
        "QR_FIXED_TEMPERATURE": str(temperature),
        "QR_TOP_K": str(top_k),
        "QR_TOP_P": str(top_p),
        "QR_LOG_LEVEL": "none",
        "QR_DIAGNOSTICS_PATH": diagnostics_path,
        # The demo shows real provenance: if the server fails, say so instead of falling back.
        "QR_FALLBACK_MODE": "error",
    }
    with tempfile.TemporaryDirectory(prefix="qrs-demo-") as tmp:
        server = None
        address = ""
        if source == "grpc":
            from qr_sampler.server import EntropyServer, ServerConfig

            address = f"unix://{Path(tmp) / 'entropy.sock'}"
            server = EntropyServer(ServerConfig(address=address, device_id="urandom-demo"))
            server.start()
            values |= {"QR_ENTROPY_SOURCE_TYPE": "quantum_grpc", "QR_GRPC_SERVER_ADDRESS": address}
        settings = settings_from_mapping(values)
        sampler = TokenSampler(
            build_entropy_source(settings), TokenRecorder.from_settings(settings)
        )
        try:
            batch = SamplingBatch.build([SamplingConfig.from_settings(settings)], ["demo-0"])
            words = [first_word]
            records: list[TokenRecord] = []
            for _ in range(num_tokens):
                logits = table[model.index(words[-1])].clone().unsqueeze(0)
                result = sampler.sample(logits, batch)
                words.append(model.vocabulary[int(result.token_ids[0])])
                records.extend(result.records)
        finally:
            sampler.close()
            calls = server.requests_served if server is not None else 0
            if server is not None:
                server.stop(0)
    text = " ".join(words).replace(" .", ".").replace(" ,", ",").replace(" :", ":")
    return DemoReport(
        text=text,
        words=tuple(words[1:]),
        records=tuple(records),
        source=settings.entropy_source_type,
        server_address=address,
        server_calls=calls,
    )
