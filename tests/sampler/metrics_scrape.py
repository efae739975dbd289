"""Scrape a Prometheus endpoint on 127.0.0.1 and index its samples, for the metrics tests."""

from __future__ import annotations

import socket
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

#: (sample name, sorted label pairs) → value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int, path: str = "/metrics") -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
        assert reply.status == 200
        text = reply.read().decode("utf-8")
    return parse(text)


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(samples: Samples, name: str, **labels: str) -> float:
    """The value of one sample; KeyError (with what exists) when it is absent."""
    key = (name, tuple(sorted(labels.items())))
    if key not in samples:
        known = sorted(k for k in samples if k[0] == name)
        raise KeyError(f"{key} not scraped; {name} has {known}")
    return samples[key]


def series_named(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """label pairs → value of every sample called ``name``."""
    return {labels: value for (n, labels), value in samples.items() if n == name}
