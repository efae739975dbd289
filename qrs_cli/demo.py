"""The embedded default: sample text from a tiny built-in language model with gRPC entropy.

It exercises the real pipeline without a GPU, a download or vLLM: the reference entropy server
(in-process, on a unix socket in a temporary directory), the ``quantum_grpc`` client, and the
sampler core choosing every token from those bytes — and returns the provenance of each token.

Two engines run the same math. With torch installed, the sampler core itself
(:class:`qr_sampler.sampler.TokenSampler`, as vLLM runs it); without torch — ``pip install
qr-sampler`` brings none — :class:`NumpySampler`, a line-by-line numpy transcription of the same
steps (top-k, temperature, softmax, top-p, one fetch, z → u, first candidate with cdf ≥ u), so
``qrs demo`` works on any install. A test runs both on the same bytes and compares every record.

The "model" is a bigram table counted from a short embedded text: small, deterministic and
readable, so a newcomer can see that the tokens follow the distribution and where each came from.
"""

from __future__ import annotations

import math
import re
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from qr_sampler.types import TokenRecord

if TYPE_CHECKING:
    from qr_sampler.entropy.base import EntropySource
    from qr_sampler.settings import Settings
    from qr_sampler.types import SamplingConfig

Engine = Literal["auto", "torch", "numpy"]

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
    """What the demo produced: the text, one record per sampled word, and the entropy server.

    ``engine`` says which implementation chose the words: ``torch`` (the sampler core) or
    ``numpy`` (the same math without torch).
    """

    text: str
    words: tuple[str, ...]
    records: tuple[TokenRecord, ...]
    source: str
    server_address: str
    server_calls: int
    engine: str = "torch"


class _Chooser(Protocol):
    """Chooses one word from one row of next-word logits and says how (a record)."""

    def choose(self, logits: Sequence[float]) -> TokenRecord: ...

    def close(self) -> None: ...


class NumpySampler:
    """The sampler core's math for one row at a time, in numpy: what the demo runs without torch.

    Steps, as :mod:`qr_sampler.selection` and :mod:`qr_sampler.amplification` define them:
    candidates = the top-k logits, most probable first (ties: lower token id first); x =
    logit / T (T = 0: greedy, the argmax, no entropy); softmax in float64; top-p keeps the
    smallest prefix whose mass reaches p (the first always); one fetch of ``sample_count``
    bytes; z = (mean − μ) / (σ/√N), u = Φ(z) clamped to [ε, 1 − ε]; the first candidate whose
    cumulative probability is ≥ u. min-p and EDT are not used by the demo and not implemented.
    """

    def __init__(self, source: EntropySource, config: SamplingConfig, request_id: str,
                 diagnostics_path: str = "") -> None:
        self.source = source
        self.config = config
        self.request_id = request_id
        # Without torch there is no plugin recorder (it builds records from tensors): the
        # records go to the file as plain JSON lines, the same fields, without a hash chain.
        self._file = open(diagnostics_path, "a", encoding="utf-8") if diagnostics_path else None  # noqa: SIM115 - closed in close()

    def choose(self, logits: Sequence[float]) -> TokenRecord:
        import numpy as np

        c = self.config
        row = np.asarray(logits, dtype=np.float64)
        k = c.top_k if 0 < c.top_k < row.size else row.size
        order = np.argsort(-row, kind="stable")[:k]
        greedy = c.is_greedy
        x = row[order] / (1.0 if greedy else c.fixed_temperature)
        probs = np.exp(x - x.max())
        probs /= probs.sum()
        if greedy:
            probs = np.zeros_like(probs)
            probs[0] = 1.0
        elif c.top_p < 1:
            before = np.cumsum(probs) - probs
            probs = probs * (before < c.top_p)  # the first candidate is always kept
            probs /= probs.sum()
        kept = max(int(np.count_nonzero(probs)), 1)
        u, z, mean, count, batch = 0.5, 0.0, 0.0, 0, None
        if not greedy:
            batch = self.source.fetch_batch((c.sample_count,))
            count = c.sample_count
            mean = sum(batch.data) / count
            z = (mean - c.population_mean) / (c.population_std / math.sqrt(count))
            u = 0.5 * math.erfc(-z / math.sqrt(2.0))
            u = min(max(u, c.uniform_clamp_epsilon), 1.0 - c.uniform_clamp_epsilon)
        position = int(np.searchsorted(np.cumsum(probs), u, side="left"))
        position = min(position, kept - 1)
        nonzero = probs[probs > 0]
        record = TokenRecord(
            request_id=self.request_id,
            token_id=int(order[position]),
            rank=position,
            probability=float(probs[position]),
            num_candidates=kept,
            temperature=0.0 if greedy else c.fixed_temperature,
            entropy_nats=float(-(nonzero * np.log(nonzero)).sum()),
            u=u,
            z=z,
            sample_mean=mean,
            sample_count=count,
            source=batch.source if batch is not None else "none",
            fallback=bool(batch is not None and batch.fallback),
            fallback_reason=batch.fallback_reason if batch is not None else "",
            device_id=batch.device_id if batch is not None else "",
            server_timestamp_ns=batch.generation_timestamp_ns if batch is not None else 0,
            fetch_latency_us=batch.latency_ns / 1000.0 if batch is not None else 0.0,
            timestamp_ns=time.time_ns(),
            config_hash=c.config_hash,
            greedy=greedy,
        )
        if self._file is not None:
            import json

            self._file.write(json.dumps({"kind": "token", **record.to_dict()},
                                        separators=(",", ":")) + "\n")
            self._file.flush()
        return record

    def close(self) -> None:
        self.source.close()
        if self._file is not None:
            self._file.close()


class _TorchChooser:
    """The sampler core itself (the code vLLM runs, with the plugin's own recorder), one row
    per step; each step's record is read back from the recorder's window."""

    def __init__(self, settings: Settings, config: SamplingConfig, request_id: str) -> None:
        import torch

        from qr_sampler.diagnostics import TokenRecorder
        from qr_sampler.entropy.registry import build_entropy_source
        from qr_sampler.sampler import SamplingBatch, TokenSampler

        self._torch = torch
        self._recorder = TokenRecorder(log_level=settings.log_level,
                                       diagnostics_path=settings.diagnostics_path, capacity=8)
        self._sampler = TokenSampler(build_entropy_source(settings), self._recorder,
                                     concurrent_fetch=False)
        self._batch = SamplingBatch.build([config], [request_id])

    def choose(self, logits: Sequence[float]) -> TokenRecord:
        row = self._torch.tensor([list(logits)], dtype=self._torch.float32)
        self._sampler.sample(row, self._batch)
        return self._recorder.recent()[-1]  # waits until the step's record is built

    def close(self) -> None:
        self._sampler.close()


def torch_available() -> bool:
    """Whether torch imports here (not merely whether it is installed: a broken build counts
    as missing, and the demo then runs its numpy engine)."""
    try:
        import torch  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def _chooser(engine: Engine, settings: Settings, config: SamplingConfig,
             request_id: str) -> tuple[_Chooser, str]:
    from qrs_cli.errors import CLIError

    if engine == "torch" or (engine == "auto" and torch_available()):
        try:
            return _TorchChooser(settings, config, request_id), "torch"
        except ImportError:
            if engine == "torch":
                raise CLIError("--engine torch needs torch, which does not import here",
                               "pip install 'qr-sampler[torch]', or use --engine numpy") from None
    from qr_sampler.entropy.registry import build_entropy_source

    numpy_sampler = NumpySampler(build_entropy_source(settings), config, request_id,
                                 settings.diagnostics_path)
    return numpy_sampler, "numpy"


def run_demo(
    num_tokens: int = 24,
    source: Literal["grpc", "system"] = "grpc",
    first_word: str = "the",
    temperature: float = 1.0,
    top_k: int = 20,
    top_p: float = 0.95,
    diagnostics_path: str = "",
    engine: Engine = "auto",
) -> DemoReport:
    """Generate ``num_tokens`` words after ``first_word``, every one chosen by the sampler."""
    from qr_sampler.settings import settings_from_mapping
    from qr_sampler.types import SamplingConfig
    from qrs_cli.errors import CLIError

    model = BigramModel.from_text(DEMO_TEXT)
    if first_word not in model.vocabulary:
        raise CLIError(
            f"{first_word!r} is not in the demo vocabulary",
            hint="try one of: " + ", ".join(w for w in model.vocabulary[:12] if w.isalpha()),
        )
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
        calls = 0
        try:
            settings = settings_from_mapping(values)
            config = SamplingConfig.from_settings(settings)
            chooser, used = _chooser(engine, settings, config, "demo-0")
            try:
                words = [first_word]
                records: list[TokenRecord] = []
                for _ in range(num_tokens):
                    record = chooser.choose(model.log_counts[model.index(words[-1])])
                    words.append(model.vocabulary[record.token_id])
                    records.append(record)
            finally:
                chooser.close()
        finally:
            if server is not None:
                calls = server.requests_served
                server.stop(0)
    text = " ".join(words).replace(" .", ".").replace(" ,", ",").replace(" :", ":")
    return DemoReport(
        text=text,
        words=tuple(words[1:]),
        records=tuple(records),
        source=settings.entropy_source_type,
        server_address=address,
        server_calls=calls,
        engine=used,
    )
